// y (M, N) float32 = x (M, K) float32 @ W^T, W[n, k] = w[n, k] * scale[n, k / g] + offset[n, k / g]: weight-only int8
// with a float32 scale and offset per group of g consecutive inputs (g = K / scale.shape[1], a multiple of 8), for
// MindSpore's Custom "aot" op. Weight-only int8 decode is bound by reading the weights; MindSpore's CPU MatMul has no
// int8 x float form, so without this kernel every step would first cast the whole int8 weight to float. Built by
// mindkit/ops/int8_matmul.py with -mavx2 -mfma.
//
// M == 1: four weight rows at a time are converted in registers; per group, sum(x * w) is scaled once, and the
// offsets add offset[n, :] . xsum (x summed per group), so the offset costs no work per weight. M > 1: four rows are
// dequantized into an L1 buffer once and swept by two rows of x at a time, so the conversion is shared by all M rows.
// Single-threaded on purpose: with OpenMP, a decode step (~200 calls) ran 1.7x slower than fp32 here whenever another
// process held a core (each call's barrier waits for a descheduled thread).
#include <immintrin.h>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

struct Problem {
  const float *x;
  const int8_t *w;
  const float *scale, *offset;
  float *y;
  int64_t M, N, K, G, g;  // G groups of g inputs per row: K = G * g
};

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline __m256 load8(const int8_t *p) {
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i *>(p))));
}

inline float dot(const float *a, const float *b, int64_t n) {
  __m256 acc = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc);
  float t = hsum(acc);
  for (; i < n; ++i) t += a[i] * b[i];
  return t;
}

// M == 1: outputs n .. n + R.
template <int R>
void gemv(const Problem &p, const float *xsum, int64_t n) {
  const int64_t K = p.K, G = p.G, g = p.g;
  const int8_t *w = p.w + n * K;
  const float *s = p.scale + n * G;
  __m256 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
  for (int64_t j = 0; j < G; ++j) {
    __m256 part[R];
    for (int r = 0; r < R; ++r) part[r] = _mm256_setzero_ps();
    for (int64_t k = j * g; k < (j + 1) * g; k += 8) {
      const __m256 xv = _mm256_loadu_ps(p.x + k);
      for (int r = 0; r < R; ++r) part[r] = _mm256_fmadd_ps(load8(w + r * K + k), xv, part[r]);
    }
    for (int r = 0; r < R; ++r) acc[r] = _mm256_fmadd_ps(part[r], _mm256_broadcast_ss(s + r * G + j), acc[r]);
  }
  for (int r = 0; r < R; ++r) p.y[n + r] = hsum(acc[r]) + dot(p.offset + (n + r) * G, xsum, G);
}

// M > 1: rows n .. n + R of W as float into wf (R * K), then every row of x against them, MR rows of x at a time.
template <int R>
void dequantize(const Problem &p, int64_t n, float *wf) {
  for (int r = 0; r < R; ++r)
    for (int64_t j = 0; j < p.G; ++j) {
      const __m256 s = _mm256_set1_ps(p.scale[(n + r) * p.G + j]), o = _mm256_set1_ps(p.offset[(n + r) * p.G + j]);
      for (int64_t k = j * p.g; k < (j + 1) * p.g; k += 8)
        _mm256_storeu_ps(wf + r * p.K + k, _mm256_fmadd_ps(load8(p.w + (n + r) * p.K + k), s, o));
    }
}

template <int R, int MR>
void sweep(const Problem &p, const float *wf, int64_t n, int64_t m) {
  __m256 acc[MR][R];
  for (int i = 0; i < MR; ++i)
    for (int r = 0; r < R; ++r) acc[i][r] = _mm256_setzero_ps();
  for (int64_t k = 0; k < p.K; k += 8) {
    __m256 xv[MR];
    for (int i = 0; i < MR; ++i) xv[i] = _mm256_loadu_ps(p.x + (m + i) * p.K + k);
    for (int r = 0; r < R; ++r) {
      const __m256 wv = _mm256_loadu_ps(wf + r * p.K + k);
      for (int i = 0; i < MR; ++i) acc[i][r] = _mm256_fmadd_ps(wv, xv[i], acc[i][r]);
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int r = 0; r < R; ++r) p.y[(m + i) * p.N + n + r] = hsum(acc[i][r]);
}

template <int R>
void panel(const Problem &p, float *wf, int64_t n) {
  dequantize<R>(p, n, wf);
  int64_t m = 0;
  for (; m + 2 <= p.M; m += 2) sweep<R, 2>(p, wf, n, m);
  if (m < p.M) sweep<R, 1>(p, wf, n, m);
}

void matmul(const Problem &p) {
  const int64_t full = p.N / 4 * 4;
  if (p.M == 1) {
    std::vector<float> xsum(p.G);
    for (int64_t j = 0; j < p.G; ++j) {
      __m256 acc = _mm256_setzero_ps();
      for (int64_t k = j * p.g; k < (j + 1) * p.g; k += 8) acc = _mm256_add_ps(acc, _mm256_loadu_ps(p.x + k));
      xsum[j] = hsum(acc);
    }
    for (int64_t n = 0; n < full; n += 4) gemv<4>(p, xsum.data(), n);
    for (int64_t n = full; n < p.N; ++n) gemv<1>(p, xsum.data(), n);
  } else {
    std::vector<float> wf(4 * p.K);
    for (int64_t n = 0; n < full; n += 4) panel<4>(p, wf.data(), n);
    for (int64_t n = full; n < p.N; ++n) panel<1>(p, wf.data(), n);
  }
}

}  // namespace

extern "C" int Int8MatMul(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
                          void *extra) {
  if (nparam != 5 || ndims[0] != 2 || ndims[1] != 2 || ndims[2] != 2 || ndims[3] != 2) return 1;
  if (std::strcmp(dtypes[0], "float32") || std::strcmp(dtypes[1], "int8") || std::strcmp(dtypes[2], "float32") ||
      std::strcmp(dtypes[3], "float32"))
    return 2;
  Problem p{static_cast<const float *>(params[0]), static_cast<const int8_t *>(params[1]),
            static_cast<const float *>(params[2]), static_cast<const float *>(params[3]), static_cast<float *>(params[4]),
            shapes[0][0], shapes[1][0], shapes[0][1], shapes[2][1], 0};
  if (shapes[1][1] != p.K || shapes[2][0] != p.N || shapes[3][0] != p.N || shapes[3][1] != p.G) return 3;
  if (p.G <= 0 || p.K % p.G || (p.K / p.G) % 8) return 4;
  p.g = p.K / p.G;
  matmul(p);
  return 0;
}
