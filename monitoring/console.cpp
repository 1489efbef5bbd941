#include "monitoring/console.h"

#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <string>

#include "autograd/error.h"

namespace hd::monitoring {

namespace {
double seconds_between(std::chrono::steady_clock::time_point a,
                       std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}
}  // namespace

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  long s = std::lround(seconds);
  char buf[48];
  if (s >= 3600) {
    std::snprintf(buf, sizeof(buf), "%ldh%02ldm%02lds", s / 3600, (s / 60) % 60, s % 60);
  } else if (s >= 60) {
    std::snprintf(buf, sizeof(buf), "%ldm%02lds", s / 60, s % 60);
  } else {
    std::snprintf(buf, sizeof(buf), "%lds", s);
  }
  return buf;
}

std::string ProgressReporter::format_line(int64_t step, int64_t total, double loss,
                                          double samples_per_second, double eta_seconds) {
  char buf[256];
  if (total > 0) {
    std::snprintf(buf, sizeof(buf), "step %lld/%lld (%.1f%%) | loss %.4g | %.1f samples/s | ETA %s",
                  (long long)step, (long long)total, 100.0 * double(step) / double(total), loss,
                  samples_per_second, format_duration(eta_seconds).c_str());
  } else {
    std::snprintf(buf, sizeof(buf), "step %lld | loss %.4g | %.1f samples/s", (long long)step, loss,
                  samples_per_second);
  }
  return buf;
}

ProgressReporter::ProgressReporter(ProgressConfig config, std::FILE* out)
    : config_(config), out_(out) {
  using Mode = ProgressConfig::Mode;
  // Under mpirun a rank's stdout is a pseudo-terminal of OpenMPI's even when mpirun's own output
  // goes to a file, so isatty() cannot tell; HD_PROGRESS=plain|terminal (set by scripts/demo.sh
  // from its own stdout) decides in automatic mode.
  const char* env = std::getenv("HD_PROGRESS");
  const std::string forced = env ? env : "";
  HD_CHECK(forced.empty() || forced == "plain" || forced == "terminal",
           "HD_PROGRESS must be 'plain' or 'terminal', got '", forced, "'");
  const bool automatic_terminal = forced.empty() ? isatty(fileno(out_)) == 1 : forced == "terminal";
  terminal_ =
      config_.mode == Mode::terminal || (config_.mode == Mode::automatic && automatic_terminal);
  start_ = last_print_ = window_start_ = std::chrono::steady_clock::now();
}

void ProgressReporter::update(int64_t step, double loss, int64_t samples) {
  const auto now = std::chrono::steady_clock::now();
  if (first_step_ < 0) first_step_ = step;
  last_step_ = step;
  last_loss_ = loss;
  samples_ += double(samples);
  window_samples_ += double(samples);
  // Throughput: an exponential moving average of per-window rates, so one slow step (a
  // checkpoint) does not swing the ETA.
  const double window = seconds_between(window_start_, now);
  if (window >= 1.0) {
    const double rate = window_samples_ / window;
    ema_rate_ = ema_rate_ == 0 ? rate : 0.7 * ema_rate_ + 0.3 * rate;
    window_samples_ = 0;
    window_start_ = now;
  }
  const double interval =
      terminal_ ? config_.redraw_interval_seconds : config_.log_interval_seconds;
  if (seconds_between(last_print_, now) >= interval) {
    print(step, loss);
    last_print_ = now;
  }
}

void ProgressReporter::print(int64_t step, double loss) {
  const auto now = std::chrono::steady_clock::now();
  double rate = ema_rate_;
  if (rate == 0) {
    const double elapsed = seconds_between(start_, now);
    rate = elapsed > 0 ? samples_ / elapsed : 0;
  }
  double eta = NAN;
  const int64_t done = step - first_step_ + 1;
  if (config_.total_steps > 0 && done > 0) {
    const double per_step = seconds_between(start_, now) / double(done);
    eta = per_step * double(std::max<int64_t>(0, config_.total_steps - step - 1));
  }
  const std::string line = format_line(step, config_.total_steps, loss, rate, eta);
  if (terminal_) {
    std::fprintf(out_, "\r%s\x1b[K", line.c_str());
    drawn_ = true;
  } else {
    std::fprintf(out_, "%s\n", line.c_str());
  }
  std::fflush(out_);
}

void ProgressReporter::finish() {
  if (last_step_ >= 0) print(last_step_, last_loss_);
  if (terminal_ && drawn_) std::fputc('\n', out_);
  std::fflush(out_);
}

void log_warning(int rank, const std::string& message) {
  std::fprintf(stderr, "[rank %d] warning: %s\n", rank, message.c_str());
  std::fflush(stderr);
}

}  // namespace hd::monitoring
