// The hdtrain metrics registry: a prometheus-cpp Registry that enforces our naming rules and puts
// the run/rank/stage labels on every series, so dashboards and alerts can rely on them.
//
// Naming (checked when a family is created, an hd::Error otherwise):
//   - every name starts with `hdtrain_` and is [a-z0-9_];
//   - counters end in `_total`; gauges and histograms never do;
//   - base units only: durations end in `_seconds`, sizes in `_bytes` (a name containing
//     `_milliseconds`, `_ms`, `_kb`, `_mb`... is rejected).
// Updating a metric is lock-free for counters and gauges (atomics) and takes a per-histogram mutex
// for histograms (held for nanoseconds); serialization happens on the caller of serialize(),
// which is the HTTP server's thread, never the training step.
#pragma once

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace hd::monitoring {

using Labels = std::map<std::string, std::string>;

// The labels every hdtrain series carries.
struct RunLabels {
  std::string run = "default";  // run id (e.g. the launcher's job id)
  int rank = 0;                 // global rank
  std::string stage = "train";  // training stage, e.g. "pretrain", "sft"
  Labels as_labels() const;
};

enum class MetricKind { counter, gauge, histogram };

// Throws hd::Error naming the rule that `name` breaks for metrics of `kind`.
void check_metric_name(const std::string& name, MetricKind kind);

class MetricsRegistry {
 public:
  explicit MetricsRegistry(RunLabels labels);

  // Families are created once per name (the same name twice returns the same family; a name
  // reused for another kind throws). Label values are added with family.Add({...}).
  prometheus::Family<prometheus::Counter>& counter(const std::string& name,
                                                   const std::string& help);
  prometheus::Family<prometheus::Gauge>& gauge(const std::string& name, const std::string& help);
  prometheus::Family<prometheus::Histogram>& histogram(const std::string& name,
                                                       const std::string& help);

  // The Prometheus text exposition format (version 0.0.4) of every metric.
  std::string serialize() const;

  const RunLabels& run_labels() const { return labels_; }
  std::shared_ptr<prometheus::Registry> prometheus_registry() const { return registry_; }

 private:
  void claim(const std::string& name, MetricKind kind);

  RunLabels labels_;
  std::shared_ptr<prometheus::Registry> registry_;
  std::mutex mutex_;
  std::map<std::string, MetricKind> kinds_;
};

// Default step-time buckets: 1 ms .. 10 min, roughly x2.5 apart.
std::vector<double> step_time_buckets();

}  // namespace hd::monitoring
