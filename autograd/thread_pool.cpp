#include "autograd/thread_pool.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <string>

#include "autograd/error.h"

extern "C" void openblas_set_num_threads(int num_threads);

namespace hd {
namespace {
thread_local bool t_inside_pool_task = false;

int64_t spin_ns_from_env(int num_threads) {
  const char* env = std::getenv("HD_POOL_SPIN_US");
  // More threads than cores: a spinning thread would hold a core another one needs.
  if (!env) return num_threads > int(std::thread::hardware_concurrency()) ? 0 : 50'000;
  try {
    size_t used = 0;
    const long long us = std::stoll(env, &used);
    if (used == std::string(env).size() && us >= 0 && us <= 1'000'000) return us * 1000;
  } catch (const std::exception&) {
  }
  throw Error(
      detail::concat("HD_POOL_SPIN_US must be microseconds in [0, 1000000], got '", env, "'"));
}

// Spins until done() or spin_ns have passed; true if done() became true.
template <class Done>
bool spin_until(int64_t spin_ns, Done done) {
  if (spin_ns <= 0) return done();
  const auto until = std::chrono::steady_clock::now() + std::chrono::nanoseconds(spin_ns);
  for (;;) {
    for (int i = 0; i < 64; ++i) {
      if (done()) return true;
      __builtin_ia32_pause();
    }
    if (std::chrono::steady_clock::now() >= until) return done();
  }
}
}  // namespace

ThreadPool::ThreadPool(int num_threads, int64_t spin_us)
    : spin_ns_(spin_us < 0 ? spin_ns_from_env(num_threads) : spin_us * 1000) {
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
  auto woken = [&] { return stop_.load() || generation_.load() != seen; };
  for (;;) {
    if (!spin_until(spin_ns_, woken)) {
      std::unique_lock<std::mutex> lock(mutex_);
      work_ready_.wait(lock, woken);
    }
    if (stop_) return;
    seen = generation_.load();
    const int64_t chunk = index + 1;  // chunk 0 belongs to the caller
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
    if (pending_.fetch_sub(1) == 1) {
      // Under the mutex, so a caller between its predicate check and its wait cannot miss it.
      std::lock_guard<std::mutex> g(mutex_);
      work_done_.notify_one();
    }
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
  generation_.fetch_add(1);  // publishes the job to spinning workers
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

  auto all_done = [&] { return pending_.load() == 0; };
  spin_until(spin_ns_, all_done);
  lock.lock();
  work_done_.wait(lock, all_done);
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
