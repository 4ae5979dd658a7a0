// y (M, N) float32 = x (M, K) float32 @ W^T, W[n, k] = w[n, k] * scale[n, k / g] + offset[n, k / g]: weight-only int8
// with a float32 scale and offset per group of g consecutive inputs (g = K / scale.shape[1], a multiple of 8), for
// MindSpore's Custom "aot" op. Weight-only int8 decode is bound by reading the weights; MindSpore's CPU MatMul has no
// int8 x float form, so without this kernel every step would first cast the whole int8 weight to float. Built by
// mindkit/ops/aot.py (-mavx2 -mfma -std=c++20 -pthread among its flags).
//
// M == 1: four weight rows at a time are converted in registers; per group, sum(x * q) is scaled once, and the offsets
// add offset[n, :] . xsum (x summed per group), so an offset costs no work per weight. 1 < M <= 4: two rows are
// dequantized in registers and used by every row of x. M > 4: four rows are dequantized into an L1 buffer once and
// swept by three rows of x at a time. All prefetch the weight rows two blocks ahead: streaming them from memory bounds
// decode, and the hardware prefetcher alone left the M == 1 path 1.7x slower here.
//
// Two threads: a persistent helper takes chunks of the output columns of large calls (1.2-1.5x per call on an idle
// machine, where two cores read memory 1.7x faster than one). An OpenMP barrier made a decode step 1.7x slower than
// fp32 whenever another process held a core (every call waited for a descheduled thread), so here the caller never
// waits for a helper that has not started: chunks go to whichever thread claims them first, the helper spins only
// briefly between calls before it sleeps, and a call that waited long, next to its own share of the work, for the
// helper's last chunk rests the helper for the next few hundred calls (the other core is busy). With another process
// on both cores, a decode step's int8 calls still took 27 ms against 30 ms on one thread. MINDKIT_KERNEL_THREADS=1 keeps
// every call on the caller's thread.
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <thread>
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

inline void prefetch(const int8_t *p) { _mm_prefetch(reinterpret_cast<const char *>(p), _MM_HINT_T0); }

inline float dot(const float *a, const float *b, int64_t n) {
  __m256 acc = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc);
  float t = hsum(acc);
  for (; i < n; ++i) t += a[i] * b[i];
  return t;
}

// M == 1: outputs n .. n + R; rows two blocks ahead are prefetched.
template <int R>
void gemv(const Problem &p, const float *xsum, int64_t n) {
  const int64_t K = p.K, G = p.G, g = p.g;
  const int8_t *w = p.w + n * K;
  const float *s = p.scale + n * G;
  __m256 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
  for (int64_t j = 0; j < G; ++j) {
    if (j * g % 64 == 0)
      for (int r = 0; r < R; ++r) prefetch(w + (r + 2 * R) * K + j * g);
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

// M > 4: rows n .. n + R of W as float into wf (R * K), then every row of x against them, MR rows of x at a time.
template <int R>
void dequantize(const Problem &p, int64_t n, float *wf) {
  for (int r = 0; r < R; ++r) {
    const int8_t *w = p.w + (n + r) * p.K;
    for (int64_t j = 0; j < p.G; ++j) {
      if (j * p.g % 64 == 0) prefetch(w + 2 * R * p.K + j * p.g);
      const __m256 s = _mm256_set1_ps(p.scale[(n + r) * p.G + j]), o = _mm256_set1_ps(p.offset[(n + r) * p.G + j]);
      for (int64_t k = j * p.g; k < (j + 1) * p.g; k += 8)
        _mm256_storeu_ps(wf + r * p.K + k, _mm256_fmadd_ps(load8(w + k), s, o));
    }
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
      __m256 wv = _mm256_loadu_ps(wf + r * p.K + k);
      asm("" : "+x"(wv));  // one load, not one per x row
      for (int i = 0; i < MR; ++i) acc[i][r] = _mm256_fmadd_ps(wv, xv[i], acc[i][r]);
    }
  }
  for (int i = 0; i < MR; ++i) {
    float *y = p.y + (m + i) * p.N + n;
    if (R == 4) {  // the four sums at once
      const __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(acc[i][0], acc[i][1]), _mm256_hadd_ps(acc[i][2], acc[i][3]));
      _mm_storeu_ps(y, _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1)));
    } else {
      for (int r = 0; r < R; ++r) y[r] = hsum(acc[i][r]);
    }
  }
}

// 1 < M <= 4: rows n .. n + R of W dequantized in registers, each against all MR (= M) rows of x.
template <int R, int MR>
void small(const Problem &p, int64_t n) {
  const int8_t *w = p.w + n * p.K;
  __m256 acc[R][MR];
  for (int r = 0; r < R; ++r)
    for (int i = 0; i < MR; ++i) acc[r][i] = _mm256_setzero_ps();
  for (int64_t j = 0; j < p.G; ++j) {
    if (j * p.g % 64 == 0)
      for (int r = 0; r < R; ++r) prefetch(w + (r + 2 * R) * p.K + j * p.g);
    __m256 s[R], o[R];
    for (int r = 0; r < R; ++r) {
      s[r] = _mm256_broadcast_ss(p.scale + (n + r) * p.G + j);
      o[r] = _mm256_broadcast_ss(p.offset + (n + r) * p.G + j);
    }
    for (int64_t k = j * p.g; k < (j + 1) * p.g; k += 8) {
      __m256 xv[MR];
      for (int i = 0; i < MR; ++i) xv[i] = _mm256_loadu_ps(p.x + i * p.K + k);
      for (int r = 0; r < R; ++r) {
        const __m256 wv = _mm256_fmadd_ps(load8(w + r * p.K + k), s[r], o[r]);
        for (int i = 0; i < MR; ++i) acc[r][i] = _mm256_fmadd_ps(wv, xv[i], acc[r][i]);
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int i = 0; i < MR; ++i) p.y[i * p.N + n + r] = hsum(acc[r][i]);
}

template <int MR>
void small_columns(const Problem &p, int64_t n0, int64_t n1) {
  int64_t n = n0;
  for (; n + 2 <= n1; n += 2) small<2, MR>(p, n);
  if (n < n1) small<1, MR>(p, n);
}

template <int R>
void panel(const Problem &p, float *wf, int64_t n) {
  dequantize<R>(p, n, wf);
  int64_t m = 0;
  for (; m + 3 <= p.M; m += 3) sweep<R, 3>(p, wf, n, m);
  if (p.M - m == 2) sweep<R, 2>(p, wf, n, m);
  else if (p.M - m == 1) sweep<R, 1>(p, wf, n, m);
}

// Output columns [n0, n1) (n0 a multiple of 4) for every row of x.
void columns(const Problem &p, int64_t n0, int64_t n1) {
  const int64_t full = n0 + (n1 - n0) / 4 * 4;
  if (p.M == 1) {
    thread_local std::vector<float> xsum;
    xsum.resize(p.G);
    for (int64_t j = 0; j < p.G; ++j) {
      __m256 acc = _mm256_setzero_ps();
      for (int64_t k = j * p.g; k < (j + 1) * p.g; k += 8) acc = _mm256_add_ps(acc, _mm256_loadu_ps(p.x + k));
      xsum[j] = hsum(acc);
    }
    for (int64_t n = n0; n < full; n += 4) gemv<4>(p, xsum.data(), n);
    for (int64_t n = full; n < n1; ++n) gemv<1>(p, xsum.data(), n);
  } else if (p.M <= 4) {
    (p.M == 2 ? small_columns<2> : p.M == 3 ? small_columns<3> : small_columns<4>)(p, n0, n1);
  } else {
    thread_local std::vector<float> wf;
    wf.resize(4 * p.K);
    for (int64_t n = n0; n < full; n += 4) panel<4>(p, wf.data(), n);
    for (int64_t n = full; n < n1; ++n) panel<1>(p, wf.data(), n);
  }
}

using Clock = std::chrono::steady_clock;

// The ticket holds a job's epoch, its number of chunks and the next unclaimed one, so a claim (a CAS on it) succeeds
// only for the job it was read for, and the job is read only after a successful claim.
constexpr int kIndexBits = 20;
constexpr uint64_t kIndexMask = (uint64_t(1) << kIndexBits) - 1;
constexpr uint64_t kEpochMask = (uint64_t(1) << (64 - 2 * kIndexBits)) - 1;
inline uint64_t ticket(uint64_t epoch, uint64_t chunks, uint64_t next) {
  return epoch << (2 * kIndexBits) | chunks << kIndexBits | next;
}

class Helper {
 public:
  static Helper *get() {
    static Helper *helper = make();
    return helper;
  }

  // Computes p with the helper's help; false (nothing done) when another call holds it or it is resting.
  bool run(const Problem &p) {
    std::unique_lock<std::mutex> lock(busy_, std::try_to_lock);
    if (!lock) return false;
    if (rest_ > 0) {
      --rest_;
      return false;
    }
    const int64_t chunk = std::max<int64_t>(16, (kChunkWeights / (p.K * p.M)) / 4 * 4);
    const uint64_t chunks = (p.N + chunk - 1) / chunk, epoch = ((ticket_.load() >> (2 * kIndexBits)) + 1) & kEpochMask;
    if (chunks > kIndexMask) return false;
    job_ = p;
    chunk_ = chunk;
    done_.store(0, std::memory_order_relaxed);
    ticket_.store(ticket(epoch, chunks, 0), std::memory_order_release);
    bell_.fetch_add(1, std::memory_order_release);
    bell_.notify_one();
    const auto start = Clock::now();
    done_.fetch_add(work(epoch), std::memory_order_acq_rel);
    // the helper's last chunk: spin; a wait that is long next to this thread's own work means the helper was
    // descheduled (the other core is busy), so sleep to let it run here, and rest it a while
    const auto idle = Clock::now();
    const auto patience = kLate + (idle - start) / 4;
    bool late = false;
    for (uint32_t done; (done = done_.load(std::memory_order_acquire)) < chunks;) {
      if (!late && Clock::now() - idle < patience) {
        _mm_pause();
        continue;
      }
      late = true;
      done_.wait(done, std::memory_order_acquire);
    }
    penalty_ = late ? std::min(2 * penalty_, kMaxPenalty) : kMinPenalty;
    rest_ = late ? penalty_ : 0;
    return true;
  }

 private:
  static constexpr int64_t kChunkWeights = 32768;   // about 5 us of work
  static constexpr auto kSpin = std::chrono::microseconds(50);   // then the helper sleeps until the next call
  static constexpr auto kLate = std::chrono::microseconds(20);  // + a quarter of the caller's own time
  static constexpr int kMinPenalty = 256, kMaxPenalty = 8192;  // calls without the helper after a late one

  static Helper *make() {
    const char *env = std::getenv("MINDKIT_KERNEL_THREADS");
    if (std::thread::hardware_concurrency() < 2 || (env && std::atoi(env) == 1)) return nullptr;
    return new Helper;  // lives as long as the process; its thread is detached
  }

  Helper() { std::thread([this] { loop(); }).detach(); }

  // Claims and runs chunks of the job of ``epoch`` until none is left; returns how many it ran.
  uint32_t work(uint64_t epoch) {
    uint32_t ran = 0;
    for (uint64_t t = ticket_.load(std::memory_order_acquire);;) {
      const uint64_t chunks = t >> kIndexBits & kIndexMask, next = t & kIndexMask;
      if (t >> (2 * kIndexBits) != epoch || next >= chunks) return ran;
      if (!ticket_.compare_exchange_weak(t, t + 1, std::memory_order_acq_rel, std::memory_order_acquire)) continue;
      columns(job_, next * chunk_, std::min<int64_t>(job_.N, (next + 1) * chunk_));
      ++ran;
      t = ticket_.load(std::memory_order_acquire);
    }
  }

  void loop() {
    for (uint32_t heard = bell_.load(std::memory_order_acquire);;) {
      const auto start = Clock::now();
      while (bell_.load(std::memory_order_acquire) == heard) {
        if (Clock::now() - start < kSpin) {
          _mm_pause();
          continue;
        }
        bell_.wait(heard, std::memory_order_acquire);
      }
      heard = bell_.load(std::memory_order_acquire);
      const uint32_t ran = work(ticket_.load(std::memory_order_acquire) >> (2 * kIndexBits));
      if (ran) {
        done_.fetch_add(ran, std::memory_order_acq_rel);
        done_.notify_one();
      }
    }
  }

  std::mutex busy_;
  Problem job_{};
  int64_t chunk_ = 0;
  int rest_ = 0, penalty_ = kMinPenalty;
  std::atomic<uint64_t> ticket_{0};
  std::atomic<uint32_t> bell_{0};
  std::atomic<uint32_t> done_{0};
};

void matmul(const Problem &p) {
  Helper *helper = p.M * p.N * p.K >= (1 << 17) ? Helper::get() : nullptr;
  if (!helper || !helper->run(p)) columns(p, 0, p.N);
}

}  // namespace

// Int8MatMul(x, w, scale, offset[, residual (M, N)]) -> x @ dequantized(w)^T (+ residual): the residual is the
// stream a block's output projection adds to, in the same launch.
extern "C" int Int8MatMul(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
                          void *extra) {
  if ((nparam != 5 && nparam != 6) || ndims[0] != 2 || ndims[1] != 2 || ndims[2] != 2 || ndims[3] != 2) return 1;
  if (std::strcmp(dtypes[0], "float32") || std::strcmp(dtypes[1], "int8") || std::strcmp(dtypes[2], "float32") ||
      std::strcmp(dtypes[3], "float32"))
    return 2;
  Problem p{static_cast<const float *>(params[0]),
            static_cast<const int8_t *>(params[1]),
            static_cast<const float *>(params[2]),
            static_cast<const float *>(params[3]),
            static_cast<float *>(params[nparam - 1]),
            shapes[0][0], shapes[1][0], shapes[0][1], shapes[2][1], 0};
  if (shapes[1][1] != p.K || shapes[2][0] != p.N || shapes[3][0] != p.N || shapes[3][1] != p.G) return 3;
  if (p.G <= 0 || p.K % p.G || (p.K / p.G) % 8) return 4;
  const bool residual = nparam == 6;
  if (residual && (std::strcmp(dtypes[4], "float32") || ndims[4] != 2 || shapes[4][0] * shapes[4][1] != p.M * p.N))
    return 3;
  p.g = p.K / p.G;
  matmul(p);
  if (residual) {
    const float *r = static_cast<const float *>(params[4]);
    float *y = p.y;
#pragma omp simd
    for (int64_t i = 0; i < p.M * p.N; ++i) y[i] += r[i];
  }
  return 0;
}
