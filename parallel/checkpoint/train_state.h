// What a training checkpoint holds besides the parameters: the trainer's position (step,
// sampler, RNG, gradient-accumulation and non-finite counters, metric counters) and AdamW's
// moments, sharded exactly like the parameters they belong to (FSDP shards).
//
// The trainer state travels in the manifest (proto TrainerState), so a reader gets it without
// opening any HDF5 file; the moments are ordinary checkpoint entries named
// "optim.exp_avg.<param>" / "optim.exp_avg_sq.<param>", so they reshard N -> M like parameters.
//
// [Note: resume] Bit-exact resume needs every input of the next step restored: parameters and
// moments (the checkpoint entries), AdamW's step counter (optimizer_step: the caller calls
// opt.set_step_count), the LR (WarmupCosine is a pure function of `step`, so nothing to save),
// the data position (sampler_*) and the trainer's Philox stream (rng_*). The sampler and RNG are
// world-size independent here (the global batch is a function of the position; each rank takes
// its slice), so resuming on another world size continues the same sample stream.
//
// [Note: async memory] AsyncCheckpointer keeps one host copy of every shard it saves (params +
// both moments: 12 bytes per parameter / N on top of training's 16), reused from save to save,
// so a save allocates nothing after the first and the caller is blocked only for a memcpy.
// Its process group's watchdog must allow for the slowest rank's write (the commit all-gather
// waits for it): create io_pg with a timeout_s well above the expected write time.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "autograd/optimizer.h"
#include "parallel/checkpoint/checkpoint.h"
#include "parallel/fsdp.h"

namespace hd::parallel::ckpt {

struct TrainerState {
  int64_t step = 0;            // optimizer steps completed
  int64_t optimizer_step = 0;  // AdamW's bias-correction counter
  std::string stage;           // pipeline stage, e.g. "ps3_pretrain"
  uint64_t sampler_seed = 0;   // data::SamplerState, by value (parallel/ cannot see ps3/)
  int64_t sampler_epoch = 0;
  int64_t sampler_batch = 0;
  uint64_t rng_seed = 0;  // Philox key and offset of the trainer's own stream
  uint64_t rng_offset = 0;
  int64_t micro_batches_per_step = 1;
  int64_t nonfinite_skipped_total = 0;
  int64_t nonfinite_in_a_row = 0;
  std::map<std::string, double> counters;  // monitoring counters to continue (e.g. samples)
  bool operator==(const TrainerState&) const = default;
};

// The entries a training checkpoint saves for `fsdp` and `optimizer` (which must have been
// built from fsdp.param_groups()): every parameter shard and both AdamW moments of it. Creates
// zero moments if the optimizer has not stepped yet, so a fresh run can load into them.
// `allow_frozen`: a parameter absent from the optimizer (frozen: VILA-HD's trainable parts) is
// saved without moments instead of being an error.
std::vector<ShardRef> training_shards(const FSDP& fsdp, AdamW& optimizer,
                                      bool allow_frozen = false);

// Keep the newest `keep_last` complete checkpoints plus every step that is a multiple of
// `keep_every` (0: none); older complete ones are deleted, and so are stale .tmp folders.
// Folders that are neither (a step folder whose manifest is missing or unreadable) are moved
// aside as step_N.invalid-<time> with a warning (move_aside_invalid), for a person to look at.
struct RetentionPolicy {
  int keep_last = 3;
  int64_t keep_every = 0;
};
// Rank 0 only (not collective), and never while a save into `dir` is in flight (its .tmp
// folder would look stale). Returns the folders it removed, oldest first.
std::vector<std::filesystem::path> apply_retention(const std::filesystem::path& dir,
                                                   const RetentionPolicy& policy);

// Saves in the background. save() copies the shards into its own host buffers (the only part
// the training loop waits for), then a writer thread writes and commits them using its own
// process group `io_pg` (a duplicate communicator, never the training one, so its collectives
// cannot interleave with FSDP's). A failure on any rank is reported on every rank by the next
// save() or wait(), as an hd::Error naming the step and the failing rank.
class AsyncCheckpointer {
 public:
  explicit AsyncCheckpointer(std::shared_ptr<ProcessGroup> io_pg, RetentionPolicy retention = {});
  ~AsyncCheckpointer();  // waits for the write in flight
  // Waits for the previous save, then snapshots and starts writing `step`.
  void save(const std::filesystem::path& dir, int64_t step, const std::vector<ShardRef>& shards,
            const TrainerState& state, const SaveOptions& options = {});
  void wait();  // blocks until the write in flight is committed (rethrows its error)
  bool busy() const;
  // Non-blocking: the last save has finished and failed (its error not yet reported by wait()).
  // Each rank's writer finishes at its own time, so a trainer all-reduces this flag at a step
  // boundary and then calls wait() on every rank (every rank's save failed: save_checkpoint
  // fails everywhere or nowhere).
  bool failed() const;
  double last_blocked_seconds() const;  // time save() kept the caller (snapshot + previous)
  // Runs on the writer thread after the snapshot, before any file is written (tests use it to
  // hold a write in flight while training continues).
  void set_before_write_hook(std::function<void()> hook);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Synchronous variants used by tests and by `hdtrain ckpt`: save with a trainer state, and
// read it back (the manifest's TrainerState) together with the shards.
std::filesystem::path save_training_checkpoint(const std::filesystem::path& dir, int64_t step,
                                               const std::vector<ShardRef>& shards,
                                               const TrainerState& state, ProcessGroup& pg,
                                               const SaveOptions& options = {});
struct TrainingLoadResult {
  LoadResult load;
  TrainerState state;
};
// Throws if the manifest has no TrainerState (a plain save_checkpoint or an import: load
// those with load_checkpoint).
TrainingLoadResult load_training_checkpoint(const std::filesystem::path& step_path,
                                            const std::vector<ShardRef>& shards,
                                            const LoadOptions& options = {});

}  // namespace hd::parallel::ckpt
