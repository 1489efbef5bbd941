#include "monitoring/training_metrics.h"

#include <unistd.h>

#include <chrono>
#include <cmath>

#include "autograd/error.h"

#ifndef HD_VERSION
#define HD_VERSION "unknown"
#endif
#ifndef HD_BUILD_TYPE
#define HD_BUILD_TYPE "unknown"
#endif
#ifndef HD_WITH_CUDA
#define HD_WITH_CUDA 0
#endif

namespace hd::monitoring {

namespace {

std::string host_name(const std::string& given) {
  if (!given.empty()) return given;
  char buf[256] = {};
  if (gethostname(buf, sizeof(buf) - 1) != 0) return "unknown";
  return buf;
}

std::string compiler() {
#if defined(__clang__)
  return "clang-" + std::to_string(__clang_major__) + "." + std::to_string(__clang_minor__);
#elif defined(__GNUC__)
  return "gcc-" + std::to_string(__GNUC__) + "." + std::to_string(__GNUC_MINOR__);
#else
  return "unknown";
#endif
}

// Label values for our own keys are validated so a typo cannot create an unbounded label set
// silently (e.g. a loss term built from a sample id).
void check_label_value(const char* what, const std::string& v) {
  HD_CHECK(!v.empty() && v.size() <= 64, "TrainingMetrics: ", what, " '", v,
           "' must be 1..64 characters");
  for (char c : v) {
    HD_CHECK((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == ':' || c == '-',
             "TrainingMetrics: ", what, " '", v, "' may use only [a-z0-9_:-]");
  }
}

}  // namespace

double unix_time_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

template <class T>
T& TrainingMetrics::cached(prometheus::Family<T>& family,
                           std::unordered_map<std::string, T*>& cache, const std::string& label,
                           const std::string& value) {
  std::lock_guard<std::mutex> lock(cache_mutex_);
  auto it = cache.find(value);
  if (it != cache.end()) return *it->second;
  check_label_value(label.c_str(), value);
  T& metric = family.Add({{label, value}});
  cache.emplace(value, &metric);
  return metric;
}

TrainingMetrics::TrainingMetrics(MetricsRegistry& r, TrainingInfo info)
    : registry_(r),
      info_(std::move(info)),
      loss_(r.gauge("hdtrain_loss", "Loss of the last step, by term")),
      selection_(r.gauge("hdtrain_selection",
                         "Selection statistics of the last step (mean probability inside / "
                         "outside the GT boxes, prior and posterior), by stat")),
      phase_total_(r.counter("hdtrain_step_phase_seconds_total",
                             "Time spent in each phase of the step (data_wait, forward, "
                             "backward, optimizer, communication, other)")),
      phase_last_(r.gauge("hdtrain_last_step_phase_seconds", "Phase split of the last step")),
      coll_bytes_(r.counter("hdtrain_collective_bytes_total",
                            "Bytes sent by this rank in collectives, by op")),
      coll_seconds_(
          r.counter("hdtrain_collective_seconds_total", "Wall time spent in collectives, by op")),
      coll_calls_(r.counter("hdtrain_collective_calls_total", "Number of collectives, by op")),
      skipped_(r.counter("hdtrain_samples_skipped_total",
                         "Samples skipped because they were bad, by reason")),
      memory_(r.gauge("hdtrain_memory_bytes",
                      "Allocator memory by device and kind (current, peak, cached)")),
      checkpoints_(r.counter("hdtrain_checkpoints_total", "Checkpoints written, by result")),
      steps_(r.counter("hdtrain_steps_total", "Training steps completed by this process").Add({})),
      step_(r.gauge("hdtrain_step", "Index of the last completed step (global)").Add({})),
      samples_(r.counter("hdtrain_samples_total", "Samples processed by this rank").Add({})),
      tokens_(r.counter("hdtrain_tokens_total", "Text tokens processed by this rank").Add({})),
      patches_(r.counter("hdtrain_patches_total", "Image patches processed by this rank").Add({})),
      lr_(r.gauge("hdtrain_learning_rate", "Learning rate of the last step").Add({})),
      grad_norm_(r.gauge("hdtrain_grad_norm", "Global gradient norm before clipping").Add({})),
      step_seconds_(r.histogram("hdtrain_step_duration_seconds", "Wall time of a training step")
                        .Add({}, step_time_buckets())),
      last_step_seconds_(
          r.gauge("hdtrain_last_step_duration_seconds", "Wall time of the last step").Add({})),
      heartbeat_(r.gauge("hdtrain_last_step_timestamp_seconds",
                         "Unix time of the last completed step (start time before the first)")
                     .Add({})),
      nonfinite_(r.counter("hdtrain_nonfinite_losses_total",
                           "Steps whose loss (any term) was NaN or infinite")
                     .Add({})),
      checkpoints_ok_(checkpoints_.Add({{"result", "ok"}})),
      checkpoints_failed_(checkpoints_.Add({{"result", "failed"}})),
      checkpoint_bytes_(
          r.counter("hdtrain_checkpoint_bytes_total", "Bytes written to checkpoints").Add({})),
      checkpoint_seconds_(
          r.counter("hdtrain_checkpoint_seconds_total", "Wall time spent writing checkpoints")
              .Add({})),
      checkpoint_duration_(
          r.histogram("hdtrain_checkpoint_duration_seconds", "Wall time of one checkpoint")
              .Add({}, prometheus::Histogram::BucketBoundaries{0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120,
                                                               300, 600})),
      last_checkpoint_time_(r.gauge("hdtrain_last_checkpoint_timestamp_seconds",
                                    "Unix time of the last successful checkpoint (0: none)")
                                .Add({})),
      checkpoint_fallbacks_(r.counter("hdtrain_checkpoint_fallbacks_total",
                                      "Damaged checkpoints skipped (moved aside) at resume")
                                .Add({})),
      active_(r.gauge("hdtrain_training_active",
                      "1 while the run is training, 0 once finished (silences the stall alert)")
                  .Add({})) {
  HD_CHECK(info_.world_size >= 1, "TrainingMetrics: world_size ", info_.world_size);
  for (size_t p = 0; p <= kPhaseCount; ++p) {
    const std::string name = p < kPhaseCount ? phase_name(Phase(p)) : "other";
    phase_total_by_phase_[p] = &phase_total_.Add({{"phase", name}});
    phase_last_by_phase_[p] = &phase_last_.Add({{"phase", name}});
  }
  for (const auto& t : info_.loss_terms) cached(loss_, loss_by_term_, "term", t).Set(NAN);
  for (const auto& op : info_.collective_ops) {
    cached(coll_bytes_, coll_bytes_by_op_, "op", op);
    cached(coll_seconds_, coll_seconds_by_op_, "op", op);
    cached(coll_calls_, coll_calls_by_op_, "op", op);
  }
  for (const auto& reason : info_.skip_reasons)
    cached(skipped_, skipped_by_reason_, "reason", reason);

  r.gauge("hdtrain_build_info", "Build of the trainer (value 1)")
      .Add({{"version", HD_VERSION},
            {"build_type", HD_BUILD_TYPE},
            {"compiler", compiler()},
            {"cuda", HD_WITH_CUDA ? "on" : "off"}})
      .Set(1);
  r.gauge("hdtrain_run_info", "The run this process belongs to (value 1)")
      .Add({{"host", host_name(info_.host)},
            {"local_rank", std::to_string(info_.local_rank)},
            {"world_size", std::to_string(info_.world_size)}})
      .Set(1);
  r.gauge("hdtrain_world_size", "Number of ranks in the run").Add({}).Set(info_.world_size);
  r.gauge("hdtrain_target_steps", "Steps the run is configured for (0: unknown)")
      .Add({})
      .Set(double(info_.total_steps));
  const double now = unix_time_seconds();
  r.gauge("hdtrain_start_time_seconds", "Unix time the process started training").Add({}).Set(now);
  heartbeat_.Set(now);  // a rank that never completes a step still goes stale
  active_.Set(1);
  update_host_memory();
}

bool TrainingMetrics::on_step(const StepReport& rep) {
  bool finite = true;
  for (const auto& [term, value] : rep.losses) {
    cached(loss_, loss_by_term_, "term", term).Set(value);
    finite = finite && std::isfinite(value);
  }
  if (!finite) nonfinite_.Increment();
  for (const auto& [stat, value] : rep.selection)
    if (!std::isnan(value)) cached(selection_, selection_by_stat_, "stat", stat).Set(value);
  steps_.Increment();
  step_.Set(double(rep.step));
  if (rep.samples > 0) samples_.Increment(double(rep.samples));
  if (rep.tokens > 0) tokens_.Increment(double(rep.tokens));
  if (rep.patches > 0) patches_.Increment(double(rep.patches));
  if (!std::isnan(rep.learning_rate)) lr_.Set(rep.learning_rate);
  if (!std::isnan(rep.grad_norm)) grad_norm_.Set(rep.grad_norm);

  const StepTiming& t = rep.timing;
  step_seconds_.Observe(t.total_seconds);
  last_step_seconds_.Set(t.total_seconds);
  for (size_t p = 0; p <= kPhaseCount; ++p) {
    const double s = p < kPhaseCount ? t.phase_seconds[p] : t.other_seconds();
    if (s > 0) phase_total_by_phase_[p]->Increment(s);
    phase_last_by_phase_[p]->Set(s);
  }
  heartbeat_.Set(unix_time_seconds());  // last: the step is complete once this moves
  return finite;
}

void TrainingMetrics::on_collective(const std::string& op, int64_t bytes, double seconds) {
  cached(coll_calls_, coll_calls_by_op_, "op", op).Increment();
  if (bytes > 0) cached(coll_bytes_, coll_bytes_by_op_, "op", op).Increment(double(bytes));
  if (seconds > 0) cached(coll_seconds_, coll_seconds_by_op_, "op", op).Increment(seconds);
}

void TrainingMetrics::on_checkpoint(int64_t bytes, double seconds, bool ok) {
  (ok ? checkpoints_ok_ : checkpoints_failed_).Increment();
  if (!ok) return;
  if (bytes > 0) checkpoint_bytes_.Increment(double(bytes));
  if (seconds > 0) checkpoint_seconds_.Increment(seconds);
  checkpoint_duration_.Observe(seconds);
  last_checkpoint_time_.Set(unix_time_seconds());
}

void TrainingMetrics::on_checkpoint_fallbacks(int64_t count) {
  if (count > 0) checkpoint_fallbacks_.Increment(double(count));
}

void TrainingMetrics::on_skipped_samples(const std::string& reason, int64_t count) {
  if (count > 0) cached(skipped_, skipped_by_reason_, "reason", reason).Increment(double(count));
}

void TrainingMetrics::update_host_memory() {
  set_memory("cpu", allocator_for(Device::cpu()).stats());
}

void TrainingMetrics::update_device_memory(Device device) {
  set_memory(device.str(), allocator_for(device).stats());
}

void TrainingMetrics::set_memory(const std::string& device, const MemoryStats& s) {
  auto gauge = [&](const char* kind) -> prometheus::Gauge& {
    const std::string key = device + "/" + kind;
    std::lock_guard<std::mutex> lock(cache_mutex_);
    auto it = memory_by_key_.find(key);
    if (it != memory_by_key_.end()) return *it->second;
    check_label_value("device", device);
    auto& g = memory_.Add({{"device", device}, {"kind", kind}});
    memory_by_key_.emplace(key, &g);
    return g;
  };
  gauge("current").Set(double(s.current_bytes));
  gauge("peak").Set(double(s.peak_bytes));
  gauge("cached").Set(double(s.cached_bytes));
}

void TrainingMetrics::set_active(bool active) {
  active_.Set(active ? 1 : 0);
}

}  // namespace hd::monitoring
