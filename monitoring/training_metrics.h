// The typed metrics API a trainer calls. Everything hdtrain exports is defined here, in one place,
// so the dashboard (grafana/hdtrain.json) and the alert rules (prometheus/alerts.yml) have one
// list to match; docs/monitoring.md has the table.
//
// Threading: on_step() is meant for the training thread, the other calls may come from any thread
// (e.g. a communication or checkpoint thread). All calls only update atomics or per-metric
// mutexes held for nanoseconds; nothing here formats text or does I/O.
#pragma once

#include <cstdint>
#include <limits>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "autograd/allocator.h"
#include "monitoring/registry.h"
#include "monitoring/step_timer.h"

namespace hd::monitoring {

struct TrainingInfo {
  int world_size = 1;
  int local_rank = 0;
  int64_t total_steps = 0;  // 0 when unknown (no ETA)
  // Series created at zero up front, so dashboards and alerts see them before the first event.
  std::vector<std::string> loss_terms = {"total"};
  std::vector<std::string> collective_ops = {"all_reduce", "all_gather", "reduce_scatter",
                                             "broadcast"};
  std::vector<std::string> skip_reasons = {"decode_error", "invalid", "filtered"};
  std::string host = "";  // empty: gethostname()
};

struct StepReport {
  static constexpr double kUnset = std::numeric_limits<double>::quiet_NaN();
  int64_t step = 0;     // index of the step just completed (global, resumes after a restart)
  int64_t samples = 0;  // samples processed by this rank in this step
  int64_t tokens = 0;   // text tokens processed by this rank in this step
  int64_t patches = 0;  // image patches processed by this rank in this step
  // Loss terms, e.g. {"total", ...}, {"contrastive_global", ...}, {"contrastive_local", ...},
  // {"selection_bce", ...}, {"selection_dice", ...}, {"lm", ...}.
  std::vector<std::pair<std::string, double>> losses;
  // Selection statistics, e.g. {"posterior_in_box", mean probability}: hdtrain_selection{stat}.
  // NaN entries (no local caption in the step) leave the gauge as it was.
  std::vector<std::pair<std::string, double>> selection;
  double learning_rate = kUnset;  // NaN: not reported
  double grad_norm = kUnset;
  StepTiming timing;
};

class TrainingMetrics {
 public:
  TrainingMetrics(MetricsRegistry& registry, TrainingInfo info);

  // A completed step. Returns false when a loss term was not finite (also counted).
  bool on_step(const StepReport& report);
  // One collective: op is "all_reduce", "all_gather", ... (any [a-z_] name).
  void on_collective(const std::string& op, int64_t bytes, double seconds);
  void on_checkpoint(int64_t bytes, double seconds, bool ok);
  // Damaged checkpoints the resume skipped (and moved aside) before one loaded.
  void on_checkpoint_fallbacks(int64_t count);
  void on_skipped_samples(const std::string& reason, int64_t count = 1);
  // Reads the CPU allocator's counters (call once per step or from a timer).
  void update_host_memory();
  // The allocator of `device` (allocator_for), exported under device.str().
  void update_device_memory(Device device);
  // Device memory, when a device is present: device is e.g. "cuda:0".
  void set_memory(const std::string& device, const MemoryStats& stats);
  // Marks the run finished (or resumed), so the stalled alert does not fire after the last step.
  void set_active(bool active);

  const TrainingInfo& info() const { return info_; }
  MetricsRegistry& registry() { return registry_; }

 private:
  // Cached label lookups: Family::Add is a map insert under the family's mutex; we keep our own
  // pointers so a step does no string work for the labels it has seen before.
  template <class T>
  T& cached(prometheus::Family<T>& family, std::unordered_map<std::string, T*>& cache,
            const std::string& label, const std::string& value);

  MetricsRegistry& registry_;
  TrainingInfo info_;
  std::mutex cache_mutex_;

  prometheus::Family<prometheus::Gauge>& loss_;
  prometheus::Family<prometheus::Gauge>& selection_;
  prometheus::Family<prometheus::Counter>& phase_total_;
  prometheus::Family<prometheus::Gauge>& phase_last_;
  prometheus::Family<prometheus::Counter>& coll_bytes_;
  prometheus::Family<prometheus::Counter>& coll_seconds_;
  prometheus::Family<prometheus::Counter>& coll_calls_;
  prometheus::Family<prometheus::Counter>& skipped_;
  prometheus::Family<prometheus::Gauge>& memory_;
  prometheus::Family<prometheus::Counter>& checkpoints_;
  std::unordered_map<std::string, prometheus::Gauge*> loss_by_term_, selection_by_stat_,
      memory_by_key_;
  std::unordered_map<std::string, prometheus::Counter*> coll_bytes_by_op_, coll_seconds_by_op_,
      coll_calls_by_op_, skipped_by_reason_;

  prometheus::Counter& steps_;
  prometheus::Gauge& step_;
  prometheus::Counter& samples_;
  prometheus::Counter& tokens_;
  prometheus::Counter& patches_;
  prometheus::Gauge& lr_;
  prometheus::Gauge& grad_norm_;
  prometheus::Histogram& step_seconds_;
  prometheus::Gauge& last_step_seconds_;
  prometheus::Gauge& heartbeat_;
  prometheus::Counter& nonfinite_;
  prometheus::Counter* phase_total_by_phase_[kPhaseCount + 1];  // + "other"
  prometheus::Gauge* phase_last_by_phase_[kPhaseCount + 1];
  prometheus::Counter& checkpoints_ok_;
  prometheus::Counter& checkpoints_failed_;
  prometheus::Counter& checkpoint_bytes_;
  prometheus::Counter& checkpoint_seconds_;
  prometheus::Histogram& checkpoint_duration_;
  prometheus::Gauge& last_checkpoint_time_;
  prometheus::Counter& checkpoint_fallbacks_;
  prometheus::Gauge& active_;
};

// Seconds since the Unix epoch (the unit of every *_timestamp_seconds metric).
double unix_time_seconds();

}  // namespace hd::monitoring
