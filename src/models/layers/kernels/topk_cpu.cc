// Dilated k-nearest neighbours for MindSpore's CPU backend as ahead-of-time custom operators. The
// distances are computed a tile of queries at a time against all keys and ranked at once in a small
// sorted buffer per query, so the (B, N, M) distance matrix is never written: memory stays linear in
// the number of nodes, and no pass over a large matrix remains (MindSpore's CPU TopK alone costs
// ~1.7 us per row of 196).
//
// The score is the negated distance of the dense formulation, rounded step by step in its order:
//   score[i, j] = ((2 * dot(x_i, y_j) - xsq[i]) - ysq[j]) - term[i, j]
// with the dot product accumulated over the channels in order by fused multiply-adds from zero, as
// MindSpore's CPU matmul does; so the scores, and the neighbours, equal the dense formulation's.
// The relative-position term is given whole, or as its table and the taps of the bicubic resize
// (BicubicResize in resize.py): its rows are then resized here, a tile at a time, with BicubicResize's
// arithmetic on MindSpore's CPU (products rounded to float32, each 4-tap sum accumulated in float64 in
// tap order, as MindSpore's ReduceSum does, then rounded; rows first, then columns).
// Ranking: descending score, the earlier index first among equal scores; the indices at the given
// positions (0, d, 2d, ... for dilation d) are returned.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <vector>
#if defined(VIG_AVX2)
#include <immintrin.h>
#endif

#include "kernel.h"

namespace {
constexpr int kTile = 4;  // queries per tile: 4 x 16 accumulators fit the 16 vector registers

inline float Fma(float a, float b, float acc) {
#if defined(__FMA__) || defined(__ARM_FEATURE_FMA)
  return std::fma(a, b, acc);
#else
  return a * b + acc;  // no fused multiply-add here: neither has the matmul it mirrors
#endif
}

#if defined(VIG_AVX2)
constexpr int64_t kLanes = 8;
#else
constexpr int64_t kLanes = 1;
#endif

// dots[r * w + j] = x_r . y_j for the R queries x (R, c) and the keys transposed and zero-padded to a
// multiple of the vector width, yt (c, w); the padding's dots are computed and not used.
template <int R>
void TileDots(const float *x, const float *yt, int64_t w, int64_t c, float *dots) {
  int64_t j = 0;
#if defined(VIG_AVX2)
  for (; j + 16 <= w; j += 16) {
    __m256 acc[R][2];
    for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    for (int64_t t = 0; t < c; ++t) {
      const __m256 y0 = _mm256_loadu_ps(yt + t * w + j), y1 = _mm256_loadu_ps(yt + t * w + j + 8);
      for (int r = 0; r < R; ++r) {
        const __m256 xr = _mm256_broadcast_ss(x + r * c + t);
        acc[r][0] = _mm256_fmadd_ps(xr, y0, acc[r][0]);
        acc[r][1] = _mm256_fmadd_ps(xr, y1, acc[r][1]);
      }
    }
    for (int r = 0; r < R; ++r) {
      _mm256_storeu_ps(dots + r * w + j, acc[r][0]);
      _mm256_storeu_ps(dots + r * w + j + 8, acc[r][1]);
    }
  }
  for (; j < w; j += 8) {
    __m256 acc[R];
    for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
    for (int64_t t = 0; t < c; ++t) {
      const __m256 y0 = _mm256_loadu_ps(yt + t * w + j);
      for (int r = 0; r < R; ++r) acc[r] = _mm256_fmadd_ps(_mm256_broadcast_ss(x + r * c + t), y0, acc[r]);
    }
    for (int r = 0; r < R; ++r) _mm256_storeu_ps(dots + r * w + j, acc[r]);
  }
#else
  for (; j < w; ++j) {
    for (int r = 0; r < R; ++r) {
      float acc = 0.0f;
      for (int64_t t = 0; t < c; ++t) acc = Fma(x[r * c + t], yt[t * w + j], acc);
      dots[r * w + j] = acc;
    }
  }
#endif
}

#if defined(VIG_AVX2)
// Eight float32 values summed in float64, rounded to float32 at the end.
struct Sum8 {
  __m256d low = _mm256_setzero_pd(), high = _mm256_setzero_pd();
  void Add(__m256 v) {
    low = _mm256_add_pd(low, _mm256_cvtps_pd(_mm256_castps256_ps128(v)));
    high = _mm256_add_pd(high, _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
  }
  __m256 Get() const { return _mm256_set_m128(_mm256_cvtpd_ps(high), _mm256_cvtpd_ps(low)); }
};
#endif

// The taps of a bicubic resize of a (rows, cols) table: 4 source rows and weights per output row, 4
// source columns and weights per output column (kept tap-major here: column_index[a * m + j]).
struct Resize {
  const float *table;
  const int32_t *row_index;
  const float *row_weight;
  std::vector<int32_t> column_index;
  std::vector<float> column_weight;
  int64_t rows, cols;

  Resize(const float *table, const int32_t *row_index, const float *row_weight, const int32_t *col_index,
         const float *col_weight, int64_t rows, int64_t cols, int64_t m)
      : table(table), row_index(row_index), row_weight(row_weight), column_index(4 * m), column_weight(4 * m),
        rows(rows), cols(cols) {
    for (int64_t j = 0; j < m; ++j)
      for (int a = 0; a < 4; ++a) {
        column_index[a * m + j] = col_index[4 * j + a];
        column_weight[a * m + j] = col_weight[4 * j + a];
      }
  }

  // out[:m] = output row i; resized[:cols] is scratch (source row i resized along the rows).
  void Row(int64_t i, int64_t m, float *resized, float *out) const {
    const int32_t *ri = row_index + 4 * i;
    const float *rw = row_weight + 4 * i;
    int64_t c = 0;
#if defined(VIG_AVX2)
    for (; c + 8 <= cols; c += 8) {
      Sum8 sum;
      for (int a = 0; a < 4; ++a) sum.Add(_mm256_mul_ps(_mm256_loadu_ps(table + ri[a] * cols + c), _mm256_set1_ps(rw[a])));
      _mm256_storeu_ps(resized + c, sum.Get());
    }
#endif
    for (; c < cols; ++c) {
      double sum = 0.0;
      for (int a = 0; a < 4; ++a) sum += static_cast<double>(table[ri[a] * cols + c] * rw[a]);
      resized[c] = static_cast<float>(sum);
    }
    const int32_t *ci = column_index.data();
    const float *cw = column_weight.data();
    int64_t j = 0;
#if defined(VIG_AVX2)
    for (; j + 8 <= m; j += 8) {
      Sum8 sum;
      for (int a = 0; a < 4; ++a) {
        const __m256i index = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(ci + a * m + j));
        sum.Add(_mm256_mul_ps(_mm256_i32gather_ps(resized, index, 4), _mm256_loadu_ps(cw + a * m + j)));
      }
      _mm256_storeu_ps(out + j, sum.Get());
    }
#endif
    for (; j < m; ++j) {
      double sum = 0.0;
      for (int a = 0; a < 4; ++a) sum += static_cast<double>(resized[ci[a * m + j]] * cw[a * m + j]);
      out[j] = static_cast<float>(sum);
    }
  }

  bool Valid(int64_t n, int64_t m) const {
    for (int64_t t = 0; t < 4 * n; ++t)
      if (row_index[t] < 0 || row_index[t] >= rows) return false;
    for (int64_t t = 0; t < 4 * m; ++t)
      if (column_index[t] < 0 || column_index[t] >= cols) return false;
    return true;
  }
};

struct Knn {
  const float *x, *y, *xsq, *ysq;
  const float *term;     // the relative-position term (N, M) shared by the batch, or null
  const Resize *resize;  // or its table and taps, or null
  const int32_t *positions;
  int32_t *out;
  int64_t batch, n, m, c, k, need;  // need: candidates ranked per query (the largest position + 1)

  // The kept neighbours of query i of sample b, from its dot products (turned into scores in place).
  void Rank(int64_t b, int64_t i, float *row, const float *term_i, float *best, int32_t *index, [[maybe_unused]] float *maxima) const {
    Scores(ysq + b * m, term_i, xsq[b * n + i], row);
    int64_t count = 0;  // best[:count]: the candidates so far in ranking order, the earlier index first on ties
    auto offer = [&](int64_t j) {
      const float v = row[j];
      if (count == need && !(v > best[need - 1])) return;
      int64_t p = count < need ? count++ : need - 1;
      for (; p > 0 && v > best[p - 1]; --p) {
        best[p] = best[p - 1];
        index[p] = index[p - 1];
      }
      best[p] = v;
      index[p] = static_cast<int32_t>(j);
    };
    int64_t j = 0;
#if defined(VIG_AVX2)
    // A score that at least `need` scores reach: a score below it cannot be kept, so only the scores
    // at or above it are offered (the same candidates in the same order as offering all; most
    // offers would otherwise insert and mispredict). Rows with a NaN offer all.
    const float floor = Floor(row, maxima);
    if (floor == floor) {
      const __m256 at_least = _mm256_set1_ps(floor);
      for (; j + 8 <= m; j += 8) {
        for (int mask = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(row + j), at_least, _CMP_GE_OQ)); mask;
             mask &= mask - 1)
          offer(j + __builtin_ctz(static_cast<unsigned>(mask)));
      }
      for (; j < m; ++j)
        if (row[j] >= floor) offer(j);
    }
#endif
    for (; j < m; ++j) offer(j);
    int32_t *kept = out + (b * n + i) * k;
    for (int64_t t = 0; t < k; ++t) kept[t] = index[positions[t]];
  }

#if defined(VIG_AVX2)
  // The need-th largest of the maxima of `groups` interleaved groups of the row (j modulo groups),
  // groups >= need: each of `need` groups has a score at or above it. NaN if the row has a NaN, or
  // is too short to fill the groups.
  float Floor(const float *row, float *maxima) const {
    const int64_t vectors = (need + 7) / 8, groups = vectors * 8;
    if (m < groups) return NAN;
    __m256 nan = _mm256_setzero_ps();
    for (int64_t v = 0; v < vectors; ++v) {
      __m256 top = _mm256_loadu_ps(row + v * 8);
      nan = _mm256_or_ps(nan, _mm256_cmp_ps(top, top, _CMP_UNORD_Q));
      int64_t j = v * 8 + groups;
      for (; j + 8 <= m; j += groups) {
        const __m256 s = _mm256_loadu_ps(row + j);
        nan = _mm256_or_ps(nan, _mm256_cmp_ps(s, s, _CMP_UNORD_Q));
        top = _mm256_max_ps(top, s);
      }
      _mm256_storeu_ps(maxima + v * 8, top);
    }
    for (int64_t j = m / 8 * 8; j < m; ++j)
      if (row[j] != row[j]) return NAN;  // the tail outside full vectors
    if (_mm256_movemask_ps(nan)) return NAN;
    std::nth_element(maxima, maxima + need - 1, maxima + groups, [](float a, float b) { return a > b; });
    return maxima[need - 1];
  }
#endif

  // row[j] = ((2 * row[j] - xsq_i) - ysq[j]) - term[j]: the negated distance from the dot product.
  void Scores(const float *ysq_b, const float *term_i, float xsq_i, float *row) const {
    int64_t j = 0;
#if defined(VIG_AVX2)
    const __m256 two = _mm256_set1_ps(2.0f), xs = _mm256_set1_ps(xsq_i);
    for (; j + 8 <= m; j += 8) {
      __m256 v = _mm256_sub_ps(_mm256_mul_ps(two, _mm256_loadu_ps(row + j)), xs);
      v = _mm256_sub_ps(v, _mm256_loadu_ps(ysq_b + j));
      if (term_i) v = _mm256_sub_ps(v, _mm256_loadu_ps(term_i + j));
      _mm256_storeu_ps(row + j, v);
    }
#endif
    for (; j < m; ++j) {
      float v = 2.0f * row[j] - xsq_i;
      v = v - ysq_b[j];
      row[j] = term_i ? v - term_i[j] : v;
    }
  }

  void Run() const {
    const int64_t w = (m + kLanes - 1) / kLanes * kLanes;
    std::vector<float> yt(batch * c * w, 0.0f);  // keys transposed per sample, (C, w): a tile reads rows
    vig::ParallelFor(batch * m, [&](int64_t first, int64_t last) {
      for (int64_t key = first; key < last; ++key) {  // (b, j)
        const int64_t b = key / m, j = key % m;
        for (int64_t t = 0; t < c; ++t) yt[(b * c + t) * w + j] = y[key * c + t];
      }
    });
    const int64_t tiles = (n + kTile - 1) / kTile;
    vig::ParallelFor(tiles, [&](int64_t first_tile, int64_t last_tile) {
      std::vector<float> dots(kTile * w), best(need), maxima(need + 7);
      std::vector<float> terms(resize ? kTile * m : 0), resized(resize ? resize->cols : 0);
      std::vector<int32_t> index(need);
      for (int64_t tile = first_tile; tile < last_tile; ++tile) {  // a tile of queries, for every sample
        const int64_t first = tile * kTile, rows = n - first < kTile ? n - first : kTile;
        const float *tile_term = term ? term + first * m : nullptr;
        if (resize) {
          for (int64_t r = 0; r < rows; ++r) resize->Row(first + r, m, resized.data(), terms.data() + r * m);
          tile_term = terms.data();
        }
        for (int64_t b = 0; b < batch; ++b) {
          const float *xs = x + (b * n + first) * c, *keys = yt.data() + b * c * w;
          if (rows == kTile) {
            TileDots<kTile>(xs, keys, w, c, dots.data());
          } else {
            for (int64_t r = 0; r < rows; ++r) TileDots<1>(xs + r * c, keys, w, c, dots.data() + r * w);
          }
          for (int64_t r = 0; r < rows; ++r)
            Rank(b, first + r, dots.data() + r * w, tile_term ? tile_term + r * m : nullptr, best.data(),
                 index.data(), maxima.data());
        }
      }
    });
  }
};

// inputs: x (B, N, C), y (B, M, C), xsq (B, N, 1), ysq (B, M, 1), then
//   DilatedKnn:        nothing more
//   DilatedKnnTerm:    term (1, N, M)
//   DilatedKnnResized: table (1, rows, cols), row index (N * 4,) int32, row weight (N, 4, 1),
//                      column index (M * 4,) int32, column weight (M, 4)
// and positions (k,) int32; output: indices (B, N, k) int32. float32 otherwise.
int Launch(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, int extra) {
  const int p = 4 + extra;  // index of positions
  constexpr const char *F = "float32", *I = "int32";
  const bool typed = extra == 0   ? vig::HasDtypes(nparam, dtypes, {F, F, F, F, I, I})
                     : extra == 1 ? vig::HasDtypes(nparam, dtypes, {F, F, F, F, F, I, I})
                                  : vig::HasDtypes(nparam, dtypes, {F, F, F, F, F, I, F, I, F, I, I});
  if (!typed || ndims[0] != 3 || ndims[1] != 3) return 1;
  Knn knn{static_cast<const float *>(params[0]), static_cast<const float *>(params[1]),
          static_cast<const float *>(params[2]), static_cast<const float *>(params[3]),
          extra == 1 ? static_cast<const float *>(params[4]) : nullptr, nullptr,
          static_cast<const int32_t *>(params[p]), static_cast<int32_t *>(params[p + 1]),
          shapes[0][0], shapes[0][1], shapes[1][1], shapes[0][2], shapes[p][0], 0};
  if (shapes[1][0] != knn.batch || shapes[1][2] != knn.c) return 1;
  std::unique_ptr<Resize> resize;
  if (extra == 5) {
    resize = std::make_unique<Resize>(static_cast<const float *>(params[4]), static_cast<const int32_t *>(params[5]),
                                      static_cast<const float *>(params[6]), static_cast<const int32_t *>(params[7]),
                                      static_cast<const float *>(params[8]), shapes[4][ndims[4] - 2],
                                      shapes[4][ndims[4] - 1], knn.m);
    if (shapes[5][0] != 4 * knn.n || shapes[7][0] != 4 * knn.m || !resize->Valid(knn.n, knn.m)) return 1;
    knn.resize = resize.get();
  }
  for (int64_t t = 0; t < knn.k; ++t) knn.need = knn.positions[t] + 1 > knn.need ? knn.positions[t] + 1 : knn.need;
  if (knn.need > knn.m || knn.need < 1) return 1;
  knn.Run();
  return 0;
}
}  // namespace

extern "C" int DilatedKnn(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *,
                          void *) {
  return Launch(nparam, params, ndims, shapes, dtypes, 0);
}

extern "C" int DilatedKnnTerm(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                              void *, void *) {
  return Launch(nparam, params, ndims, shapes, dtypes, 1);
}

extern "C" int DilatedKnnResized(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                                 void *, void *) {
  return Launch(nparam, params, ndims, shapes, dtypes, 5);
}

// inputs: x (float32, (..., C)); outputs: xn (float32, (..., C)), xsq (float32, (..., 1)): the rows
// L2-normalised and the squared norms of the normalised rows, the kNN's inputs, as graph.py's
// l2_normalize and squared_norm compute them on MindSpore's CPU (products rounded to float32, summed
// over the channels in order in float64 as its ReduceSum does, then rounded; sqrt, the 1e-12 floor and
// the division in float32), in one pass instead of five operators.
extern "C" int NormalizedRows(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *,
                              void *) {
  if (!vig::HasDtypes(nparam, dtypes, {"float32", "float32", "float32"})) return 1;
  const float *x = static_cast<const float *>(params[0]);
  float *xn = static_cast<float *>(params[1]), *xsq = static_cast<float *>(params[2]);
  const int64_t c = shapes[0][ndims[0] - 1];
  int64_t rows = 1;
  for (int d = 0; d + 1 < ndims[0]; ++d) rows *= shapes[0][d];
  vig::ParallelFor(rows, [&](int64_t first, int64_t last) {
    for (int64_t r = first; r < last; ++r) {
      const float *in = x + r * c;
      float *out = xn + r * c;
      double sum = 0.0;
      for (int64_t t = 0; t < c; ++t) sum += static_cast<double>(in[t] * in[t]);
      const float norm = std::sqrt(static_cast<float>(sum));
      const float divisor = norm > 1e-12f ? norm : 1e-12f;
      double squares = 0.0;
      for (int64_t t = 0; t < c; ++t) {
        out[t] = in[t] / divisor;
        squares += static_cast<double>(out[t] * out[t]);
      }
      xsq[r] = static_cast<float>(squares);
    }
  });
  return 0;
}
