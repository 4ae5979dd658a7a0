// Fused CPU kernels for one decode step (MindSpore Custom "aot" ops; built by mindkit/ops/aot.py).
// A compiled SmolLM2 decode step was ~1250 small MindSpore kernels, and MindSpore's runtime spends 30-80 us on each
// launch here, as much as reading all the weights. A decode step is now one kernel a decoder layer (DecoderLayer:
// AttentionBlock, i.e. norm, QKV, RoPE + KV-cache write + attention, output projection + residual; then FeedForward,
// i.e. norm, gate/up, SwiGLU, down projection + residual), the products on the few-row MatMulT. The blocks and their
// parts also stand alone: the elementwise ones (norm, SwiGLU) and CachedAttention serve prefill, where MindSpore's
// own ops are slow too (splitting interleaved gate/up pairs alone cost ~36 ms a layer for 1024 tokens). Every kernel
// computes what the MindSpore ops it replaces compute, in float32, up to the order of float additions and exp's
// last bit.
#include <algorithm>
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

// Elementwise kernels split their work over threads in chunks of this many elements: a decode step's few rows stay
// on the calling thread, a prefill's thousands of rows spread over the cores.
constexpr int64_t kChunk = 1 << 14;
inline int64_t rows_per_chunk(int64_t row) { return std::max<int64_t>(1, kChunk / row); }

#if defined(__AVX2__) && defined(__FMA__)
// exp(x) to ~1 ulp: 2^n exp(r) with n = round(x / ln 2), |r| <= ln 2 / 2 (ln 2 in two parts for exactness) and
// Cephes' degree-6 polynomial for exp(r); x is clamped where float32 overflows, and exp is 0 below its normal range
// (as a masked attention score's weight must be).
inline __m256 exp256(__m256 x) {
  const __m256 normal = _mm256_cmp_ps(x, _mm256_set1_ps(-87.3f), _CMP_GE_OQ);
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3f)), _mm256_set1_ps(88.3f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504089f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  for (float c : {1.3981999507e-3f, 8.3334519073e-3f, 4.1665795894e-2f, 1.6666665459e-1f, 5.0000001201e-1f})
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
  p = _mm256_fmadd_ps(_mm256_mul_ps(p, r), r, _mm256_add_ps(r, _mm256_set1_ps(1.f)));
  const __m256i pow2n = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_and_ps(_mm256_mul_ps(p, _mm256_castsi256_ps(pow2n)), normal);
}

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

// The sums of a[0..8) each, as one vector.
inline __m256 hsum8(const __m256 *a) {
  const __m256 u0 = _mm256_hadd_ps(_mm256_hadd_ps(a[0], a[1]), _mm256_hadd_ps(a[2], a[3]));
  const __m256 u1 = _mm256_hadd_ps(_mm256_hadd_ps(a[4], a[5]), _mm256_hadd_ps(a[6], a[7]));
  return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}

// y[j] = q . k[j * n ..) for j < 8: eight keys of n floats (n a multiple of 8) against one query.
inline void dot8(const float *q, const float *k, int64_t n, float *y) {
  __m256 a[8];
  for (auto &r : a) r = _mm256_setzero_ps();
  for (int64_t d = 0; d < n; d += 8) {
    const __m256 qv = _mm256_loadu_ps(q + d);
    for (int j = 0; j < 8; ++j) a[j] = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k + j * n + d), a[j]);
  }
  _mm256_storeu_ps(y, hsum8(a));
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

// p[0, n) <- softmax(p[0, n)), the exps eight at a time where AVX2 is.
inline void softmax(float *p, int64_t n) {
  float top = -INFINITY, total = 0.f;
  for (int64_t s = 0; s < n; ++s) top = std::max(top, p[s]);
  int64_t s = 0;
#if defined(__AVX2__) && defined(__FMA__)
  __m256 sum = _mm256_setzero_ps();
  for (; s + 8 <= n; s += 8) {
    const __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(p + s), _mm256_set1_ps(top)));
    _mm256_storeu_ps(p + s, e);
    sum = _mm256_add_ps(sum, e);
  }
  total = hsum(sum);
#endif
  for (; s < n; ++s) total += (p[s] = std::exp(p[s] - top));
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) p[i] /= total;
}

struct MatMulArgs {
  const float *x, *w, *residual;  // residual (M, N) or nullptr
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
  if (a.residual)
    for (int64_t m = 0; m < a.M; ++m)
#pragma omp simd
      for (int64_t i = m * a.N + n0; i < m * a.N + n1; ++i) a.y[i] += a.residual[i];
}

// y (M, N) = x (M, K) @ w (N, K)^T (+ residual (M, N), or nullptr) on every core.
void matmul(const float *x, const float *w, const float *residual, float *y, int64_t M, int64_t N, int64_t K) {
  const MatMulArgs a{x, w, residual, y, M, N, K};
  // chunks of 64 weight rows (~150 KB at K = 576): enough of them to balance two threads on a busy machine
  mindkit::ThreadPool::get().run(matmul_rows, &a, N, 64);
}

// Buffer ``slot`` (of four) of at least n floats for what a block kernel computes on the way (a normalized input,
// projections, attention's output, a layer's hidden state between its blocks), per launching thread: a decode step's
// few rows, reused from launch to launch.
float *scratch(int slot, int64_t n) {
  thread_local std::vector<float> buf[4];
  if (static_cast<int64_t>(buf[slot].size()) < n) buf[slot].resize(n);
  return buf[slot].data();
}

// The product's operands after ``first`` inputs the caller checked: w (N, K) and, with one more input than the
// kernel's own, residual (M, N); x's M rows of K floats are the caller's. Null when they do not fit.
struct Product {
  const float *w, *residual;
  int64_t N;
};

Product product_args(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, int first,
                     int64_t M, int64_t K) {
  const bool residual = nparam == first + 3;
  if ((nparam != first + 2 && !residual) || ndims[first] != 2 || !is_f32(dtypes[first]) || shapes[first][1] != K)
    return {nullptr, nullptr, 0};
  const int64_t N = shapes[first][0];
  if (residual && (!is_f32(dtypes[first + 1]) || numel(ndims[first + 1], shapes[first + 1]) != M * N))
    return {nullptr, nullptr, 0};
  return {static_cast<const float *>(params[first]),
          residual ? static_cast<const float *>(params[first + 1]) : nullptr, N};
}

}  // namespace

// MatMulT(x (M, K), w (N, K)[, residual (M, N)]) -> x @ w^T (+ residual) (M, N), for the few rows of a decode step
// (weights stored (out, in)). The residual is the stream a block's output projection adds to: one launch, not two.
extern "C" int MatMulT(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
                       void *extra) {
  if (nparam < 3 || ndims[0] != 2 || !is_f32(dtypes[0])) return 1;
  const int64_t M = shapes[0][0], K = shapes[0][1];
  const Product p = product_args(nparam, params, ndims, shapes, dtypes, 1, M, K);
  if (!p.w) return 2;
  matmul(static_cast<const float *>(params[0]), p.w, p.residual, static_cast<float *>(params[nparam - 1]), M, p.N, K);
  return 0;
}

// RmsNorm(x (..., D), weight (D,), eps (1,)) -> x / sqrt(mean(x^2) + eps) * weight
struct RmsNormArgs {
  const float *x, *w;
  float eps, *y;
  int64_t D;
};

static void rms_norm_rows(const void *ctx, int64_t r0, int64_t r1) {
  const auto &a = *static_cast<const RmsNormArgs *>(ctx);
  for (int64_t r = r0; r < r1; ++r) {
    const float *x = a.x + r * a.D;
    float *y = a.y + r * a.D;
    const float inv = 1.f / std::sqrt(dot(x, x, a.D) / a.D + a.eps);
#pragma omp simd
    for (int64_t d = 0; d < a.D; ++d) y[d] = x[d] * inv * a.w[d];
  }
}

extern "C" int RmsNorm(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
                       void *extra) {
  if (nparam != 4 || !is_f32(dtypes[0]) || !is_f32(dtypes[1]) || !is_f32(dtypes[2])) return 1;
  const int64_t D = shapes[0][ndims[0] - 1], rows = numel(ndims[0], shapes[0]) / D;
  if (shapes[1][0] != D) return 2;
  const RmsNormArgs a{static_cast<const float *>(params[0]), static_cast<const float *>(params[1]),
                      *static_cast<const float *>(params[2]), static_cast<float *>(params[3]), D};
  mindkit::ThreadPool::get().run(rms_norm_rows, &a, rows, rows_per_chunk(D));
  return 0;
}

// SiluMul(gate (..., F), up (..., F)) -> silu(gate) * up;  SiluMulPairs(gu (..., 2F)) with (gate, up) interleaved.
struct SiluMulArgs {
  const float *gate, *up;  // up == nullptr: gate holds (gate, up) pairs
  float *y;
};

static void silu_mul_range(const void *ctx, int64_t i0, int64_t i1) {
  const auto &a = *static_cast<const SiluMulArgs *>(ctx);
  int64_t i = i0;
#if defined(__AVX2__) && defined(__FMA__)
  for (; i + 8 <= i1; i += 8) {
    __m256 g, u;
    if (a.up) {
      g = _mm256_loadu_ps(a.gate + i), u = _mm256_loadu_ps(a.up + i);
    } else {  // deinterleave 16 floats: shuffles work per 128-bit lane, the permute restores the order
      const __m256 lo = _mm256_loadu_ps(a.gate + 2 * i), hi = _mm256_loadu_ps(a.gate + 2 * i + 8);
      g = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(lo, hi, 0x88)), 0xD8));
      u = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(lo, hi, 0xDD)), 0xD8));
    }
    const __m256 e = exp256(_mm256_sub_ps(_mm256_setzero_ps(), g));
    _mm256_storeu_ps(a.y + i, _mm256_mul_ps(_mm256_div_ps(g, _mm256_add_ps(_mm256_set1_ps(1.f), e)), u));
  }
#endif
  for (; i < i1; ++i) {
    const float g = a.up ? a.gate[i] : a.gate[2 * i], u = a.up ? a.up[i] : a.gate[2 * i + 1];
    a.y[i] = g / (1.f + std::exp(-g)) * u;
  }
}

extern "C" int SiluMul(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
                       void *extra) {
  if (nparam != 3 || !is_f32(dtypes[0]) || !is_f32(dtypes[1])) return 1;
  const int64_t n = numel(ndims[0], shapes[0]);
  if (numel(ndims[1], shapes[1]) != n) return 2;
  const SiluMulArgs a{static_cast<const float *>(params[0]), static_cast<const float *>(params[1]),
                      static_cast<float *>(params[2])};
  mindkit::ThreadPool::get().run(silu_mul_range, &a, n, kChunk);
  return 0;
}

extern "C" int SiluMulPairs(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                            void *stream, void *extra) {
  if (nparam != 2 || !is_f32(dtypes[0])) return 1;
  const SiluMulArgs a{static_cast<const float *>(params[0]), nullptr, static_cast<float *>(params[1])};
  mindkit::ThreadPool::get().run(silu_mul_range, &a, numel(ndims[0], shapes[0]) / 2, kChunk);
  return 0;
}

// CachedAttention(q (B, L, H, hd), k (B, L, G, hd), v (B, L, G, hd), cos (B, L, hd), sin (B, L, hd),
// partner (hd,) int32, sign (hd,), k_cache (B, G, S, hd), v_cache (B, G, S, hd), mask (B, L, S) additive,
// start () int32) -> (B, L, H * hd). L new tokens per row (a prefill, or one for a decode step) at cache slots
// start .. start + L - 1: RoPE on q and k, k and v written into the caches there (in place: the caches are the
// model's Parameters), then for token l softmax(q k^T / sqrt(hd) + mask) v over slots [0, start + l] (later slots
// are masked anyway). Query head h reads KV group h / (H / G).
// A fused QKV projection's output (B, L, G, H / G + 2, hd), each KV group's query heads then its key and value, may
// be passed as q, k and v alike: it is read in place.
// With wo (N, H * hd) and residual (B, L, N) after start, the output projection follows: -> (B, L, N), attention's
// output @ wo^T + residual (a decode step's few rows; see MatMulT).

// Where one of q, k, v holds token t's head r of KV group g (k and v: r = 0): its strides per token and per group.
struct Heads {
  const float *base;
  int64_t token, group, hd;
  const float *at(int64_t t, int64_t g, int64_t r = 0) const { return base + t * token + g * group + r * hd; }
};

struct AttentionArgs {
  Heads q;
  const float *cos, *sin, *sign, *k_cache, *v_cache, *mask;
  const int32_t *partner;
  float *out;
  int64_t L, H, G, S, hd, start;
};

// Units u = (b, g, l): the H / G query heads of KV group g for token l of row b, reading each cached key and value
// once for all of them.
static void attention_units(const void *ctx, int64_t u0, int64_t u1) {
  const auto &a = *static_cast<const AttentionArgs *>(ctx);
  const int64_t rep = a.H / a.G, hd = a.hd;
  const float scale = 1.f / std::sqrt(static_cast<float>(hd));
  std::vector<float> qr(rep * hd), p(rep * (a.start + a.L));
  for (int64_t u = u0; u < u1; ++u) {
    const int64_t l = u % a.L, g = u / a.L % a.G, b = u / (a.L * a.G), bl = b * a.L + l, seen = a.start + l + 1;
    const float *kc = a.k_cache + (b * a.G + g) * a.S * hd, *vc = a.v_cache + (b * a.G + g) * a.S * hd;
    const float *mask = a.mask + bl * a.S;
    for (int64_t r = 0; r < rep; ++r)
      rope(a.q.at(bl, g, r), a.cos + bl * hd, a.sin + bl * hd, a.partner, a.sign, qr.data() + r * hd, hd);
    for (int64_t r = 0; r < rep; ++r) {
      float *pr = p.data() + r * seen;
      int64_t s = 0;
#if defined(__AVX2__) && defined(__FMA__)
      if (hd % 8 == 0)
        for (; s + 8 <= seen; s += 8) dot8(qr.data() + r * hd, kc + s * hd, hd, pr + s);
#endif
      for (; s < seen; ++s) pr[s] = dot(qr.data() + r * hd, kc + s * hd, hd);
#pragma omp simd
      for (int64_t i = 0; i < seen; ++i) pr[i] = pr[i] * scale + mask[i];
      softmax(pr, seen);
    }
    float *o = a.out + (bl * a.H + g * rep) * hd;
    std::fill(o, o + rep * hd, 0.f);
    for (int64_t s = 0; s < seen; ++s)
      for (int64_t r = 0; r < rep; ++r) {
        const float w = p[r * seen + s], *vs = vc + s * hd;
        float *orow = o + r * hd;
#pragma omp simd
        for (int64_t d = 0; d < hd; ++d) orow[d] += w * vs[d];
      }
  }
}

// The attention of B rows x L new tokens whose heads ``q``, ``k``, ``v`` locate (rep query heads per KV group),
// with cos, sin, partner, sign, k_cache, v_cache, mask, start at params[at ..] (see CachedAttention): keys and values
// written into the caches, the output (B, L, H * hd) into ``out``. Nonzero when the shapes do not fit.
static int attend(const Heads &q, const Heads &k, const Heads &v, int64_t B, int64_t L, int64_t rep, void **params,
                  int64_t **shapes, const char **dtypes, int at, float *out) {
  for (int i : {0, 1, 3, 4, 5, 6})
    if (!is_f32(dtypes[at + i])) return 2;
  if (std::strcmp(dtypes[at + 2], "int32") || std::strcmp(dtypes[at + 7], "int32")) return 2;
  const int64_t *cache = shapes[at + 4], G = cache[1], S = cache[2], hd = cache[3];
  const int64_t start = *static_cast<const int32_t *>(params[at + 7]);
  if (rep < 1 || cache[0] != B || q.hd != hd || shapes[at + 6][2] != S) return 3;
  if (start < 0 || start + L > S) return 4;
  const AttentionArgs a{q, static_cast<const float *>(params[at]), static_cast<const float *>(params[at + 1]),
                        static_cast<const float *>(params[at + 3]), static_cast<float *>(params[at + 4]),
                        static_cast<float *>(params[at + 5]), static_cast<const float *>(params[at + 6]),
                        static_cast<const int32_t *>(params[at + 2]), out, L, G * rep, G, S, hd, start};
  float *k_cache = static_cast<float *>(params[at + 4]), *v_cache = static_cast<float *>(params[at + 5]);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t l = 0; l < L; ++l)
      for (int64_t g = 0; g < G; ++g) {
        const int64_t row = ((b * G + g) * S + start + l) * hd, t = b * L + l;
        rope(k.at(t, g), a.cos + t * hd, a.sin + t * hd, a.partner, a.sign, k_cache + row, hd);
        std::memcpy(v_cache + row, v.at(t, g), hd * sizeof(float));
      }
  // a unit reads up to start + L cached rows for each of its H / G heads: enough units per chunk to be worth a thread
  const int64_t unit = (start + L) * hd * rep;
  mindkit::ThreadPool::get().run(attention_units, &a, B * G * L, std::max<int64_t>(1, 4 * kChunk / unit));
  return 0;
}

// The heads of a fused QKV projection's output (rows of G groups x (rep query heads, key, value) x hd), or of
// separate q (rows of G * rep heads), k and v (rows of G heads).
struct QKV {
  Heads q, k, v;
  static QKV fused(const float *qkv, int64_t G, int64_t rep, int64_t hd) {
    const int64_t group = (rep + 2) * hd, token = G * group;
    return {{qkv, token, group, hd}, {qkv + rep * hd, token, group, hd}, {qkv + (rep + 1) * hd, token, group, hd}};
  }
  static QKV separate(const float *q, const float *k, const float *v, int64_t G, int64_t rep, int64_t hd) {
    return {{q, G * rep * hd, rep * hd, hd}, {k, G * hd, hd, hd}, {v, G * hd, hd, hd}};
  }
};

extern "C" int CachedAttention(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                               void *stream, void *extra) {
  if ((nparam != 12 && nparam != 14) || !is_f32(dtypes[0]) || !is_f32(dtypes[1]) || !is_f32(dtypes[2])) return 1;
  const bool grouped = ndims[0] == 5;
  const int64_t B = shapes[0][0], L = shapes[0][1], hd = shapes[0][ndims[0] - 1], G = shapes[7][1];
  const int64_t rep = grouped ? shapes[0][3] - 2 : shapes[0][2] / G;
  if (grouped ? shapes[0][2] != G : shapes[0][2] != G * rep || shapes[1][2] != G || shapes[1][3] != hd) return 3;
  const float *q = static_cast<const float *>(params[0]);
  const QKV h = grouped ? QKV::fused(q, G, rep, hd)
                        : QKV::separate(q, static_cast<const float *>(params[1]),
                                        static_cast<const float *>(params[2]), G, rep, hd);
  if (nparam == 12)
    return attend(h.q, h.k, h.v, B, L, rep, params, shapes, dtypes, 3, static_cast<float *>(params[11]));
  const Product out = product_args(nparam, params, ndims, shapes, dtypes, 11, B * L, G * rep * hd);
  if (!out.w || !out.residual) return 3;
  float *y = scratch(0, B * L * G * rep * hd);
  if (const int err = attend(h.q, h.k, h.v, B, L, rep, params, shapes, dtypes, 3, y)) return err;
  matmul(y, out.w, out.residual, static_cast<float *>(params[13]), B * L, out.N, G * rep * hd);
  return 0;
}

// The two blocks of a pre-norm decoder layer's decode step, residual + f(RmsNorm(x)), every product the few-row one
// of MatMulT. DecoderLayer runs both in one launch; each is launched alone where only it folds (a LoRA adapter in the
// other). Weights are given fused (w_qkv, w13) or separate (wq, wk, wv; w1, w3).
// AttentionBlock(x (B, L, D), weight (D,), eps (1,), w_qkv (G (rep + 2) hd, D) | wq (G rep hd, D), wk (G hd, D),
// wv (G hd, D), cos, sin, partner, sign, k_cache, v_cache, mask, start (as CachedAttention), wo (N, G rep hd),
// residual (B, L, N)) -> (B, L, N)
extern "C" int AttentionBlock(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                              void *stream, void *extra) {
  if (nparam != 15 && nparam != 17) return 1;
  const int nw = nparam == 15 ? 1 : 3, at = 3 + nw;
  for (int i = 0; i < 3 + nw; ++i)
    if (!is_f32(dtypes[i])) return 1;
  if (ndims[0] != 3) return 2;
  const int64_t B = shapes[0][0], L = shapes[0][1], D = shapes[0][2], M = B * L;
  const int64_t G = shapes[at + 4][1], hd = shapes[at + 4][3];
  const int64_t q_rows = nw == 1 ? shapes[3][0] - 2 * G * hd : shapes[3][0], rep = q_rows / (G * hd);
  bool fits = shapes[1][0] == D && rep >= 1 && q_rows == G * rep * hd;
  for (int i = 3; i < 3 + nw; ++i) fits = fits && ndims[i] == 2 && shapes[i][1] == D;
  if (nw == 3) fits = fits && shapes[4][0] == G * hd && shapes[5][0] == G * hd;
  if (!fits) return 2;
  const Product out = product_args(nparam, params, ndims, shapes, dtypes, at + 8, M, G * rep * hd);
  if (!out.w || !out.residual) return 2;
  const RmsNormArgs norm{static_cast<const float *>(params[0]), static_cast<const float *>(params[1]),
                         *static_cast<const float *>(params[2]), scratch(0, M * D), D};
  rms_norm_rows(&norm, 0, M);
  float *qkv = scratch(1, M * G * (rep + 2) * hd);
  const float *w = static_cast<const float *>(params[3]);
  QKV h;
  if (nw == 1) {
    matmul(norm.y, w, nullptr, qkv, M, G * (rep + 2) * hd, D);
    h = QKV::fused(qkv, G, rep, hd);
  } else {
    float *q = qkv, *k = q + M * G * rep * hd, *v = k + M * G * hd;
    matmul(norm.y, w, nullptr, q, M, G * rep * hd, D);
    matmul(norm.y, static_cast<const float *>(params[4]), nullptr, k, M, G * hd, D);
    matmul(norm.y, static_cast<const float *>(params[5]), nullptr, v, M, G * hd, D);
    h = QKV::separate(q, k, v, G, rep, hd);
  }
  float *y = scratch(2, M * G * rep * hd);
  if (const int err = attend(h.q, h.k, h.v, B, L, rep, params, shapes, dtypes, at, y)) return err;
  matmul(y, out.w, out.residual, static_cast<float *>(params[nparam - 1]), M, out.N, G * rep * hd);
  return 0;
}

// FeedForward(x (..., D), weight (D,), eps (1,), w13 (2F, D) with gate and up rows interleaved | w1 (F, D),
// w3 (F, D), w2 (D, F), residual (..., D)) -> residual + w2 (silu(gate) * up) of RmsNorm(x) (..., D)
extern "C" int FeedForward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
                           void *extra) {
  if (nparam != 7 && nparam != 8) return 1;
  const bool pairs = nparam == 7;
  const int iw2 = pairs ? 4 : 5;
  for (int i = 0; i < iw2; ++i)
    if (!is_f32(dtypes[i])) return 1;
  const int64_t D = shapes[0][ndims[0] - 1], M = numel(ndims[0], shapes[0]) / D, F = shapes[iw2][1];
  if (shapes[1][0] != D || ndims[3] != 2 || shapes[3][1] != D || shapes[3][0] != (pairs ? 2 * F : F) ||
      (!pairs && (ndims[4] != 2 || shapes[4][0] != F || shapes[4][1] != D)))
    return 2;
  const Product down = product_args(nparam, params, ndims, shapes, dtypes, iw2, M, F);
  if (!down.w || !down.residual || down.N != D) return 2;
  const RmsNormArgs norm{static_cast<const float *>(params[0]), static_cast<const float *>(params[1]),
                         *static_cast<const float *>(params[2]), scratch(0, M * D), D};
  rms_norm_rows(&norm, 0, M);
  float *gu = scratch(1, 2 * M * F);
  if (pairs) {
    matmul(norm.y, static_cast<const float *>(params[3]), nullptr, gu, M, 2 * F, D);
  } else {
    matmul(norm.y, static_cast<const float *>(params[3]), nullptr, gu, M, F, D);
    matmul(norm.y, static_cast<const float *>(params[4]), nullptr, gu + M * F, M, F, D);
  }
  const SiluMulArgs act{gu, pairs ? nullptr : gu + M * F, scratch(2, M * F)};
  mindkit::ThreadPool::get().run(silu_mul_range, &act, M * F, kChunk);
  matmul(act.y, down.w, down.residual, static_cast<float *>(params[nparam - 1]), M, D, F);
  return 0;
}

// DecoderLayer(AttentionBlock's inputs, FeedForward's weights (norm weight, eps, w13 | w1, w3, w2)) -> (B, L, D): a
// pre-norm decoder layer's decode step, h = AttentionBlock(x, ...), then FeedForward(h, ..., residual h), in one
// launch (MindSpore's runtime costs tens of microseconds a launch here). Both blocks' weights fused (w_qkv, w13) or
// both separate.
extern "C" int DecoderLayer(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                            void *stream, void *extra) {
  if (nparam != 19 && nparam != 22) return 1;
  const int attention = nparam == 19 ? 14 : 16, ffn = nparam - 1 - attention;  // inputs of each block
  constexpr int kHidden = -1;  // h, the hidden state between the blocks: x's shape and dtype
  float *h = scratch(3, numel(ndims[0], shapes[0]));
  void *p[17];
  int nd[17];
  int64_t *sh[17];
  const char *dt[17];
  // a block called with inputs ``from`` (n indices into params, or kHidden), then ``out``
  const auto call = [&](auto block, const int *from, int n, void *out) {
    for (int i = 0; i < n; ++i) {
      const int j = from[i] == kHidden ? 0 : from[i];
      p[i] = from[i] == kHidden ? h : params[j], nd[i] = ndims[j], sh[i] = shapes[j], dt[i] = dtypes[j];
    }
    p[n] = out, nd[n] = ndims[0], sh[n] = shapes[0], dt[n] = dtypes[0];
    return block(n + 1, p, nd, sh, dt, stream, extra);
  };
  int first[16], second[7] = {kHidden};
  for (int i = 0; i < attention; ++i) first[i] = i;
  for (int i = 0; i < ffn; ++i) second[1 + i] = attention + i;
  second[1 + ffn] = kHidden;
  if (const int err = call(AttentionBlock, first, attention, h)) return err;
  return call(FeedForward, second, ffn + 2, params[nparam - 1]);
}
