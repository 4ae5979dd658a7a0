// Splits a kernel's work over this machine's cores with persistent worker threads, robust to a busy machine.
// Work is cut into chunks that the calling thread and the workers claim from a shared counter, so the caller never
// waits for a worker that has not started (descheduled, or asleep): it does the unclaimed chunks itself and waits
// only for chunks a worker is running. Workers spin briefly between calls (a decode step launches kernels every
// few tens of microseconds) and then sleep. MINDKIT_KERNEL_THREADS caps the thread count (default: all cores).
#pragma once
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

namespace mindkit {

inline void cpu_relax() {
#if defined(__x86_64__)
  _mm_pause();
#else
  std::this_thread::yield();
#endif
}

class ThreadPool {
 public:
  using Fn = void (*)(const void *ctx, int64_t begin, int64_t end);

  static ThreadPool &get() {
    static ThreadPool *pool = new ThreadPool;  // one per library, started on first use, never torn down (its
    return *pool;                               // threads end with the process)
  }

  int threads() const { return static_cast<int>(workers_.size()) + 1; }

  // fn(ctx, begin, end) over [0, n) in chunks of ``grain`` (the last may be shorter).
  void run(Fn fn, const void *ctx, int64_t n, int64_t grain) {
    const int64_t chunks = (n + grain - 1) / grain;
    if (workers_.empty() || chunks < 2 || chunks >= static_cast<int64_t>(kMaxChunks)) {
      fn(ctx, 0, n);
      return;
    }
    std::unique_lock<std::mutex> call(call_mu_);  // one job at a time (MindSpore may launch from several threads)
    fn_ = fn, ctx_ = ctx, n_ = n, grain_ = grain;
    done_.store(0, std::memory_order_relaxed);
    const uint64_t job = (job_of(state_.load(std::memory_order_relaxed)) + 1) & kJobMask;
    {
      std::lock_guard<std::mutex> lock(mu_);
      state_.store(job << 40 | static_cast<uint64_t>(chunks) << 20, std::memory_order_release);
    }
    cv_.notify_all();
    work(job);
    while (done_.load(std::memory_order_acquire) < chunks) cpu_relax();
  }

 private:
  // state_: job number (24 bits) | chunks (20) | next chunk to claim (20), so a claim is checked against the job
  // it belongs to and a worker waking late for a finished job claims nothing.
  static constexpr uint64_t kMaxChunks = 1 << 20, kJobMask = (1 << 24) - 1;

  ThreadPool() {
    int n = static_cast<int>(std::thread::hardware_concurrency());
    if (const char *cap = std::getenv("MINDKIT_KERNEL_THREADS")) n = std::min(n, std::atoi(cap));
    for (int i = 1; i < n; ++i) workers_.emplace_back([this] { loop(); });
  }

  static uint64_t job_of(uint64_t s) { return (s >> 40) & kJobMask; }

  void work(uint64_t job) {
    uint64_t s = state_.load(std::memory_order_acquire);
    for (;;) {
      const int64_t c = static_cast<int64_t>(s & (kMaxChunks - 1));
      if (job_of(s) != job || c >= static_cast<int64_t>((s >> 20) & (kMaxChunks - 1))) return;
      if (!state_.compare_exchange_weak(s, s + 1, std::memory_order_acq_rel)) continue;
      fn_(ctx_, c * grain_, std::min(n_, (c + 1) * grain_));
      done_.fetch_add(1, std::memory_order_acq_rel);
      s = state_.load(std::memory_order_acquire);
    }
  }

  void loop() {
    uint64_t seen = job_of(state_.load());
    for (;;) {
      const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(200);
      for (int spin = 0; job_of(state_.load(std::memory_order_acquire)) == seen; ++spin) {
        if (spin % 64 == 0 && std::chrono::steady_clock::now() > until) {
          std::unique_lock<std::mutex> lock(mu_);
          cv_.wait(lock, [&] { return job_of(state_.load()) != seen; });
        }
        cpu_relax();
      }
      seen = job_of(state_.load(std::memory_order_acquire));
      work(seen);
    }
  }

  std::vector<std::thread> workers_;
  std::mutex call_mu_, mu_;
  std::condition_variable cv_;
  std::atomic<uint64_t> state_{0};
  std::atomic<int64_t> done_{0};
  Fn fn_ = nullptr;
  const void *ctx_ = nullptr;
  int64_t n_ = 0, grain_ = 1;
};

}  // namespace mindkit
