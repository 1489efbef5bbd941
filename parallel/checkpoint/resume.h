// Resuming a training run from its checkpoint folder without a person at hand.
//
// Why the newest checkpoint is not simply loaded: a run left alone for days meets checkpoints that
// are invalid (no or an unreadable manifest: a crash during a copy, a full disk) or damaged (a
// flipped byte, a truncated shard). Loading the newest one anyway either stops the run for good or,
// worse, loops: resume skips step_N, retrains to N and fails to save over the leftover. So
// resume_training moves invalid folders aside ([Note: invalid folders] in checkpoint.h), and with
// OnCorrupt::fallback moves a checkpoint whose data fails to load aside and tries the next older
// one, until one loads and verifies on every rank.
//
// Why it is collective: ranks read different rows, so rank 1 may find a bad block that rank 0
// never reads. Rank 0 picks each candidate and broadcasts its step, every rank loads it, and one
// all-gather of [status, message] per attempt tells every rank how every rank did: all ranks load
// the same checkpoint or none, and every rank returns or throws the same way.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "parallel/checkpoint/train_state.h"

namespace hd::parallel::ckpt {

enum class OnCorrupt { fallback, error };

struct ResumeOptions {
  OnCorrupt on_corrupt = OnCorrupt::fallback;
};

struct ResumeResult {
  std::optional<std::filesystem::path> path;  // the checkpoint every rank loaded; none: fresh start
  TrainingLoadResult loaded;                  // valid when `path` is set
  // Damaged checkpoints skipped on the way (fallback), by their original paths; rank 0 moved
  // each aside (its warning says where to).
  std::vector<std::filesystem::path> corrupt;
  double seconds = 0;  // wall time of the whole search (loads included)
  // True when a failed load overwrote part of the shards and no later load replaced them all:
  // the caller must initialise the model again before training from scratch.
  bool shards_dirty = false;
};

// Thrown on every rank, with the same message, when resuming must stop: a damaged checkpoint
// under OnCorrupt::error, or a checkpoint that does not fit the shards (another model or
// config; no fallback, since an older checkpoint of the same run would not fit either).
class ResumeError : public Error {
 public:
  using Error::Error;
};

// Collective over `pg`. Rank 0 first moves aside the step folders under `dir` without a valid
// manifest (warning on stderr), then the newest complete checkpoint is loaded into `shards` on
// every rank (load_training_checkpoint, all checksums verified). On damage: OnCorrupt::error
// throws ResumeError naming the rank and the reason; OnCorrupt::fallback prints a loud warning,
// moves the folder aside and tries the next older one. No checkpoint: an empty result.
ResumeResult resume_training(const std::filesystem::path& dir, const std::vector<ShardRef>& shards,
                             ProcessGroup& pg, const ResumeOptions& options = {});

}  // namespace hd::parallel::ckpt
