// Monitor: everything one rank needs for monitoring, behind one object a trainer owns:
// the registry, TrainingMetrics, the /metrics server, the JSON-lines file and (rank 0) the
// progress line.
//
//   Monitor mon({.labels = {.run = id, .rank = rank}, .info = {.world_size = n, ...}});
//   for (...) { StepTimer t; ...; mon.on_step(report); }
//   mon.finish();
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "autograd/device.h"
#include "monitoring/console.h"
#include "monitoring/jsonl_writer.h"
#include "monitoring/metrics_server.h"
#include "monitoring/registry.h"
#include "monitoring/training_metrics.h"

namespace hd::monitoring {

struct MonitorConfig {
  RunLabels labels;
  TrainingInfo info;
  bool serve = true;               // start the /metrics server
  MetricsServerConfig server;      // server.local_rank is set from info.local_rank
  std::string jsonl_path;          // empty: no JSON-lines file
  bool progress = true;            // rank 0 only
  ProgressConfig progress_config;  // total_steps defaults to info.total_steps
  // The device the model computes on, when it is not the host: its allocator's current, peak and
  // cached bytes are exported beside the host's (hdtrain_memory_bytes{device="cuda:0",...}) at
  // start and after every step. On a GPU the device pool, not the host heap, is what runs out.
  std::optional<Device> accelerator;
};

class Monitor {
 public:
  explicit Monitor(MonitorConfig config);
  ~Monitor();

  // Updates metrics, then the file and the progress line. Warns (every rank) on a non-finite loss.
  void on_step(const StepReport& report);
  void finish();

  TrainingMetrics& metrics() { return *metrics_; }
  MetricsRegistry& registry() { return registry_; }
  const MetricsServer* server() const { return server_.get(); }

 private:
  MonitorConfig config_;
  MetricsRegistry registry_;
  std::unique_ptr<TrainingMetrics> metrics_;
  std::unique_ptr<MetricsServer> server_;
  std::unique_ptr<JsonlWriter> jsonl_;
  std::unique_ptr<ProgressReporter> progress_;
  bool finished_ = false;
};

}  // namespace hd::monitoring
