// The shared state behind a Work handle (internal to parallel/). Backends subclass it: MPI
// completes it from the communication thread, NCCL polls a CUDA event.
#pragma once
#include <condition_variable>
#include <exception>
#include <mutex>

#include "parallel/process_group.h"

namespace hd::parallel {

struct Work::State {
  virtual ~State() = default;
  virtual void wait();
  // Host-blocking completion; the same as wait() except on streams (NCCL).
  virtual void synchronize() { wait(); }
  virtual bool done();
  // Marks the collective finished (error may be null) and wakes waiters.
  void complete(std::exception_ptr error = nullptr);

 protected:
  std::mutex mutex_;
  std::condition_variable cv_;
  bool done_ = false;
  std::exception_ptr error_;
};

}  // namespace hd::parallel
