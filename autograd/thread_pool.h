// The one thread pool for CPU kernels.
//
// Why one pool: OpenBLAS has its own threads, and two pools on two cores oversubscribe (each
// spins while the other works). We run OpenBLAS single-threaded (set once when the pool is
// created) and parallelise GEMMs ourselves by splitting them over this pool, so at any moment
// there are exactly `num_threads()` busy threads.
//
// Results never depend on the thread count: kernels split work by output element (each computed
// by one thread, in a fixed order), and full reductions use fixed-size blocks (see ops/cpu).
//
// Waiting: a training step issues hundreds of parallel_for calls, most a few hundred
// microseconds long. Blocking on a condition variable between them cost a futex wake-up per
// call and per side, and the woken thread starts tens of microseconds later (perf on the bf16
// ViT step: ~740 context switches per step, 3 % of the samples in the kernel). So both sides
// first spin for a short while (HD_POOL_SPIN_US, default 50 us, 0 = block at once) watching an
// atomic, and only then block, as OpenMP runtimes do: 785 -> 34 switches per step, the bf16
// step 653 -> 599 ms (medians of 8 alternated runs, Zen 4 EPYC, 2 threads). Spinning costs CPU
// only when the pool is idle, and for at most that long. A pool with more threads than cores
// does not spin by default; with several ranks per host and no HD_NUM_THREADS, set it to 0.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace hd {

class ThreadPool {
 public:
  // spin_us: how long an idle side spins before it blocks; -1 reads HD_POOL_SPIN_US (default
  // 50, or 0 with more threads than cores), and a bad value there throws an hd::Error naming it.
  explicit ThreadPool(int num_threads, int64_t spin_us = -1);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return int(workers_.size()) + 1; }  // workers + the caller

  // Calls fn(begin, end) on disjoint chunks covering [begin, end), each at least `grain` long
  // (except the last), and returns when all are done. The caller thread takes part. Nested
  // calls from inside a task run serially. Exceptions from tasks are rethrown here.
  void parallel_for(int64_t begin, int64_t end, int64_t grain,
                    const std::function<void(int64_t, int64_t)>& fn);

 private:
  void worker_loop(int index);
  void run_chunk(int64_t chunk);

  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable work_ready_, work_done_;
  // The current job: written under mutex_ before generation_ is bumped (release), read by a
  // worker after it sees the new generation (acquire), whether it spun or slept.
  const std::function<void(int64_t, int64_t)>* job_ = nullptr;
  int64_t job_begin_ = 0, job_end_ = 0, job_chunks_ = 0, job_chunk_size_ = 0;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  std::exception_ptr error_;  // under mutex_
  std::atomic<bool> stop_{false};
  int64_t spin_ns_ = 0;
};

// The process-wide pool (HD_NUM_THREADS, else the number of cores). Part of the device
// registry, the one piece of global state the design allows.
ThreadPool& cpu_thread_pool();

// Convenience: cpu_thread_pool().parallel_for(...).
inline void parallel_for(int64_t begin, int64_t end, int64_t grain,
                         const std::function<void(int64_t, int64_t)>& fn) {
  cpu_thread_pool().parallel_for(begin, end, grain, fn);
}

}  // namespace hd
