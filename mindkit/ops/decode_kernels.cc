// Fused CPU kernels for one decode step (MindSpore Custom "aot" ops; built by mindkit/ops/aot.py).
// A compiled SmolLM2 decode step is ~1250 small kernels and each costs 10-40 us to launch on a CPU, as much as
// reading all the weights; these kernels do the glue between the projections (norm, RoPE + KV-cache write +
// attention, SwiGLU) in one launch each. Every kernel computes what the MindSpore ops it replaces compute, in
// float32, up to the order of float additions.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "thread_pool.h"
#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

namespace {

inline float dot(const float *a, const float *b, int64_t n) {
  float acc = 0.f;
#pragma omp simd reduction(+ : acc)
  for (int64_t i = 0; i < n; ++i) acc += a[i] * b[i];
  return acc;
}

inline bool is_f32(const char *dtype) { return std::strcmp(dtype, "float32") == 0; }

int64_t numel(int ndim, const int64_t *shape) {
  int64_t n = 1;
  for (int i = 0; i < ndim; ++i) n *= shape[i];
  return n;
}

// x * partner-rotated x: out[d] = x[d] cos[d] + sign[d] x[partner[d]] sin[d] (rotate-half or interleaved pairs;
// pass-through dims have cos 1, sin 0).
inline void rope(const float *x, const float *cos, const float *sin, const int32_t *partner, const float *sign,
                 float *out, int64_t hd) {
  for (int64_t d = 0; d < hd; ++d) out[d] = x[d] * cos[d] + sign[d] * x[partner[d]] * sin[d];
}

#if defined(__AVX2__) && defined(__FMA__)
inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// y[m..m+MR, n0:n0+4] for MR rows of x (MR * K floats apart: x's row stride is K) against 4 rows of w: each w load
// feeds MR FMAs and each x load four.
template <int MR>
inline void block_rows(const float *x, const float *w, int64_t K, float *y, int64_t N) {
  __m256 a[MR * 4];
  for (auto &r : a) r = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 8 <= K; k += 8) {
    __m256 u[MR];
    for (int i = 0; i < MR; ++i) u[i] = _mm256_loadu_ps(x + i * K + k);
    for (int r = 0; r < 4; ++r) {
      const __m256 wr = _mm256_loadu_ps(w + r * K + k);
      for (int i = 0; i < MR; ++i) a[i * 4 + r] = _mm256_fmadd_ps(wr, u[i], a[i * 4 + r]);
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int r = 0; r < 4; ++r) {
      float t = hsum(a[i * 4 + r]);
      for (int64_t j = k; j < K; ++j) t += x[i * K + j] * w[r * K + j];
      y[i * N + r] = t;
    }
}

template <int R>
inline void block_1xR(const float *x, const float *w, int64_t K, float *y) {
  __m256 a[R];
  for (auto &r : a) r = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 8 <= K; k += 8) {
    const __m256 u = _mm256_loadu_ps(x + k);
    for (int r = 0; r < R; ++r) a[r] = _mm256_fmadd_ps(_mm256_loadu_ps(w + r * K + k), u, a[r]);
  }
  for (int r = 0; r < R; ++r) {
    float s = hsum(a[r]);
    for (int64_t j = k; j < K; ++j) s += x[j] * w[r * K + j];
    y[r] = s;
  }
}
#endif

struct MatMulArgs {
  const float *x, *w;
  float *y;
  int64_t M, N, K;
};

// Rows [n0, n1) of w against every row of x: each 4-row panel of w is read from memory once and reused from
// cache by all M rows, so small-M products cost one pass over the weights.
void matmul_rows(const void *ctx, int64_t n0, int64_t n1) {
  const auto &a = *static_cast<const MatMulArgs *>(ctx);
  int64_t n = n0;
#if defined(__AVX2__) && defined(__FMA__)
  if (a.M == 1)  // eight weight rows in flight: more memory streams for the prefetcher
    for (; n + 8 <= n1; n += 8) block_1xR<8>(a.x, a.w + n * a.K, a.K, a.y + n);
  for (; n + 4 <= n1; n += 4) {
    const float *w = a.w + n * a.K;
    int64_t m = 0;
    for (; m + 3 <= a.M; m += 3) block_rows<3>(a.x + m * a.K, w, a.K, a.y + m * a.N + n, a.N);
    if (a.M - m == 2) block_rows<2>(a.x + m * a.K, w, a.K, a.y + m * a.N + n, a.N);
    if (a.M - m == 1) block_rows<1>(a.x + m * a.K, w, a.K, a.y + m * a.N + n, a.N);
  }
#endif
  for (; n < n1; ++n)
    for (int64_t m = 0; m < a.M; ++m) a.y[m * a.N + n] = dot(a.x + m * a.K, a.w + n * a.K, a.K);
}

}  // namespace

// MatMulT(x (M, K), w (N, K)) -> x @ w^T (M, N), for the small M of decode steps (weights stored (out, in)).
extern "C" int MatMulT(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
                       void *extra) {
  if (nparam != 3 || ndims[0] != 2 || ndims[1] != 2 || !is_f32(dtypes[0]) || !is_f32(dtypes[1])) return 1;
  const MatMulArgs a{static_cast<const float *>(params[0]), static_cast<const float *>(params[1]),
                     static_cast<float *>(params[2]), shapes[0][0], shapes[1][0], shapes[0][1]};
  if (shapes[1][1] != a.K) return 2;
  // chunks of 64 weight rows (~150 KB at K = 576): enough of them to balance two threads on a busy machine
  mindkit::ThreadPool::get().run(matmul_rows, &a, a.N, 64);
  return 0;
}

// RmsNorm(x (..., D), weight (D,), eps (1,)) -> x / sqrt(mean(x^2) + eps) * weight
extern "C" int RmsNorm(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
                       void *extra) {
  if (nparam != 4 || !is_f32(dtypes[0]) || !is_f32(dtypes[1]) || !is_f32(dtypes[2])) return 1;
  const int64_t D = shapes[0][ndims[0] - 1], rows = numel(ndims[0], shapes[0]) / D;
  if (shapes[1][0] != D) return 2;
  const float *x = static_cast<const float *>(params[0]), *w = static_cast<const float *>(params[1]);
  const float eps = *static_cast<const float *>(params[2]);
  float *y = static_cast<float *>(params[3]);
  for (int64_t r = 0; r < rows; ++r, x += D, y += D) {
    const float inv = 1.f / std::sqrt(dot(x, x, D) / D + eps);
#pragma omp simd
    for (int64_t d = 0; d < D; ++d) y[d] = x[d] * inv * w[d];
  }
  return 0;
}

// SiluMul(gate (..., F), up (..., F)) -> silu(gate) * up;  SiluMulPairs(gu (..., 2F)) with (gate, up) interleaved.
extern "C" int SiluMul(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
                       void *extra) {
  if (nparam != 3 || !is_f32(dtypes[0]) || !is_f32(dtypes[1])) return 1;
  const int64_t n = numel(ndims[0], shapes[0]);
  if (numel(ndims[1], shapes[1]) != n) return 2;
  const float *g = static_cast<const float *>(params[0]), *u = static_cast<const float *>(params[1]);
  float *y = static_cast<float *>(params[2]);
  for (int64_t i = 0; i < n; ++i) y[i] = g[i] / (1.f + std::exp(-g[i])) * u[i];
  return 0;
}

extern "C" int SiluMulPairs(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                            void *stream, void *extra) {
  if (nparam != 2 || !is_f32(dtypes[0])) return 1;
  const int64_t n = numel(ndims[0], shapes[0]) / 2;
  const float *gu = static_cast<const float *>(params[0]);
  float *y = static_cast<float *>(params[1]);
  for (int64_t i = 0; i < n; ++i) y[i] = gu[2 * i] / (1.f + std::exp(-gu[2 * i])) * gu[2 * i + 1];
  return 0;
}

// DecodeAttention(q (B, H, hd), k (B, G, hd), v (B, G, hd), cos (B, hd), sin (B, hd), partner (hd,) int32,
// sign (hd,), k_cache (B, G, S, hd), v_cache (B, G, S, hd), mask (B, S) additive, slot () int32) -> (B, H * hd).
// One new token per row: RoPE on q and k, k and v written into the caches at ``slot`` (in place: the caches are
// the model's Parameters), then softmax(q k^T / sqrt(hd) + mask) v over slots [0, slot] (later slots are masked).
// Query head h reads KV group h / (H / G).
extern "C" int DecodeAttention(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                               void *stream, void *extra) {
  if (nparam != 12) return 1;
  for (int i : {0, 1, 2, 3, 4, 6, 7, 8, 9})
    if (!is_f32(dtypes[i])) return 2;
  if (std::strcmp(dtypes[5], "int32") || std::strcmp(dtypes[10], "int32")) return 2;
  const int64_t B = shapes[0][0], H = shapes[0][1], hd = shapes[0][2], G = shapes[1][1], S = shapes[7][2];
  if (H % G || shapes[7][0] != B || shapes[7][1] != G || shapes[7][3] != hd || shapes[9][1] != S) return 3;
  const float *q = static_cast<const float *>(params[0]), *k = static_cast<const float *>(params[1]);
  const float *v = static_cast<const float *>(params[2]), *cos = static_cast<const float *>(params[3]);
  const float *sin = static_cast<const float *>(params[4]), *sign = static_cast<const float *>(params[6]);
  const int32_t *partner = static_cast<const int32_t *>(params[5]);
  float *k_cache = static_cast<float *>(params[7]), *v_cache = static_cast<float *>(params[8]);
  const float *mask = static_cast<const float *>(params[9]);
  const int64_t slot = *static_cast<const int32_t *>(params[10]);
  float *out = static_cast<float *>(params[11]);
  if (slot < 0 || slot >= S) return 4;
  const int64_t rep = H / G, seen = slot + 1;
  const float scale = 1.f / std::sqrt(static_cast<float>(hd));
  std::vector<float> qr(hd), p(seen);
  for (int64_t b = 0; b < B; ++b) {
    const float *cb = cos + b * hd, *sb = sin + b * hd, *mb = mask + b * S;
    for (int64_t g = 0; g < G; ++g) {
      const int64_t row = ((b * G + g) * S + slot) * hd;
      rope(k + (b * G + g) * hd, cb, sb, partner, sign, k_cache + row, hd);
      std::memcpy(v_cache + row, v + (b * G + g) * hd, hd * sizeof(float));
    }
    for (int64_t h = 0; h < H; ++h) {
      const int64_t g = h / rep;
      const float *kc = k_cache + (b * G + g) * S * hd, *vc = v_cache + (b * G + g) * S * hd;
      rope(q + (b * H + h) * hd, cb, sb, partner, sign, qr.data(), hd);
      float top = -INFINITY, total = 0.f;
      for (int64_t s = 0; s < seen; ++s) {
        p[s] = dot(qr.data(), kc + s * hd, hd) * scale + mb[s];
        top = std::max(top, p[s]);
      }
      for (int64_t s = 0; s < seen; ++s) total += (p[s] = std::exp(p[s] - top));
      float *o = out + (b * H + h) * hd;
      std::fill(o, o + hd, 0.f);
      for (int64_t s = 0; s < seen; ++s) {
        const float w = p[s] / total, *vs = vc + s * hd;
#pragma omp simd
        for (int64_t d = 0; d < hd; ++d) o[d] += w * vs[d];
      }
    }
  }
  return 0;
}
