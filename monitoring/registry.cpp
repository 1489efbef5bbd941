#include "monitoring/registry.h"

#include <prometheus/text_serializer.h>

#include <sstream>

#include "autograd/error.h"

namespace hd::monitoring {

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

const char* kind_name(MetricKind k) {
  switch (k) {
    case MetricKind::counter:
      return "counter";
    case MetricKind::gauge:
      return "gauge";
    case MetricKind::histogram:
      return "histogram";
  }
  return "?";
}

}  // namespace

Labels RunLabels::as_labels() const {
  return {{"run", run}, {"rank", std::to_string(rank)}, {"stage", stage}};
}

void check_metric_name(const std::string& name, MetricKind kind) {
  const std::string prefix = "hdtrain_";
  HD_CHECK(name.rfind(prefix, 0) == 0 && name.size() > prefix.size(), "metric '", name,
           "': names must start with 'hdtrain_'");
  for (char c : name) {
    HD_CHECK((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_', "metric '", name,
             "': names use only [a-z0-9_]");
  }
  HD_CHECK(!ends_with(name, "_"), "metric '", name, "': name ends with '_'");
  if (kind == MetricKind::counter) {
    HD_CHECK(ends_with(name, "_total"), "metric '", name, "': counters end in '_total'");
  } else {
    HD_CHECK(!ends_with(name, "_total"), "metric '", name, "': only counters end in '_total'");
  }
  // Prometheus wants base units; a scaled unit in a name is almost always a bug in the caller.
  for (const char* bad :
       {"_milliseconds", "_microseconds", "_nanoseconds", "_ms", "_us", "_ns", "_minutes", "_hours",
        "_kb", "_mb", "_gb", "_kib", "_mib", "_gib", "_kilobytes", "_megabytes", "_gigabytes"}) {
    std::string token = std::string(bad) + "_";
    HD_CHECK(name.find(token) == std::string::npos && !ends_with(name, bad), "metric '", name,
             "': use base units (seconds, bytes), not '", bad + 1, "'");
  }
  // Histogram suffixes are added by the exposition format itself.
  if (kind == MetricKind::histogram) {
    for (const char* reserved : {"_bucket", "_count", "_sum"}) {
      HD_CHECK(!ends_with(name, reserved), "metric '", name, "': histograms may not end in '",
               reserved, "'");
    }
  }
}

MetricsRegistry::MetricsRegistry(RunLabels labels)
    : labels_(std::move(labels)), registry_(std::make_shared<prometheus::Registry>()) {
  HD_CHECK(!labels_.run.empty(), "MetricsRegistry: empty run id");
  HD_CHECK(labels_.rank >= 0, "MetricsRegistry: negative rank ", labels_.rank);
}

void MetricsRegistry::claim(const std::string& name, MetricKind kind) {
  check_metric_name(name, kind);
  std::lock_guard<std::mutex> lock(mutex_);
  auto [it, inserted] = kinds_.emplace(name, kind);
  HD_CHECK(inserted || it->second == kind, "metric '", name, "' already registered as a ",
           kind_name(it->second), ", requested as a ", kind_name(kind));
}

prometheus::Family<prometheus::Counter>& MetricsRegistry::counter(const std::string& name,
                                                                  const std::string& help) {
  claim(name, MetricKind::counter);
  // Registry::InsertBehavior::Merge returns the existing family for a repeated name.
  return prometheus::BuildCounter()
      .Name(name)
      .Help(help)
      .Labels(labels_.as_labels())
      .Register(*registry_);
}

prometheus::Family<prometheus::Gauge>& MetricsRegistry::gauge(const std::string& name,
                                                              const std::string& help) {
  claim(name, MetricKind::gauge);
  return prometheus::BuildGauge()
      .Name(name)
      .Help(help)
      .Labels(labels_.as_labels())
      .Register(*registry_);
}

prometheus::Family<prometheus::Histogram>& MetricsRegistry::histogram(const std::string& name,
                                                                      const std::string& help) {
  claim(name, MetricKind::histogram);
  return prometheus::BuildHistogram()
      .Name(name)
      .Help(help)
      .Labels(labels_.as_labels())
      .Register(*registry_);
}

std::string MetricsRegistry::serialize() const {
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, registry_->Collect());
  return out.str();
}

std::vector<double> step_time_buckets() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
          1,     2.5,    5,     10,   25,    60,   120, 300,  600};
}

}  // namespace hd::monitoring
