// Prometheus file-based service discovery (file_sd_configs): the launcher writes one JSON file
// per job listing every rank's /metrics address, and prometheus/prometheus.yml picks up
// `targets/*.json` without a restart.
#pragma once

#include <string>
#include <vector>

#include "monitoring/registry.h"

namespace hd::monitoring {

struct ScrapeTarget {
  std::string host;  // as Prometheus should reach it, e.g. "127.0.0.1" or a node's name
  int port = 0;
  Labels labels;  // target labels, e.g. {"run", "..."}; the metrics carry rank themselves
};

// Targets for `ranks_per_host` ranks on each host, port_base + local_rank (the MetricsServer rule).
std::vector<ScrapeTarget> rank_targets(const std::vector<std::string>& hosts, int ranks_per_host,
                                       int port_base, const std::string& run);

// The file_sd JSON text for `targets`.
std::string file_sd_json(const std::vector<ScrapeTarget>& targets);

// Writes file_sd_json(targets) to `path` atomically (temporary file + rename), because Prometheus
// re-reads the file when it changes and would log a parse error on a half-written one.
void write_file_sd(const std::string& path, const std::vector<ScrapeTarget>& targets);

}  // namespace hd::monitoring
