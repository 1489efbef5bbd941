// Where a pre-training run starts: its own newest checkpoint that loads and verifies (resume,
// falling back past damaged ones per checkpoint.on_corrupt), else checkpoint.init_from
// (parameters only, every name accounted for), else the fresh initialisation.
//
// Why init_from checks names: a checkpoint of another architecture (deeper, wider, another
// preset) used to load whatever matched and train on, "24 missing, kept initialised; 298 unused"
// scrolling by. That is almost always a wrong path, so missing or unused parameters are an error
// listing them unless the config allows them explicitly (init_from_allow_missing / _unused).
#pragma once

#include <cstdint>

#include "autograd/optimizer.h"
#include "parallel/checkpoint/train_state.h"
#include "parallel/fsdp.h"
#include "proto/run_config.pb.h"

namespace hd::launcher {

struct TrainStart {
  parallel::ckpt::TrainerState state;  // the fresh state unless a checkpoint was loaded
  int64_t fallbacks = 0;               // damaged checkpoints skipped (moved aside)
  // Every checkpoint was damaged and a failed load left part of its values in the shards: the
  // caller builds the model again and calls start_training once more (which then finds nothing
  // to resume and starts fresh or from init_from).
  bool rebuild_model = false;
};

// Collective over `pg`. `fresh` is the state of a run from scratch. Errors every rank meets
// alike (on_corrupt = error, an incompatible checkpoint, init_from names) are AgreedErrors.
TrainStart start_training(const proto::RunConfig& config, parallel::FSDP& fsdp, AdamW& optimizer,
                          parallel::ProcessGroup& pg, const parallel::ckpt::TrainerState& fresh);

}  // namespace hd::launcher
