#include "parallel/checkpoint/layout.h"

#include <algorithm>
#include <cstdio>
#include <cstring>

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

std::vector<unsigned long long> chunk_dims(const Shape& global_shape, int shard_dim, int64_t rows) {
  std::vector<unsigned long long> dims(global_shape.begin(), global_shape.end());
  if (dims.empty()) return {static_cast<unsigned long long>(rows)};
  dims.at(size_t(shard_dim)) = static_cast<unsigned long long>(rows);
  return dims;
}

std::vector<RankOutcome> exchange_outcomes(ProcessGroup& pg, int64_t status,
                                           const std::string& message) {
  constexpr int64_t kTextBytes = 2048, kSlot = 1 + kTextBytes / 8;
  Tensor mine = Tensor::empty({kSlot}, DType::i64);
  Tensor all = Tensor::empty({kSlot * pg.world_size()}, DType::i64);
  int64_t* m = mine.data<int64_t>();
  std::fill(m, m + kSlot, int64_t(0));
  m[0] = status;
  std::memcpy(m + 1, message.data(), std::min<size_t>(message.size(), kTextBytes - 1));
  pg.all_gather(mine, all).wait();
  std::vector<RankOutcome> out;
  for (int r = 0; r < pg.world_size(); ++r) {
    const int64_t* a = all.data<int64_t>() + r * kSlot;
    const char* text = reinterpret_cast<const char*>(a + 1);
    out.push_back({a[0], std::string(text, strnlen(text, kTextBytes))});
  }
  return out;
}

}  // namespace hd::parallel::ckpt::internal
