#include "monitoring/discovery.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "autograd/error.h"
#include "monitoring/jsonl_writer.h"

namespace hd::monitoring {

std::vector<ScrapeTarget> rank_targets(const std::vector<std::string>& hosts, int ranks_per_host,
                                       int port_base, const std::string& run) {
  HD_CHECK(ranks_per_host >= 1 && port_base > 0 && port_base + ranks_per_host - 1 <= 65535,
           "rank_targets: ranks_per_host ", ranks_per_host, ", port_base ", port_base);
  std::vector<ScrapeTarget> out;
  for (const auto& h : hosts) {
    for (int r = 0; r < ranks_per_host; ++r) out.push_back({h, port_base + r, {{"run", run}}});
  }
  return out;
}

std::string file_sd_json(const std::vector<ScrapeTarget>& targets) {
  std::string s = "[\n";
  for (size_t i = 0; i < targets.size(); ++i) {
    const auto& t = targets[i];
    HD_CHECK(!t.host.empty() && t.port > 0 && t.port <= 65535, "file_sd_json: bad target '", t.host,
             ":", t.port, "'");
    s += "  {\"targets\": [" + json_string(t.host + ":" + std::to_string(t.port)) +
         "], \"labels\": {";
    size_t j = 0;
    for (const auto& [k, v] : t.labels)
      s += (j++ ? ", " : "") + json_string(k) + ": " + json_string(v);
    s += "}}";
    s += i + 1 < targets.size() ? ",\n" : "\n";
  }
  return s + "]\n";
}

void write_file_sd(const std::string& path, const std::vector<ScrapeTarget>& targets) {
  const std::string text = file_sd_json(targets);
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  std::FILE* f = std::fopen(tmp.c_str(), "w");
  HD_CHECK(f != nullptr, "write_file_sd: cannot create '", tmp, "': ", std::strerror(errno));
  const bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size();
  const bool closed = std::fclose(f) == 0;
  if (!ok || !closed || std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    std::remove(tmp.c_str());
    throw Error(detail::concat("write_file_sd: cannot write '", path, "': ", std::strerror(err)));
  }
}

}  // namespace hd::monitoring
