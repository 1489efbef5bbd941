#include "monitoring/monitor.h"

#include <cmath>

namespace hd::monitoring {

Monitor::Monitor(MonitorConfig config) : config_(std::move(config)), registry_(config_.labels) {
  metrics_ = std::make_unique<TrainingMetrics>(registry_, config_.info);
  if (config_.accelerator) metrics_->update_device_memory(*config_.accelerator);
  if (config_.serve) {
    MetricsServerConfig sc = config_.server;
    sc.local_rank = config_.info.local_rank;
    // The source runs on the server's threads: serialization never happens on the step.
    server_ = std::make_unique<MetricsServer>(sc, [this] { return registry_.serialize(); });
  }
  if (!config_.jsonl_path.empty()) {
    jsonl_ = std::make_unique<JsonlWriter>(config_.jsonl_path, config_.labels);
  }
  if (config_.progress && config_.labels.rank == 0) {
    ProgressConfig pc = config_.progress_config;
    if (pc.total_steps == 0) pc.total_steps = config_.info.total_steps;
    progress_ = std::make_unique<ProgressReporter>(pc);
  }
}

Monitor::~Monitor() {
  try {
    finish();
  } catch (...) {  // destructors must not throw; finish() only prints
  }
}

void Monitor::on_step(const StepReport& report) {
  if (!metrics_->on_step(report)) {
    log_warning(config_.labels.rank, "non-finite loss at step " + std::to_string(report.step));
  }
  metrics_->update_host_memory();
  if (config_.accelerator) metrics_->update_device_memory(*config_.accelerator);
  if (jsonl_) jsonl_->write(report);
  if (progress_) {
    double loss = report.losses.empty() ? NAN : report.losses.front().second;
    progress_->update(report.step, loss, report.samples * config_.info.world_size);
  }
}

void Monitor::finish() {
  if (finished_) return;
  finished_ = true;
  metrics_->set_active(false);
  if (progress_) progress_->finish();
}

}  // namespace hd::monitoring
