// y = x @ w^T for float32 x (M, K) and w (N, K), both row-major (a Linear weight is (out, in)), as a MindSpore
// Custom "aot" op (built by mindkit/ops/aot.py), for the many rows of a prefill.
//
// GotoBLAS-style. y is cut into tiles of at most 64 columns by all rows (or by a half, a quarter... of them when
// there are few tiles), which the threads of mindkit::ThreadPool claim one by one. A tile packs its rows of w, at
// most KC inputs at a time, into panels of 16 outputs laid out [k][16], and sweeps them with every 6 rows of x,
// read in place: a 6x16 block of y stays in 12 AVX2 registers over the whole block of K, each step feeding 12 FMAs
// from 2 loads of w and 6 broadcasts of x. On a Zen 3 core (two FMAs per cycle) that reaches ~90% of the FMA peak
// on a prefill's shapes, two cores ~85% (benchmarks/bench_gemm.py). Without AVX2 and FMA, plain loops compute the
// same (slowly: such a build is only a fallback).
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "thread_pool.h"
#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

namespace {

constexpr int64_t MR = 6, NR = 16;
// A packed block of w, KC x TN floats at most (160 KiB), stays in L2 (512 KiB) next to the rows of x streaming through.
constexpr int64_t KC = 640, TN = 64, MIN_TILES = 8, MIN_TILE_M = 96;

int64_t ceil_div(int64_t n, int64_t d) { return (n + d - 1) / d; }
int64_t round_up(int64_t n, int64_t to) { return ceil_div(n, to) * to; }

struct Problem {
  const float *x, *w;
  float *y;
  int64_t M, N, K;
  int64_t kc;                       // K is swept in blocks of kc (the last may be shorter)
  int64_t tile_m, tile_n, tiles_n;  // y is cut into tiles of tile_m x tile_n, claimed by threads
};

// This thread's buffer for a packed block of w (KC x TN floats), 64-byte aligned, allocated on its first tile.
float *packed_block() {
  struct Buffer {
    float *p = static_cast<float *>(std::aligned_alloc(64, KC * TN * sizeof(float)));
    ~Buffer() { std::free(p); }
  };
  thread_local Buffer b;
  return b.p;
}

#if defined(__AVX2__) && defined(__FMA__)
// dst[k * NR + j] = src[j * ld + k] for j, k < 8: an 8x8 transpose in registers.
inline void transpose8(const float *src, int64_t ld, float *dst) {
  __m256 r[8], t[8];
  for (int j = 0; j < 8; ++j) r[j] = _mm256_loadu_ps(src + j * ld);
  for (int j = 0; j < 8; j += 2) {
    t[j] = _mm256_unpacklo_ps(r[j], r[j + 1]);
    t[j + 1] = _mm256_unpackhi_ps(r[j], r[j + 1]);
  }
  for (int j = 0; j < 8; j += 4) {
    r[j] = _mm256_shuffle_ps(t[j], t[j + 2], 0x44);
    r[j + 1] = _mm256_shuffle_ps(t[j], t[j + 2], 0xee);
    r[j + 2] = _mm256_shuffle_ps(t[j + 1], t[j + 3], 0x44);
    r[j + 3] = _mm256_shuffle_ps(t[j + 1], t[j + 3], 0xee);
  }
  for (int k = 0; k < 4; ++k) {
    _mm256_store_ps(dst + k * NR, _mm256_permute2f128_ps(r[k], r[k + 4], 0x20));
    _mm256_store_ps(dst + (k + 4) * NR, _mm256_permute2f128_ps(r[k], r[k + 4], 0x31));
  }
}
#endif

// w[0 : nc, 0 : kc] (row stride K) -> ceil(nc / NR) panels of kc x NR, zero past nc.
void pack_w(const float *w, int64_t K, int64_t nc, int64_t kc, float *dst) {
  for (int64_t j0 = 0; j0 < nc; j0 += NR, dst += kc * NR) {
    const float *src = w + j0 * K;
    const int64_t cols = std::min(NR, nc - j0);
    int64_t k = 0;
#if defined(__AVX2__) && defined(__FMA__)
    if (cols == NR)
      for (; k + 8 <= kc; k += 8) {
        transpose8(src + k, K, dst + k * NR);
        transpose8(src + 8 * K + k, K, dst + k * NR + 8);
      }
#endif
    for (; k < kc; ++k)
      for (int64_t j = 0; j < NR; ++j) dst[k * NR + j] = j < cols ? src[j * K + k] : 0.f;
  }
}

#if defined(__AVX2__) && defined(__FMA__)
// y[0:R, 0:cols] (+)= x[0:R, 0:kc] @ b, x with row stride ldx, b one packed panel (kc x NR), y with row stride ldy.
// ``next``: MR rows of x (stride ldx) to pull into cache meanwhile, or null. (The loops over rows are unrolled so
// that the accumulators stay in registers.)
template <int R>
void micro(const float *x, int64_t ldx, const float *b, int64_t kc, float *y, int64_t ldy, int64_t cols,
           bool accumulate, const float *next) {
  __m256 c0[R], c1[R];
#pragma GCC unroll 6
  for (int i = 0; i < R; ++i) {
    c0[i] = c1[i] = _mm256_setzero_ps();
    _mm_prefetch(reinterpret_cast<const char *>(y + i * ldy), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char *>(y + i * ldy + NR - 1), _MM_HINT_T0);
  }
  for (int64_t k0 = 0; k0 < kc; k0 += 16) {  // 16 steps read a cache line of each row of x
    if (next)
      for (int i = 0; i < MR; ++i) _mm_prefetch(reinterpret_cast<const char *>(next + i * ldx + k0), _MM_HINT_T0);
    for (int64_t k = k0; k < std::min(kc, k0 + 16); ++k, b += NR) {
      const __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
#pragma GCC unroll 6
      for (int i = 0; i < R; ++i) {
        const __m256 a = _mm256_broadcast_ss(x + i * ldx + k);
        c0[i] = _mm256_fmadd_ps(a, b0, c0[i]);
        c1[i] = _mm256_fmadd_ps(a, b1, c1[i]);
      }
    }
  }
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i m0 = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(cols)), lane);
  const __m256i m1 = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(cols) - 8), lane);
#pragma GCC unroll 6
  for (int i = 0; i < R; ++i) {
    float *yi = y + i * ldy;
    if (cols == NR) {
      if (accumulate) {
        c0[i] = _mm256_add_ps(c0[i], _mm256_loadu_ps(yi));
        c1[i] = _mm256_add_ps(c1[i], _mm256_loadu_ps(yi + 8));
      }
      _mm256_storeu_ps(yi, c0[i]);
      _mm256_storeu_ps(yi + 8, c1[i]);
    } else {
      if (accumulate) {
        c0[i] = _mm256_add_ps(c0[i], _mm256_maskload_ps(yi, m0));
        c1[i] = _mm256_add_ps(c1[i], _mm256_maskload_ps(yi + 8, m1));
      }
      _mm256_maskstore_ps(yi, m0, c0[i]);
      _mm256_maskstore_ps(yi + 8, m1, c1[i]);
    }
  }
}
#else
template <int R>
void micro(const float *x, int64_t ldx, const float *b, int64_t kc, float *y, int64_t ldy, int64_t cols,
           bool accumulate, const float *) {
  for (int i = 0; i < R; ++i, y += ldy) {
    float c[NR] = {};
    for (int64_t k = 0; k < kc; ++k) {
      const float a = x[i * ldx + k];
#pragma omp simd
      for (int j = 0; j < NR; ++j) c[j] += a * b[k * NR + j];
    }
    for (int64_t j = 0; j < cols; ++j) y[j] = accumulate ? y[j] + c[j] : c[j];
  }
}
#endif

using Micro = void (*)(const float *, int64_t, const float *, int64_t, float *, int64_t, int64_t, bool, const float *);
constexpr Micro kMicro[MR + 1] = {nullptr, micro<1>, micro<2>, micro<3>, micro<4>, micro<5>, micro<6>};

// y[m0:m1, n0:n1]: per block of K, w's block is packed (kc x nc: stays in L2) and swept by every MR rows of x
// (MR x kc: stays in L1; the sweep over the last panel prefetches the next MR rows).
void tile(const Problem &g, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  const int64_t nc = n1 - n0;
  float *packed = packed_block();
  for (int64_t k0 = 0; k0 < g.K; k0 += g.kc) {
    const int64_t kc = std::min(g.kc, g.K - k0);
    pack_w(g.w + n0 * g.K + k0, g.K, nc, kc, packed);
    for (int64_t i = m0; i < m1; i += MR) {
      const float *x = g.x + i * g.K + k0, *next = i + 2 * MR <= m1 ? x + MR * g.K : nullptr;
      for (int64_t j = 0; j < nc; j += NR)
        kMicro[std::min(MR, m1 - i)](x, g.K, packed + j * kc, kc, g.y + i * g.N + n0 + j, g.N, std::min(NR, nc - j),
                                     k0 > 0, j + NR >= nc ? next : nullptr);
    }
  }
}

void tiles(const void *ctx, int64_t begin, int64_t end) {
  const auto &g = *static_cast<const Problem *>(ctx);
  for (int64_t t = begin; t < end; ++t) {
    const int64_t m0 = t / g.tiles_n * g.tile_m, n0 = t % g.tiles_n * g.tile_n;
    tile(g, m0, std::min(g.M, m0 + g.tile_m), n0, std::min(g.N, n0 + g.tile_n));
  }
}

bool is_f32(const char *dtype) { return std::strcmp(dtype, "float32") == 0; }

}  // namespace

// Gemm(x (M, K), w (N, K)) -> x @ w^T (M, N), float32.
extern "C" int Gemm(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
                    void *extra) {
  if (nparam != 3 || ndims[0] != 2 || ndims[1] != 2 || !is_f32(dtypes[0]) || !is_f32(dtypes[1])) return 1;
  Problem g{static_cast<const float *>(params[0]), static_cast<const float *>(params[1]),
         static_cast<float *>(params[2]), shapes[0][0], shapes[1][0], shapes[0][1]};
  if (shapes[1][1] != g.K) return 2;
  if (g.M == 0 || g.N == 0) return 0;
  if (g.K == 0) {
    std::fill(g.y, g.y + g.M * g.N, 0.f);
    return 0;
  }
  auto &pool = mindkit::ThreadPool::get();
  g.kc = ceil_div(g.K, ceil_div(g.K, KC));  // near-equal blocks of at most KC
  // Enough tiles for a busy core to take fewer of them: narrower tiles first (only x is read again, from cache),
  // then M split too (each part packs w again).
  const int64_t wanted = pool.threads() > 1 ? MIN_TILES * pool.threads() : 1;
  g.tile_n = std::min(TN, round_up(g.N, NR));
  while (g.tile_n > NR && ceil_div(g.N, g.tile_n) < wanted) g.tile_n -= NR;
  g.tiles_n = ceil_div(g.N, g.tile_n);
  int64_t tiles_m = 1;
  while (g.tiles_n * tiles_m < wanted && g.M / (2 * tiles_m) >= MIN_TILE_M) tiles_m *= 2;
  g.tile_m = round_up(ceil_div(g.M, tiles_m), MR);
  tiles_m = ceil_div(g.M, g.tile_m);
  pool.run(tiles, &g, tiles_m * g.tiles_n, 1);
  return 0;
}
