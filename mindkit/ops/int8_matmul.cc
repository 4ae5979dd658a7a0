// y (M, N) float32 = (x (M, K) float32 @ w (N, K) int8 ^T) * scale (N,) float32, for MindSpore's Custom "aot" op.
// Weight-only int8 decode is bound by reading the weights; MindSpore's CPU MatMul has no int8 x float form, so
// without this kernel every step would first cast the whole int8 weight to float. Rows of w are converted to float
// once per call (in registers for M == 1, into an L1 buffer otherwise) and shared by all rows of x. Built by
// mindkit/ops/int8_matmul.py with -mavx2 -mfma. Single-threaded on purpose: with OpenMP, a decode step (~200 calls)
// ran 1.7x slower than fp32 here whenever another process held a core (each call's barrier waits for a
// descheduled thread); single-threaded it was faster than fp32 both on a busy and on a quieter machine.
#include <immintrin.h>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline __m256 load8(const int8_t *p) {
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i *>(p))));
}

// One weight row against one row of x (the N % 4 leftover rows).
inline float row_dot(const float *x, const int8_t *w, int64_t K) {
  __m256 acc = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 8 <= K; k += 8) acc = _mm256_fmadd_ps(load8(w + k), _mm256_loadu_ps(x + k), acc);
  float t = hsum(acc);
  for (; k < K; ++k) t += x[k] * w[k];
  return t;
}

// M == 1: four weight rows at a time, so each x load feeds four FMAs.
inline void gemv4(const float *x, int64_t K, const int8_t *w, const float *s, float *y) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  int64_t k = 0;
  for (; k + 8 <= K; k += 8) {
    __m256 xv = _mm256_loadu_ps(x + k);
    a0 = _mm256_fmadd_ps(load8(w + k), xv, a0);
    a1 = _mm256_fmadd_ps(load8(w + K + k), xv, a1);
    a2 = _mm256_fmadd_ps(load8(w + 2 * K + k), xv, a2);
    a3 = _mm256_fmadd_ps(load8(w + 3 * K + k), xv, a3);
  }
  float t[4] = {hsum(a0), hsum(a1), hsum(a2), hsum(a3)};
  for (int r = 0; r < 4; ++r) {
    for (int64_t j = k; j < K; ++j) t[r] += x[j] * w[r * K + j];
    y[r] = t[r] * s[r];
  }
}

// M > 1: a panel of 4 weight rows is converted to float once, then swept by 2 rows of x at a time (8 FMAs per
// 6 loads), so the conversion is shared by all M rows.
void panel(const float *x, int64_t M, int64_t K, const float *wf, const float *s, float *y, int64_t N) {
  int64_t m = 0;
  for (; m + 2 <= M; m += 2) {
    __m256 acc[8];
    for (int i = 0; i < 8; ++i) acc[i] = _mm256_setzero_ps();
    const float *x0 = x + m * K, *x1 = x0 + K;
    int64_t k = 0;
    for (; k + 8 <= K; k += 8) {
      __m256 a = _mm256_loadu_ps(x0 + k), b = _mm256_loadu_ps(x1 + k);
      for (int r = 0; r < 4; ++r) {
        __m256 w = _mm256_loadu_ps(wf + r * K + k);
        acc[r] = _mm256_fmadd_ps(w, a, acc[r]);
        acc[4 + r] = _mm256_fmadd_ps(w, b, acc[4 + r]);
      }
    }
    for (int r = 0; r < 4; ++r) {
      float t0 = hsum(acc[r]), t1 = hsum(acc[4 + r]);
      for (int64_t j = k; j < K; ++j) t0 += x0[j] * wf[r * K + j], t1 += x1[j] * wf[r * K + j];
      y[m * N + r] = t0 * s[r];
      y[(m + 1) * N + r] = t1 * s[r];
    }
  }
  for (; m < M; ++m)
    for (int r = 0; r < 4; ++r) {
      float t = 0.f;
      for (int64_t j = 0; j < K; ++j) t += x[m * K + j] * wf[r * K + j];
      y[m * N + r] = t * s[r];
    }
}

void matmul(const float *x, const int8_t *w, const float *scale, float *y, int64_t M, int64_t N, int64_t K) {
  const int64_t blocks = N / 4;
  if (M == 1) {
    for (int64_t n = 0; n < blocks; ++n) gemv4(x, K, w + 4 * n * K, scale + 4 * n, y + 4 * n);
  } else {
    std::vector<float> wf(4 * K);
    for (int64_t n = 0; n < blocks; ++n) {
      for (int64_t j = 0; j < 4 * K; ++j) wf[j] = w[4 * n * K + j];
      panel(x, M, K, wf.data(), scale + 4 * n, y + 4 * n, N);
    }
  }
  for (int64_t n = blocks * 4; n < N; ++n)
    for (int64_t m = 0; m < M; ++m) y[m * N + n] = row_dot(x + m * K, w + n * K, K) * scale[n];
}

}  // namespace

extern "C" int Int8MatMul(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
                          void *extra) {
  if (nparam != 4 || ndims[0] != 2 || ndims[1] != 2 || ndims[2] != 1) return 1;
  if (std::strcmp(dtypes[0], "float32") || std::strcmp(dtypes[1], "int8") || std::strcmp(dtypes[2], "float32"))
    return 2;
  int64_t M = shapes[0][0], K = shapes[0][1], N = shapes[1][0];
  if (shapes[1][1] != K || shapes[2][0] != N) return 3;
  matmul(static_cast<const float *>(params[0]), static_cast<const int8_t *>(params[1]),
         static_cast<const float *>(params[2]), static_cast<float *>(params[3]), M, N, K);
  return 0;
}
