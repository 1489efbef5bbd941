// StepTimer: wall-clock time of one training step, split into phases with scoped guards:
//
//   StepTimer timer;                       // starts the step
//   { auto p = timer.phase(Phase::data_wait); batch = loader.next(); }
//   { auto p = timer.phase(Phase::forward);  loss = model(batch); }
//   ...
//   StepTiming t = timer.finish();         // total and per-phase seconds
//
// Time not covered by any phase is reported as `other` (total - sum of phases), so the split
// always adds up to the step time. Nested or repeated phases accumulate.
#pragma once

#include <array>
#include <chrono>
#include <cstddef>

namespace hd::monitoring {

enum class Phase : int { data_wait, forward, backward, optimizer, communication, count };
inline constexpr size_t kPhaseCount = size_t(Phase::count);
const char* phase_name(Phase p);  // "data_wait", "forward", ...

struct StepTiming {
  double total_seconds = 0;
  std::array<double, kPhaseCount> phase_seconds{};
  double other_seconds() const;
  double operator[](Phase p) const { return phase_seconds[size_t(p)]; }
};

class StepTimer {
 public:
  using Clock = std::chrono::steady_clock;

  class Scope {
   public:
    Scope(StepTimer& timer, Phase phase) : timer_(&timer), phase_(phase), start_(Clock::now()) {}
    ~Scope() { stop(); }
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;
    // Ends the phase before the scope does (idempotent).
    void stop() {
      if (!timer_) return;
      timer_->add(phase_, std::chrono::duration<double>(Clock::now() - start_).count());
      timer_ = nullptr;
    }

   private:
    StepTimer* timer_;
    Phase phase_;
    Clock::time_point start_;
  };

  StepTimer() { restart(); }
  void restart() {
    start_ = Clock::now();
    timing_ = {};
  }
  [[nodiscard]] Scope phase(Phase p) { return Scope(*this, p); }
  void add(Phase p, double seconds) { timing_.phase_seconds[size_t(p)] += seconds; }
  // The step's timing; call once at the end of the step, then restart() for the next.
  StepTiming finish() {
    timing_.total_seconds = std::chrono::duration<double>(Clock::now() - start_).count();
    return timing_;
  }

 private:
  Clock::time_point start_;
  StepTiming timing_;
};

}  // namespace hd::monitoring
