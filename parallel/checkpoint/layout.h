// Naming and blocking rules shared by the checkpoint writer and reader (private).
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "parallel/checkpoint/checkpoint.h"
#include "parallel/shard.h"

namespace hd::parallel::ckpt::internal {

// "blocks.0.attn.weight" -> "/blocks/0/attn/weight": a group per module path.
std::string dataset_path(const std::string& name);
// Parent groups of a dataset path, outermost first: "/blocks", "/blocks/0", "/blocks/0/attn".
std::vector<std::string> parent_groups(const std::string& path);
// "rank_00003.h5".
std::string rank_file(int rank);
// Rows per checksum block for a tensor (about 1 MiB per block unless `requested` > 0).
int64_t block_rows(const ShardInfo& info, int64_t requested);
inline int64_t num_blocks(int64_t rows, int64_t block) {
  return (rows + block - 1) / block;
}
// save_checkpoint with a last word on the manifest before rank 0 writes it (training
// checkpoints add their TrainerState this way); `extend` runs on rank 0 only.
std::filesystem::path save_checkpoint_with(const std::filesystem::path& dir, int64_t step,
                                           const std::vector<ShardRef>& shards, ProcessGroup& pg,
                                           const SaveOptions& options,
                                           const std::function<void(proto::Manifest&)>& extend);

// What a step folder's manifest is. `other_format` (a valid manifest of another format version,
// e.g. written by a newer hdtrain) is not damage: such a folder is never moved aside, and resume
// refuses to skip it (an older build would silently train from an older step).
enum class ManifestState { ok, missing, corrupt, other_format };
ManifestState check_manifest(const std::filesystem::path& step_path, proto::Manifest& manifest,
                             std::string& why);

// One all-gather of [status, message] per rank, so that every rank can report what another rank
// met (a save failing on rank 1 must name rank 1's reason on rank 0, which prints it). Messages
// are cut at 2 KiB (plenty for a path and a system error).
struct RankOutcome {
  int64_t status;
  std::string message;
};
std::vector<RankOutcome> exchange_outcomes(ProcessGroup& pg, int64_t status,
                                           const std::string& message);

// The HDF5 dataspace of a chunk of `rows` rows along `shard_dim`: the global shape with that
// dim replaced ({rows} for a 0-d tensor).
std::vector<unsigned long long> chunk_dims(const Shape& global_shape, int shard_dim, int64_t rows);

// Rows held by `rank` of `info.world_size` (its valid rows) and the first of them.
inline int64_t first_row(const ShardInfo& info, int rank) {
  return int64_t(rank) * info.rows_per_rank;
}

}  // namespace hd::parallel::ckpt::internal
