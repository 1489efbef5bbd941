#include "parallel/shard.h"

#include <algorithm>
#include <cstring>

#include "autograd/error.h"

namespace hd::parallel {

int shard_dim_of(const Shape& global_shape) {
  for (size_t d = 0; d < global_shape.size(); ++d)
    if (global_shape[d] != 1) return int(d);
  return 0;
}

int64_t ShardInfo::global_rows() const {
  return global_shape.empty() ? 1 : global_shape[size_t(shard_dim)];
}

int64_t ShardInfo::valid_rows(int r) const {
  return std::clamp<int64_t>(global_rows() - int64_t(r) * rows_per_rank, 0, rows_per_rank);
}

Shape ShardInfo::shard_shape() const {
  Shape s = global_shape.empty() ? Shape{1} : global_shape;
  s[size_t(shard_dim)] = rows_per_rank;
  return s;
}

ShardInfo make_shard_info(const std::string& name, const Shape& global_shape, int rank,
                          int world_size) {
  HD_CHECK(world_size >= 1 && rank >= 0 && rank < world_size, "shard: rank ", rank,
           " outside world size ", world_size);
  ShardInfo s;
  s.name = name;
  s.global_shape = global_shape;
  s.rank = rank;
  s.world_size = world_size;
  s.shard_dim = shard_dim_of(global_shape);
  const int64_t rows = s.global_rows();
  HD_CHECK(rows > 0, "shard: parameter '", name, "' has an empty dim ", s.shard_dim, " ",
           global_shape);
  s.row_numel = global_shape.empty() ? 1 : shape_numel(global_shape) / rows;
  s.rows_per_rank = (rows + world_size - 1) / world_size;
  s.padded_length = s.rows_per_rank * s.row_numel;
  s.offset = std::min<int64_t>(int64_t(rank) * s.rows_per_rank, rows) * s.row_numel;
  s.length = s.valid_rows(rank) * s.row_numel;
  return s;
}

void copy_rows_out(const ShardInfo& info, int r, const void* full, void* dst, size_t elem) {
  const int64_t valid = info.valid_rows(r) * info.row_numel;
  const int64_t start =
      std::min<int64_t>(int64_t(r) * info.rows_per_rank * info.row_numel, info.global_numel());
  auto* d = static_cast<char*>(dst);
  if (valid > 0) {
    std::memcpy(d, static_cast<const char*>(full) + size_t(start) * elem, size_t(valid) * elem);
  }
  std::memset(d + size_t(valid) * elem, 0, size_t(info.padded_length - valid) * elem);
}

void copy_rows_in(const ShardInfo& info, int r, const void* src, void* full, size_t elem) {
  const int64_t valid = info.valid_rows(r) * info.row_numel;
  if (valid == 0) return;
  std::memcpy(static_cast<char*>(full) + size_t(r * info.rows_per_rank * info.row_numel) * elem,
              src, size_t(valid) * elem);
}

}  // namespace hd::parallel
