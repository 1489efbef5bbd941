#include "parallel/checkpoint/layout.h"

#include <algorithm>
#include <cstdio>

#include "autograd/error.h"

namespace hd::parallel::ckpt::internal {

std::string dataset_path(const std::string& name) {
  HD_CHECK(!name.empty() && name.front() != '.' && name.back() != '.' &&
               name.find("..") == std::string::npos && name.find('/') == std::string::npos,
           "checkpoint: parameter name '", name, "' cannot be mapped to an HDF5 path");
  std::string path = "/" + name;
  std::replace(path.begin(), path.end(), '.', '/');
  return path;
}

std::vector<std::string> parent_groups(const std::string& path) {
  std::vector<std::string> groups;
  for (size_t pos = path.find('/', 1); pos != std::string::npos; pos = path.find('/', pos + 1))
    groups.push_back(path.substr(0, pos));
  return groups;
}

std::string rank_file(int rank) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "rank_%05d.h5", rank);
  return buf;
}

int64_t block_rows(const ShardInfo& info, int64_t requested) {
  if (requested > 0) return requested;
  const int64_t row_bytes = std::max<int64_t>(1, info.row_numel * int64_t(sizeof(float)));
  return std::max<int64_t>(1, (int64_t(1) << 20) / row_bytes);
}

}  // namespace hd::parallel::ckpt::internal
