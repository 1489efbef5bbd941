// Console output of a run: rank 0's progress line and every rank's warnings.
//
// On a terminal the progress line redraws in place (\r + erase-to-end, at most 10 times a
// second); when the output is a file or a pipe (mpirun, CI logs) it prints one plain line every
// `log_interval_seconds`, so logs stay readable and greppable.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace hd::monitoring {

struct ProgressConfig {
  int64_t total_steps = 0;           // 0: no ETA, no percentage
  double log_interval_seconds = 10;  // non-terminal output: one line per interval
  double redraw_interval_seconds = 0.1;
  enum class Mode { automatic, terminal, plain } mode = Mode::automatic;
};

class ProgressReporter {
 public:
  // `out` must outlive the reporter; automatic mode asks isatty(fileno(out)).
  explicit ProgressReporter(ProgressConfig config, std::FILE* out = stdout);
  // Called after every step; prints only when the interval has passed. `samples` is the number of
  // samples in this step across all ranks (for throughput).
  void update(int64_t step, double loss, int64_t samples);
  // Prints the final line (and the newline a terminal line needs).
  void finish();
  bool is_terminal() const { return terminal_; }

  // The text of the progress line (no newline), exposed for tests.
  static std::string format_line(int64_t step, int64_t total_steps, double loss,
                                 double samples_per_second, double eta_seconds);

 private:
  void print(int64_t step, double loss);

  ProgressConfig config_;
  std::FILE* out_;
  bool terminal_;
  std::chrono::steady_clock::time_point start_, last_print_;
  int64_t first_step_ = -1, last_step_ = -1;
  double samples_ = 0, ema_rate_ = 0, last_loss_ = 0;
  double window_samples_ = 0;
  std::chrono::steady_clock::time_point window_start_;
  bool drawn_ = false;
};

// "1h02m03s", "4m05s", "12s".
std::string format_duration(double seconds);

// One warning line on stderr, prefixed with the rank, from any rank: "[rank 3] warning: ...".
void log_warning(int rank, const std::string& message);

}  // namespace hd::monitoring
