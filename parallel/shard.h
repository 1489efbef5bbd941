// Per-parameter row sharding (FSDP2's layout, anchors C.2) and the packing helpers that turn a
// unit's parameters into one all-gather / reduce-scatter buffer.
//
// A parameter of global shape [..., d_k, ...] is cut along its shard dim k into chunks of
// rows_per_rank = ceil(d_k / N) rows (torch.chunk semantics); rank r holds rows
// [r*c, min((r+1)*c, d_k)), padded with zero rows to c rows so every rank's shard has the same
// size and the collectives are regular. Trailing ranks may hold only padding (d_k = 3 on 4
// ranks: 1, 1, 1, 0 rows). A 0-d parameter is one row.
//
// [Note: shard dim] The shard dim is dim 0, except that leading dims of size 1 are skipped: k is
// the first dim whose size is not 1 (0 when there is none). Issue 19 item 7: PS3's
// pos_emb_residual.* tables are [1, g^2, W]; split on dim 0 they were one row, so rank 0 held
// all of them (and their AdamW moments) and every other rank a zero padding row of the same size
// (demo: 72 MB of state on rank 0 vs 4 MB on rank 1; at paper scale the 3780 table alone is
// 84 M parameters). Why this rule and not the alternatives:
// - A row is still a contiguous run of row_numel elements of the flattened tensor, because every
//   dim before k has size 1: [1, N, D] has exactly the memory layout of [N, D]. So the packing
//   (copy_rows_out/in), FSDP's unit buffers, clipping and the optimizer need no change at all,
//   and the checkpoint keeps its row chunks (along dim k, recorded per tensor).
// - Every parameter FSDP could already split (d_0 > 1) keeps k = 0, so its shards, its unit
//   offsets and its results stay bit for bit what they were; so do [1] and [1, 1] (one row).
// - Flattening every parameter (FSDP1's flat parameter) would also balance, but changes the
//   layout of every shard and checkpoint and breaks a shard's tensor rank, which the weight-decay
//   rules read (shard_shape() keeps it: [1, c, W]); splitting a later dim when an earlier one is
//   > 1 (e.g. [2, N, D] on 4 ranks) would make rows non-contiguous, so that stays on dim 0.
//
// ShardInfo is public and complete (global shape, shard dim, offset, length, padding) because
// the checkpoint issue saves and reshards from it without any communication.
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
  int shard_dim = 0;          // k, see [Note: shard dim]; every dim before it has size 1
  int64_t rows_per_rank = 0;  // c = ceil(d_k / N), the same on every rank
  int64_t row_numel = 1;      // elements per row (product of the dims after k)
  int64_t offset = 0;         // first element of this shard in the flattened global tensor
  int64_t length = 0;         // valid (unpadded) elements held by this rank, may be 0
  int64_t padded_length = 0;  // c * row_numel, what every rank stores
  int64_t padding() const { return padded_length - length; }
  int64_t global_numel() const { return shape_numel(global_shape); }
  // Rows of the global tensor along the shard dim (d_k; 1 for a 0-d tensor).
  int64_t global_rows() const;
  // Rows of `rank` in the global tensor and how many are valid.
  int64_t valid_rows(int r) const;
  // The shard tensor's shape: the global shape with d_k replaced by c (so decay rules see the
  // parameter's rank): [c, dims 1..] when k = 0, [1, c, W] for a [1, N, W] table.
  Shape shard_shape() const;
};

// The dim a parameter of this shape is sharded along: the first whose size is not 1, 0 if none
// (and for a 0-d shape). See [Note: shard dim].
int shard_dim_of(const Shape& global_shape);

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
