// Max over a node and its neighbours in a boolean adjacency (SViG's threshold graph), and its
// gradient, for MindSpore's CPU backend as ahead-of-time custom operators. The static-shape form
// (a masked max over all N x N pairs) costs MindSpore's CPU kernels ~0.6 s per ViG-Ti block at
// batch 8 and holds its (B, N, chunk, C) temporaries; this visits only the edges, row by row.
#include <cstdint>
#include <cstring>
#include <vector>

#include "kernel.h"

namespace {
// Channels per parallel task of the backward: each task owns its channels of grad, so no races.
constexpr int64_t kChannelBlock = 32;
}  // namespace

// inputs: x (float32, (B, N, C)), mask (uint8, (B, N, N)); output: out (float32, (B, N, C))
// out[b, i, c] = max(x[b, i, c], max over j with mask[b, i, j] of x[b, j, c])
extern "C" int MaskedMaxForward(int nparam, void **params, int *, int64_t **shapes, const char **dtypes, void *,
                                void *) {
  if (!vig::HasDtypes(nparam, dtypes, {"float32", "uint8", "float32"})) return 1;
  const float *x = static_cast<const float *>(params[0]);
  const uint8_t *mask = static_cast<const uint8_t *>(params[1]);
  float *out = static_cast<float *>(params[2]);
  const int64_t batch = shapes[0][0], nodes = shapes[0][1], channels = shapes[0][2];
  vig::ParallelFor(batch * nodes, [&](int64_t first, int64_t last) {
    for (int64_t row_index = first; row_index < last; ++row_index) {  // (b, i)
      const float *features = x + row_index / nodes * nodes * channels;
      const uint8_t *row = mask + row_index * nodes;
      float *o = out + row_index * channels;
      std::memcpy(o, x + row_index * channels, channels * sizeof(float));
      for (int64_t j = 0; j < nodes; ++j) {
        if (!row[j]) continue;
        const float *neighbour = features + j * channels;
        for (int64_t c = 0; c < channels; ++c) o[c] = neighbour[c] > o[c] ? neighbour[c] : o[c];
      }
    }
  });
  return 0;
}

// inputs: x, mask, dout (float32, (B, N, C)); output: dx (float32, (B, N, C))
// Each dout[b, i, c] goes to the node that attained the maximum: the centre unless a neighbour is
// strictly larger, then the earliest such neighbour (as the forward's comparisons decide).
extern "C" int MaskedMaxBackward(int nparam, void **params, int *, int64_t **shapes, const char **dtypes, void *,
                                 void *) {
  if (!vig::HasDtypes(nparam, dtypes, {"float32", "uint8", "float32", "float32"})) return 1;
  const float *x = static_cast<const float *>(params[0]);
  const uint8_t *mask = static_cast<const uint8_t *>(params[1]);
  const float *dout = static_cast<const float *>(params[2]);
  float *dx = static_cast<float *>(params[3]);
  const int64_t batch = shapes[0][0], nodes = shapes[0][1], channels = shapes[0][2];
  const int64_t blocks = (channels + kChannelBlock - 1) / kChannelBlock;
  std::memset(dx, 0, batch * nodes * channels * sizeof(float));
  vig::ParallelFor(batch * blocks, [&](int64_t first, int64_t last) {
    for (int64_t task = first; task < last; ++task) {  // (b, block of channels)
      const int64_t b = task / blocks, block = task % blocks;
      const int64_t c0 = block * kChannelBlock;
      const int64_t c1 = c0 + kChannelBlock < channels ? c0 + kChannelBlock : channels;
      const float *features = x + b * nodes * channels;
      float best[kChannelBlock];
      int64_t winner[kChannelBlock];
      for (int64_t i = 0; i < nodes; ++i) {
        const uint8_t *row = mask + (b * nodes + i) * nodes;
        for (int64_t c = c0; c < c1; ++c) {
          best[c - c0] = features[i * channels + c];
          winner[c - c0] = i;
        }
        for (int64_t j = 0; j < nodes; ++j) {
          if (!row[j]) continue;
          const float *neighbour = features + j * channels;
          for (int64_t c = c0; c < c1; ++c) {
            if (neighbour[c] > best[c - c0]) {
              best[c - c0] = neighbour[c];
              winner[c - c0] = j;
            }
          }
        }
        const float *g = dout + (b * nodes + i) * channels;
        float *target = dx + b * nodes * channels;
        for (int64_t c = c0; c < c1; ++c) target[winner[c - c0] * channels + c] += g[c];
      }
    }
  });
  return 0;
}
