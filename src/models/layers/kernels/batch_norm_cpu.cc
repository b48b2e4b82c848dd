// BatchNorm with its running statistics (inference), y = x * a[c] + b[c] with a = gamma / sqrt(var + eps) and
// b = beta - mean * a, as PyTorch's CPU kernel computes it, for MindSpore's CPU backend as an ahead-of-time
// custom operator: one pass over memory where MindSpore's CPU BatchNorm kernel took 1.4-4.5x PyTorch's time
// (docs/performance.md, round four's operator profile).
#include <cmath>
#include <cstdint>
#include <vector>
#if defined(VIG_AVX2)
#include <immintrin.h>
#endif

#include "kernel.h"

// inputs: x (float32, (N, C, ...)), gamma, beta, mean, var (float32, (C,)), eps (float32, (1,)); output: y
extern "C" int BatchNormInference(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                                  void *, void *) {
  if (!vig::HasDtypes(nparam, dtypes, {"float32", "float32", "float32", "float32", "float32", "float32", "float32"}))
    return 1;
  if (ndims[0] < 2) return 2;
  const float *x = static_cast<const float *>(params[0]);
  const float *gamma = static_cast<const float *>(params[1]);
  const float *beta = static_cast<const float *>(params[2]);
  const float *mean = static_cast<const float *>(params[3]);
  const float *var = static_cast<const float *>(params[4]);
  const float eps = *static_cast<const float *>(params[5]);
  float *y = static_cast<float *>(params[6]);
  const int64_t batch = shapes[0][0], channels = shapes[0][1];
  if (shapes[1][0] != channels || shapes[2][0] != channels || shapes[3][0] != channels || shapes[4][0] != channels)
    return 3;
  int64_t plane = 1;
  for (int d = 2; d < ndims[0]; ++d) plane *= shapes[0][d];
  std::vector<float> scale(channels), shift(channels);
  for (int64_t c = 0; c < channels; ++c) {
    const float invstd = 1.0f / std::sqrt(var[c] + eps);
    scale[c] = gamma[c] * invstd;
    shift[c] = beta[c] - mean[c] * scale[c];
  }
  vig::ParallelFor(
      batch * channels,
      [&](int64_t first, int64_t last) {
        for (int64_t p = first; p < last; ++p) {
          const float a = scale[p % channels], b = shift[p % channels];
          const float *in = x + p * plane;
          float *out = y + p * plane;
          int64_t i = 0;
#if defined(VIG_AVX2)
          const __m256 va = _mm256_set1_ps(a), vb = _mm256_set1_ps(b);
          for (; i + 8 <= plane; i += 8)
            _mm256_storeu_ps(out + i, _mm256_fmadd_ps(_mm256_loadu_ps(in + i), va, vb));
#endif
          for (; i < plane; ++i) out[i] = std::fma(in[i], a, b);  // one rounding, as the vector lanes
        }
      },
      std::max<int64_t>(1, 4096 / std::max<int64_t>(plane, 1)));
  return 0;
}
