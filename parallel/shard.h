// Per-parameter dim-0 sharding (FSDP2's layout, anchors C.2) and the packing helpers that turn a
// unit's parameters into one all-gather / reduce-scatter buffer.
//
// A parameter of global shape [d0, ...] is cut into chunks of rows_per_rank = ceil(d0 / N) rows
// (torch.chunk semantics); rank r holds rows [r*c, min((r+1)*c, d0)), padded with zero rows to
// c rows so every rank's shard has the same size and the collectives are regular. Trailing
// ranks may hold only padding (d0 = 3 on 4 ranks: 1, 1, 1, 0 rows). A 0-d parameter is one row.
//
// ShardInfo is public and complete (global shape, offset, length, padding) because the
// checkpoint issue saves and reshards from it without any communication.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "autograd/tensor.h"

namespace hd::parallel {

struct ShardInfo {
  std::string name;    // full dotted parameter name
  Shape global_shape;  // the unsharded parameter's shape
  int rank = 0, world_size = 1;
  int64_t rows_per_rank = 0;  // c = ceil(d0 / N), the same on every rank
  int64_t row_numel = 1;      // elements per dim-0 row
  int64_t offset = 0;         // first element of this shard in the flattened global tensor
  int64_t length = 0;         // valid (unpadded) elements held by this rank, may be 0
  int64_t padded_length = 0;  // c * row_numel, what every rank stores
  int64_t padding() const { return padded_length - length; }
  int64_t global_numel() const { return shape_numel(global_shape); }
  // Rows of `rank` in the global tensor and how many are valid.
  int64_t valid_rows(int r) const;
  // The shard tensor's shape: [c, dims 1..] (so decay rules see the parameter's rank).
  Shape shard_shape() const;
};

ShardInfo make_shard_info(const std::string& name, const Shape& global_shape, int rank,
                          int world_size);

// Copies rank `r`'s rows of `full` (contiguous, global shape) into dst[0 .. padded_length),
// zero-filling the padding. `elem` is the element size in bytes (any dtype: the copy is bytes;
// zero bits are +0 for every float format).
void copy_rows_out(const ShardInfo& info, int r, const void* full, void* dst, size_t elem);
// The inverse for the valid rows: dst_full gets rank r's rows from src.
void copy_rows_in(const ShardInfo& info, int r, const void* src, void* full, size_t elem);

inline void copy_rows_out(const ShardInfo& info, int r, const float* full, float* dst) {
  copy_rows_out(info, r, full, dst, sizeof(float));
}
inline void copy_rows_in(const ShardInfo& info, int r, const float* src, float* full) {
  copy_rows_in(info, r, src, full, sizeof(float));
}

}  // namespace hd::parallel
