// The max-relative conv's aggregate, max over k neighbour rows, and its gradient, for MindSpore's CPU
// backend as ahead-of-time custom operators. In MindSpore's operators it is k gathers of (P, C) and k - 1
// maxima forward, and a (P, k, C) gather, an argmax and a segment sum backward, each a pass over memory;
// here each neighbour row is read once, where it is needed.
#include <atomic>
#include <cstdint>
#include <cstring>
#if defined(VIG_AVX2)
#include <immintrin.h>
#endif

#include "kernel.h"

namespace {
// Whether every index of idx[0, count) is a row of a table of `rows` rows (a kernel never reads outside it).
bool InRange(const int32_t *idx, int64_t count, int64_t rows) {
  std::atomic<bool> ok{true};
  vig::ParallelFor(count, [&](int64_t first, int64_t last) {
    for (int64_t i = first; i < last; ++i)
      if (idx[i] < 0 || idx[i] >= rows) ok.store(false, std::memory_order_relaxed);
  });
  return ok.load();
}
}  // namespace

// inputs: flat (float32, (R, C)), idx (int32, (..., k)); output: out (float32, (..., C))
// out[p, c] = max over t of flat[idx[p, t], c], as MindSpore's running maximum computes it:
// out = maximum(out, next) with maximum(a, b) = a > b ? a : b (so the same value, NaN included, bit for bit).
extern "C" int GatherMaxForward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                                void *, void *) {
  if (!vig::HasDtypes(nparam, dtypes, {"float32", "int32", "float32"})) return 1;
  const float *flat = static_cast<const float *>(params[0]);
  const int32_t *idx = static_cast<const int32_t *>(params[1]);
  float *out = static_cast<float *>(params[2]);
  const int64_t rows = shapes[0][0], channels = shapes[0][1], k = shapes[1][ndims[1] - 1];
  int64_t points = 1;
  for (int d = 0; d + 1 < ndims[1]; ++d) points *= shapes[1][d];
  if (k < 1 || !InRange(idx, points * k, rows)) return 2;
  vig::ParallelFor(points, [&](int64_t first, int64_t last) {
    for (int64_t p = first; p < last; ++p) {
      const int32_t *slots = idx + p * k;
      float *o = out + p * channels;
      std::memcpy(o, flat + int64_t{slots[0]} * channels, channels * sizeof(float));
      for (int64_t t = 1; t < k; ++t) {
        const float *next = flat + int64_t{slots[t]} * channels;
        for (int64_t c = 0; c < channels; ++c) o[c] = o[c] > next[c] ? o[c] : next[c];
      }
    }
  });
  return 0;
}

// inputs: flat (float32, (R, C)), idx (int32, (..., k)), dout (float32, (..., C)); output: dflat (float32, (R, C))
// Each dout[p, c] is added to the row of the first slot that attained the maximum (as torch.max and argmax
// choose). The threads split the channels, so each owns its part of dflat and sums in the order of p.
extern "C" int GatherMaxBackward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                                 void *, void *) {
  if (!vig::HasDtypes(nparam, dtypes, {"float32", "int32", "float32", "float32"})) return 1;
  const float *flat = static_cast<const float *>(params[0]);
  const int32_t *idx = static_cast<const int32_t *>(params[1]);
  const float *dout = static_cast<const float *>(params[2]);
  float *dflat = static_cast<float *>(params[3]);
  const int64_t rows = shapes[0][0], channels = shapes[0][1], k = shapes[1][ndims[1] - 1];
  int64_t points = 1;
  for (int d = 0; d + 1 < ndims[1]; ++d) points *= shapes[1][d];
  if (k < 1 || !InRange(idx, points * k, rows)) return 2;
  std::memset(dflat, 0, rows * channels * sizeof(float));
  vig::ParallelFor(channels, [&](int64_t c0, int64_t c1) {
    for (int64_t p = 0; p < points; ++p) {
      const int32_t *slots = idx + p * k;
      const float *g = dout + p * channels;
      int64_t c = c0;
#if defined(VIG_AVX2)
      for (; c + 8 <= c1; c += 8) {  // eight channels' maxima and winners in registers, over the k slots
        __m256 best = _mm256_loadu_ps(flat + int64_t{slots[0]} * channels + c);
        __m256i winner = _mm256_set1_epi32(slots[0]);
        for (int64_t t = 1; t < k; ++t) {
          const __m256 value = _mm256_loadu_ps(flat + int64_t{slots[t]} * channels + c);
          const __m256 larger = _mm256_cmp_ps(value, best, _CMP_GT_OQ);
          best = _mm256_blendv_ps(best, value, larger);
          winner = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(winner),
                                                        _mm256_castsi256_ps(_mm256_set1_epi32(slots[t])), larger));
        }
        alignas(32) int32_t rows[8];
        _mm256_store_si256(reinterpret_cast<__m256i *>(rows), winner);
        for (int lane = 0; lane < 8; ++lane) dflat[int64_t{rows[lane]} * channels + c + lane] += g[c + lane];
      }
#endif
      for (; c < c1; ++c) {
        int32_t winner = slots[0];
        float best = flat[int64_t{winner} * channels + c];
        for (int64_t t = 1; t < k; ++t) {
          const float value = flat[int64_t{slots[t]} * channels + c];
          if (value > best) {
            best = value;
            winner = slots[t];
          }
        }
        dflat[int64_t{winner} * channels + c] += g[c];
      }
    }
  }, 8);
  return 0;
}
