// The collective watchdog: a thread per process group that turns a hang into a clear failure.
//
// Why: neither MPI nor NCCL has a timeout of its own (anchors E.4). A rank that dies or takes
// another code path leaves the others blocked in a collective forever, and the job's log says
// nothing about where. The watchdog knows the collective in flight (sequence number, kind,
// bytes, when it started) and the last one that completed; when the one in flight runs past the
// timeout it hands a message naming all of that to `abort` (MPI_Abort / ncclCommAbort), which
// ends every process of the job with a non-zero exit.
//
// It also polls `remote_error` (a message another rank sent before failing) so an exception on
// one rank ends the others with that rank's message instead of leaving them to time out.
#pragma once
#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "absl/synchronization/notification.h"
#include "parallel/process_group.h"

namespace hd::parallel {

class Watchdog {
 public:
  struct Options {
    int rank = 0;
    std::string backend;
    double timeout_s = 300.0;
    double poll_s = 0.02;
    std::function<std::optional<std::string>()> remote_error;  // may be empty
    std::function<void(const std::string&)> abort;             // must not return
  };
  explicit Watchdog(Options options);
  ~Watchdog();
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

  // The backend brackets each collective's execution with begin/end (one at a time).
  void begin(uint64_t seq, Collective kind, int64_t bytes);
  void end();
  // "all_gather #12 (4096 bytes)" of the last completed collective, or "none".
  std::string last_completed() const;

 private:
  struct Op {
    uint64_t seq = 0;
    Collective kind = Collective::barrier;
    int64_t bytes = 0;
    std::chrono::steady_clock::time_point start;
  };
  void loop();
  static std::string describe(const Op& op);

  Options options_;
  mutable std::mutex mutex_;  // in_flight_, completed_
  std::optional<Op> in_flight_;
  std::optional<Op> completed_;
  // Stop is a one-shot event: the poll loop sleeps on it with a timeout, so the destructor
  // wakes it at once without a flag, a condition variable and a lock to keep them in step.
  absl::Notification stop_;
  std::thread thread_;
};

// HD_COLLECTIVE_TIMEOUT_S from the environment, or `fallback`.
double timeout_from_env(double fallback);

}  // namespace hd::parallel
