#include "autograd/thread_pool.h"

#include <algorithm>
#include <cstdlib>
#include <string>

#include "autograd/error.h"

extern "C" void openblas_set_num_threads(int num_threads);

namespace hd {
namespace {
thread_local bool t_inside_pool_task = false;
}

ThreadPool::ThreadPool(int num_threads) {
  HD_CHECK(num_threads >= 1, "ThreadPool: num_threads must be >= 1, got ", num_threads);
  for (int i = 0; i + 1 < num_threads; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  work_ready_.notify_all();
  for (auto& w : workers_) w.join();
}

void ThreadPool::run_chunk(int64_t chunk) {
  int64_t b = job_begin_ + chunk * job_chunk_size_;
  int64_t e = std::min(job_end_, b + job_chunk_size_);
  if (b < e) (*job_)(b, e);
}

void ThreadPool::worker_loop(int index) {
  uint64_t seen = 0;
  for (;;) {
    std::unique_lock<std::mutex> lock(mutex_);
    work_ready_.wait(lock, [&] { return stop_ || generation_ != seen; });
    if (stop_) return;
    seen = generation_;
    int64_t chunk = index + 1;  // chunk 0 belongs to the caller
    lock.unlock();
    if (chunk < job_chunks_) {
      t_inside_pool_task = true;
      try {
        run_chunk(chunk);
      } catch (...) {
        std::lock_guard<std::mutex> g(mutex_);
        if (!error_) error_ = std::current_exception();
      }
      t_inside_pool_task = false;
    }
    lock.lock();
    if (--pending_ == 0) work_done_.notify_one();
  }
}

void ThreadPool::parallel_for(int64_t begin, int64_t end, int64_t grain,
                              const std::function<void(int64_t, int64_t)>& fn) {
  if (end <= begin) return;
  grain = std::max<int64_t>(grain, 1);
  int64_t n = end - begin;
  int64_t chunks = std::min<int64_t>(num_threads(), (n + grain - 1) / grain);
  if (chunks <= 1 || t_inside_pool_task) {
    fn(begin, end);
    return;
  }
  std::unique_lock<std::mutex> lock(mutex_);
  job_ = &fn;
  job_begin_ = begin;
  job_end_ = end;
  job_chunks_ = chunks;
  job_chunk_size_ = (n + chunks - 1) / chunks;
  pending_ = int(workers_.size());
  error_ = nullptr;
  ++generation_;
  lock.unlock();
  work_ready_.notify_all();

  std::exception_ptr own_error;
  t_inside_pool_task = true;
  try {
    run_chunk(0);
  } catch (...) {
    own_error = std::current_exception();
  }
  t_inside_pool_task = false;

  lock.lock();
  work_done_.wait(lock, [&] { return pending_ == 0; });
  job_ = nullptr;
  std::exception_ptr err = own_error ? own_error : error_;
  lock.unlock();
  if (err) std::rethrow_exception(err);
}

ThreadPool& cpu_thread_pool() {
  static ThreadPool pool([] {
    int n = int(std::max(1u, std::thread::hardware_concurrency()));
    if (const char* env = std::getenv("HD_NUM_THREADS")) {
      try {
        n = std::stoi(env);
      } catch (const std::exception&) {
        throw Error(detail::concat("HD_NUM_THREADS must be a positive integer, got '", env, "'"));
      }
      HD_CHECK(n >= 1, "HD_NUM_THREADS must be a positive integer, got '", env, "'");
    }
    // OpenBLAS runs inside our tasks, single-threaded: see the note in thread_pool.h.
    openblas_set_num_threads(1);
    return n;
  }());
  return pool;
}

}  // namespace hd
