// Backend-independent pieces of the process group: names, counters, Work, the abort guard.
#include "parallel/process_group.h"

#include <cstdio>
#include <cstdlib>

#include "autograd/error.h"
#include "parallel/work_state.h"

namespace hd::parallel {

const char* collective_name(Collective c) {
  switch (c) {
    case Collective::all_reduce:
      return "all_reduce";
    case Collective::all_gather:
      return "all_gather";
    case Collective::reduce_scatter:
      return "reduce_scatter";
    case Collective::broadcast:
      return "broadcast";
    case Collective::barrier:
      return "barrier";
  }
  return "?";
}

const char* reduce_op_name(ReduceOp op) {
  switch (op) {
    case ReduceOp::sum:
      return "sum";
    case ReduceOp::avg:
      return "avg";
    case ReduceOp::max:
      return "max";
  }
  return "?";
}

double bus_factor(Collective kind, int n) {
  switch (kind) {
    case Collective::all_reduce:
      return 2.0 * (n - 1) / n;
    case Collective::all_gather:
    case Collective::reduce_scatter:
      return double(n - 1) / n;
    case Collective::broadcast:
      return n > 1 ? 1.0 : 0.0;
    case Collective::barrier:
      return 0.0;
  }
  return 0.0;
}

void Work::State::wait() {
  std::unique_lock<std::mutex> lock(mutex_);
  cv_.wait(lock, [&] { return done_; });
  if (error_) std::rethrow_exception(error_);
}

bool Work::State::done() {
  std::lock_guard<std::mutex> lock(mutex_);
  return done_;
}

void Work::State::complete(std::exception_ptr error) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    done_ = true;
    error_ = error;
  }
  cv_.notify_all();
}

void Work::wait() const {
  HD_CHECK(state_, "Work::wait on an empty handle");
  state_->wait();
}

void Work::synchronize() const {
  HD_CHECK(state_, "Work::synchronize on an empty handle");
  state_->synchronize();
}

bool Work::done() const {
  return !state_ || state_->done();
}

CollectiveStats ProcessGroup::stats() const {
  std::lock_guard<std::mutex> lock(stats_mutex_);
  return stats_;
}

void ProcessGroup::reset_stats() {
  std::lock_guard<std::mutex> lock(stats_mutex_);
  stats_ = {};
}

void ProcessGroup::record(Collective kind, int64_t bytes, double seconds) {
  std::lock_guard<std::mutex> lock(stats_mutex_);
  CollectiveCounter& c = stats_[kind];
  c.calls += 1;
  c.bytes += bytes;
  c.bus_bytes += double(bytes) * bus_factor(kind, world_size_);
  c.seconds += seconds;
}

int run_or_abort(ProcessGroup& pg, const std::function<int()>& body) {
  try {
    return body();
  } catch (const std::exception& e) {
    pg.abort_job(e.what());
  } catch (...) {
    pg.abort_job("unknown exception");
  }
  std::abort();  // not reached: abort_job does not return
}

}  // namespace hd::parallel
