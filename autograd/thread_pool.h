// The one thread pool for CPU kernels.
//
// Why one pool: OpenBLAS has its own threads, and two pools on two cores oversubscribe (each
// spins while the other works). We run OpenBLAS single-threaded (set once when the pool is
// created) and parallelise GEMMs ourselves by splitting them over this pool, so at any moment
// there are exactly `num_threads()` busy threads.
//
// Results never depend on the thread count: kernels split work by output element (each computed
// by one thread, in a fixed order), and full reductions use fixed-size blocks (see ops/cpu).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace hd {

class ThreadPool {
 public:
  explicit ThreadPool(int num_threads);
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
  // The current job (protected by mutex_, read by workers after wake-up).
  const std::function<void(int64_t, int64_t)>* job_ = nullptr;
  int64_t job_begin_ = 0, job_end_ = 0, job_chunks_ = 0, job_chunk_size_ = 0;
  uint64_t generation_ = 0;
  int pending_ = 0;
  std::exception_ptr error_;
  bool stop_ = false;
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
