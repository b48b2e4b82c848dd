// Max over a node and its neighbours in a boolean adjacency (SViG's threshold graph), and its
// gradient, for MindSpore's CPU backend as ahead-of-time custom operators. The static-shape form
// (a masked max over all N x N pairs) costs MindSpore's CPU kernels ~0.6 s per ViG-Ti block at
// batch 8 and holds its (B, N, chunk, C) temporaries; this visits only the edges, row by row.
#include <cstdint>
#include <cstring>
#include <vector>

namespace {
// Channels per parallel task of the backward: each task owns its channels of grad, so no races.
constexpr int64_t kChannelBlock = 32;
}  // namespace

// inputs: x (float32, (B, N, C)), mask (uint8, (B, N, N)); output: out (float32, (B, N, C))
// out[b, i, c] = max(x[b, i, c], max over j with mask[b, i, j] of x[b, j, c])
extern "C" int MaskedMaxForward(int, void **params, int *, int64_t **shapes, const char **, void *, void *) {
  const float *x = static_cast<const float *>(params[0]);
  const uint8_t *mask = static_cast<const uint8_t *>(params[1]);
  float *out = static_cast<float *>(params[2]);
  const int64_t batch = shapes[0][0], nodes = shapes[0][1], channels = shapes[0][2];
#pragma omp parallel for schedule(static) collapse(2)
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t i = 0; i < nodes; ++i) {
      const float *features = x + b * nodes * channels;
      const uint8_t *row = mask + (b * nodes + i) * nodes;
      float *o = out + (b * nodes + i) * channels;
      std::memcpy(o, features + i * channels, channels * sizeof(float));
      for (int64_t j = 0; j < nodes; ++j) {
        if (!row[j]) continue;
        const float *neighbour = features + j * channels;
        for (int64_t c = 0; c < channels; ++c) o[c] = neighbour[c] > o[c] ? neighbour[c] : o[c];
      }
    }
  }
  return 0;
}

// inputs: x, mask, dout (float32, (B, N, C)); output: dx (float32, (B, N, C))
// Each dout[b, i, c] goes to the node that attained the maximum: the centre unless a neighbour is
// strictly larger, then the earliest such neighbour (as the forward's comparisons decide).
extern "C" int MaskedMaxBackward(int, void **params, int *, int64_t **shapes, const char **, void *, void *) {
  const float *x = static_cast<const float *>(params[0]);
  const uint8_t *mask = static_cast<const uint8_t *>(params[1]);
  const float *dout = static_cast<const float *>(params[2]);
  float *dx = static_cast<float *>(params[3]);
  const int64_t batch = shapes[0][0], nodes = shapes[0][1], channels = shapes[0][2];
  const int64_t blocks = (channels + kChannelBlock - 1) / kChannelBlock;
  std::memset(dx, 0, batch * nodes * channels * sizeof(float));
#pragma omp parallel for schedule(static) collapse(2)
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t block = 0; block < blocks; ++block) {
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
  }
  return 0;
}
