// The PS3 pre-training loop behind `hdtrain pretrain`: FSDP, AdamW + warmup/cosine, gradient
// accumulation, clipping, monitoring, checkpoints (periodic, final, on a stop signal),
// automatic resume, the non-finite policy, and the held-out evaluation at the end.
//
// Why every decision that ends or skips a step is all-reduced: a rank that decides alone
// (its own NaN, its own SIGTERM) would leave the others inside the next FSDP collective forever.
// One small all-reduce per step carries [non-finite on this rank, stop signal on this rank, loss
// terms], so every rank skips, stops or continues at the same step, and every rank reports the
// same (cross-rank mean) loss.
//
// Determinism: the model is initialised from the seed identically on every rank, the sampler and
// loader are pure functions of (seed, position), kernels are thread-count independent and the
// collectives reduce in a fixed order, so the same config gives the same losses; a checkpoint
// holds everything the next step reads (parallel/checkpoint/train_state.h [Note: resume]), so a
// resumed run continues bit-exactly.
#pragma once

#include <memory>
#include <string>

#include "parallel/process_group.h"
#include "proto/run_config.pb.h"

namespace hd::launcher {

struct TrainOutcome {
  int64_t steps_done = 0;  // the step counter at exit (resumed runs count from the checkpoint)
  int stop_signal = 0;     // non-zero: stopped early by this signal (checkpoint written)
  bool stopped_at_step = false;  // stopped early by train.stop_at_step (checkpoint written)
  int64_t nonfinite_skipped = 0;
};

// An error every rank raised at the same step (e.g. too many non-finite losses in a row): the
// caller prints it once and exits non-zero on every rank without aborting the job.
class AgreedError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Runs the whole job on this rank (collective over `pg`). `config` must be resolved and
// validated for pg.world_size(); `config_text` is stored in checkpoints.
// `stage` is the metrics' stage label ("pretrain"; `hdtrain run` passes "ps3_pretrain").
TrainOutcome run_pretrain(const proto::RunConfig& config, const std::string& config_text,
                          const std::shared_ptr<parallel::ProcessGroup>& pg,
                          const std::string& stage = "pretrain");

}  // namespace hd::launcher
