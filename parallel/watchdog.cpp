#include "parallel/watchdog.h"

#include <cstdio>
#include <cstdlib>

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
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  cv_.notify_all();
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
  const auto poll = std::chrono::duration<double>(options_.poll_s);
  std::unique_lock<std::mutex> lock(mutex_);
  while (!stop_) {
    cv_.wait_for(lock, poll, [&] { return stop_; });
    if (stop_) break;
    std::string message;
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
    if (message.empty() && options_.remote_error) {
      lock.unlock();
      std::optional<std::string> remote = options_.remote_error();
      lock.lock();
      if (remote) {
        message = "rank " + std::to_string(options_.rank) + " (" + options_.backend +
                  "): ending the job because " + *remote;
      }
    }
    if (!message.empty()) {
      lock.unlock();
      std::fprintf(stderr, "[hd] %s\n", message.c_str());
      std::fflush(stderr);
      options_.abort(message);
      std::abort();  // abort must not return; this is the last resort
    }
  }
}

}  // namespace hd::parallel
