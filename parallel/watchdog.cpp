#include "parallel/watchdog.h"

#include <cstdio>
#include <cstdlib>

#include "absl/time/time.h"

namespace hd::parallel {

double timeout_from_env(double fallback) {
  const char* v = std::getenv("HD_COLLECTIVE_TIMEOUT_S");
  if (!v || !*v) return fallback;
  double t = std::atof(v);
  return t > 0 ? t : fallback;
}

Watchdog::Watchdog(Options options) : options_(std::move(options)) {
  thread_ = std::thread([this] { loop(); });
}

Watchdog::~Watchdog() {
  stop_.Notify();
  thread_.join();
}

void Watchdog::begin(uint64_t seq, Collective kind, int64_t bytes) {
  std::lock_guard<std::mutex> lock(mutex_);
  in_flight_ = Op{seq, kind, bytes, std::chrono::steady_clock::now()};
}

void Watchdog::end() {
  std::lock_guard<std::mutex> lock(mutex_);
  completed_ = in_flight_;
  in_flight_.reset();
}

std::string Watchdog::describe(const Op& op) {
  return std::string(collective_name(op.kind)) + " #" + std::to_string(op.seq) + " (" +
         std::to_string(op.bytes) + " bytes)";
}

std::string Watchdog::last_completed() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return completed_ ? describe(*completed_) : "none";
}

void Watchdog::loop() {
  // Elapsed times stay on steady_clock: absl::Now() is the wall clock, which can jump.
  const absl::Duration poll = absl::Seconds(options_.poll_s);
  while (!stop_.WaitForNotificationWithTimeout(poll)) {
    std::string message;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (in_flight_) {
        double elapsed =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - in_flight_->start)
                .count();
        if (elapsed > options_.timeout_s) {
          message = "watchdog: rank " + std::to_string(options_.rank) + " (" + options_.backend +
                    "): " + describe(*in_flight_) + " did not complete within " +
                    std::to_string(options_.timeout_s) + " s; last completed collective: " +
                    (completed_ ? describe(*completed_) : "none") +
                    ". Another rank has died, hangs, or issued a different collective.";
        }
      }
    }
    // remote_error is the backend's callback (it may block): never called under mutex_.
    if (message.empty() && options_.remote_error) {
      std::optional<std::string> remote = options_.remote_error();
      if (remote) {
        message = "rank " + std::to_string(options_.rank) + " (" + options_.backend +
                  "): ending the job because " + *remote;
      }
    }
    if (!message.empty()) {
      std::fprintf(stderr, "[hd] %s\n", message.c_str());
      std::fflush(stderr);
      options_.abort(message);
      std::abort();  // abort must not return; this is the last resort
    }
  }
}

}  // namespace hd::parallel
