// Sharded checkpoints (issue 5, first slice): one serial HDF5 file per rank plus a protobuf
// manifest written last, loadable on any world size.
//
// [Note: layout] DIR/step_NNNNNNNN/ holds rank_XXXXX.h5 (one per saving rank) and manifest.pb.
// In each HDF5 file a parameter "blocks.0.attn.weight" is the dataset /blocks/0/attn/weight
// holding this rank's valid rows (no padding; empty shards are not written), with attributes
// global_shape and offset (first row), so `h5dump -H` reads like the model. Rows run along the
// tensor's shard dim (parallel/shard.h [Note: shard dim]): dim 0, or for a [1, N, W] table dim 1,
// whose dataset is then [1, rows, W] with a shard_dim attribute.
// One file per rank with serial HDF5 avoids the MPI-IO locking and collective hangs of a shared
// parallel file (anchors E.7).
//
// [Note: commit] Ranks write into step_NNNNNNNN.tmp/, flush, close and fsync their files; one
// all-gather carries every rank's success flag and checksums to rank 0, which writes the manifest,
// fsyncs it and renames the folder. A crash at any point leaves either no step folder or a .tmp
// folder; latest_complete() only returns folders with a readable manifest (anchors E.2).
//
// [Note: invalid folders] A step_N folder whose manifest is missing or unreadable is not a
// checkpoint, and one whose data fails its checksums cannot be resumed from. Left in place, either
// blocks the save of step N when a resumed run gets there again (a crash loop on every rerun), so
// they are renamed to step_N.invalid-<UTC time> (move_aside) with a warning: out of the way of
// saves, resume and retention, and still there for a person to look at. Only rank 0 renames.
//
// [Note: resharding] Saved chunks are rows [row_offset, row_offset + rows) of the global tensor
// along its saved shard dim. Since every dim before that one has size 1, a chunk is one
// contiguous range of the flattened tensor, and so is what a loading rank owns (from its
// ShardInfo, any world size, any shard dim): the reader intersects the two element ranges and
// reads just the chunk rows that hold the intersection, widened to the checksum blocks they touch
// so that every byte read is verified (anchors C.5, E.1). No communication is needed to load, and
// a format 1 checkpoint (a [1, N, W] table saved as one dim-0 row) loads into today's dim-1
// shards, and back, through the same arithmetic.
#pragma once
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "autograd/tensor.h"
#include "parallel/process_group.h"
#include "parallel/shard.h"

namespace hd::proto {
class Manifest;
}

namespace hd::parallel::ckpt {

// Formats (manifest.format_version). 1: every tensor's chunks are dim-0 rows. 2: a tensor may be
// split along a later dim (TensorEntry.shard_dim, all dims before it of size 1; issue 19 item 7).
// save_checkpoint writes 1 when every tensor is split on dim 0 (so older builds still read it)
// and 2 otherwise; load_checkpoint reads both and rejects any other (a build older than format 2
// names the version instead of misreading the chunks). The optional TrainerState of the
// manifest was added compatibly to format 1 (see proto/checkpoint.proto).
inline constexpr uint32_t kFormatVersionDim0 = 1;
inline constexpr uint32_t kFormatVersion = 2;  // the newest this build writes and reads
inline constexpr const char* kManifestName = "manifest.pb";

// One tensor's local shard: `info` describes this rank's rows in the current layout, `shard` is
// a contiguous f32 tensor of at least info.padded_length elements (FSDP's shard layout).
// Optimizer state is saved as further entries with their own names (e.g. "optim.exp_avg.<p>").
struct ShardRef {
  ShardInfo info;
  Tensor shard;
};

// Thrown by load_checkpoint when the checkpoint's data is damaged: a checksum mismatch, a missing,
// truncated or unreadable rank file or dataset, datasets that disagree with the manifest. Other
// load errors (names, shapes or dtypes that do not match the caller's shards) are plain Errors:
// those mean another model or config, and falling back to an older checkpoint would not help.
class CorruptCheckpoint : public Error {
 public:
  using Error::Error;
};

struct SaveOptions {
  std::string config_text;
  // Rows per CRC32C block; 0 picks about 1 MiB worth of rows per block.
  int64_t checksum_block_rows = 0;
};

struct LoadOptions {
  // Entries absent from the checkpoint are left as they are (new modules initialised fresh)
  // instead of failing; they are reported in LoadResult::missing.
  bool allow_missing = false;
  // Checkpoint tensors nobody asked for are ignored instead of failing.
  bool allow_unexpected = false;
};

struct LoadResult {
  int64_t step = 0;
  int saved_world_size = 0;
  std::string config_text;
  std::vector<std::string> missing;     // requested but not in the checkpoint (allow_missing)
  std::vector<std::string> unexpected;  // in the checkpoint but not requested (allow_unexpected)
};

// "DIR/step_00000042".
std::filesystem::path step_dir(const std::filesystem::path& dir, int64_t step);

// Collective over `pg`: every rank passes its shards (same names, same order on every rank).
// Returns the committed step folder. Throws hd::Error on every rank if any rank failed to write;
// then no manifest is written and the step's .tmp folder is removed. Write errors carry the
// system's reason (e.g. "No space left on device"). A leftover step folder of the same step
// without a readable manifest is moved aside first (see [Note: invalid folders]); a complete one
// is an error.
// Test hooks (HD_CKPT_TEST_FAULT, read on every save, inert when unset): fail:R makes rank R's
// file write throw; kill:R makes rank R SIGKILL itself after writing about half of its datasets
// (crash-safety tests); enospc:R writes rank R's file through a link to /dev/full, so the kernel
// answers its writes with ENOSPC exactly as a full disk does (disk-full tests without root).
std::filesystem::path save_checkpoint(const std::filesystem::path& dir, int64_t step,
                                      const std::vector<ShardRef>& shards, ProcessGroup& pg,
                                      const SaveOptions& options = {});

// Not collective: fills each entry's valid rows from the checkpoint at `step_path` (a
// step_NNNNNNNN folder) and zeroes its padding. Works for any saving and loading world size.
// Every entry's name, dtype and shape is checked before any shard is written, so an incompatible
// checkpoint (an Error) leaves the shards untouched; damaged data (CorruptCheckpoint) is found
// while reading, and then the shards hold a mix of old and loaded values.
LoadResult load_checkpoint(const std::filesystem::path& step_path,
                           const std::vector<ShardRef>& shards, const LoadOptions& options = {});

// Reads and checks `step_path`/manifest.pb (include "proto/checkpoint.pb.h" to use it); throws
// naming the folder when it is missing, corrupt or of another format version.
proto::Manifest read_manifest(const std::filesystem::path& step_path);

// The newest step folder under `dir` with a readable manifest of this format; folders without
// one (crashed saves, .tmp folders) are skipped with a warning on stderr. nullopt if none.
std::optional<std::filesystem::path> latest_complete(const std::filesystem::path& dir);

// Renames the step folder `step_path` to "<step_path>.invalid-<YYYYmmddTHHMMSSZ>" (a suffix -2,
// -3, ... if taken) and prints a warning with `why` on stderr. Returns the new path. Not
// collective: one rank (rank 0) calls it.
std::filesystem::path move_aside(const std::filesystem::path& step_path, const std::string& why);

// Rank 0: moves aside every step_N folder under `dir` whose manifest is missing or unreadable
// (not .tmp folders: those are saves in flight or crashed, removed by retention; not a valid
// manifest of another format version: that is not damage). Returns the new paths, oldest first.
std::vector<std::filesystem::path> move_aside_invalid(const std::filesystem::path& dir);

// "a, b, c, ... (N more)": the first `max_names` of `names` for an error message.
std::string name_list(const std::vector<std::string>& names, size_t max_names = 10);

}  // namespace hd::parallel::ckpt
