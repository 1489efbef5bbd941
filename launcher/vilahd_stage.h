// One VILA-HD training stage (alignment or SFT) under mpirun: what `hdtrain pretrain` does for
// PS3, for VILA-HD (issue 17). It starts from a VILA-HD folder, trains on SFT records and ends by
// writing a VILA-HD folder; in between it is resumable at any step.
//
// Design:
// - Model: every rank loads the start folder, freezes what the stage does not train
//   (vilahd/trainable_parts.h: frozen parameters stop requiring gradients) and shards it with
//   shard_vila. AdamW is built from FSDP's groups minus the frozen parameters, so frozen parts
//   have no optimizer state; their FSDP units receive no gradient and issue no reduce-scatter.
// - Data: the global batch of step s is records [s B, (s + 1) B) of an endless stream of
//   epochs, each epoch a permutation that is a pure function of (seed, epoch) (splitmix64 +
//   Fisher-Yates, not std:: distributions, so every libstdc++ gives the same order); rank r
//   takes the r-th slice of it. The position is the step alone, so resume needs nothing else.
//   As in the reference, a batch is all-with-box or all-without: boxes are used only when every
//   record of the GLOBAL batch has one (every rank decides alike). Over-long records
//   (`max_length` text tokens) and records without an answer are dropped, counted and named
//   once at the start, identically on every rank.
// - Loss: the LM loss is a token mean and the selection loss an image mean, so with unequal
//   label tokens per rank, FSDP's gradient average of per-rank means is not the whole batch's
//   gradient. Each rank scales its terms by (its tokens x N / global tokens) and (its boxed
//   images x N / global boxed images), counts known on every rank from the records alone, so
//   N ranks train exactly like one rank on the whole batch (up to summation order).
// - Faults: checkpoints (sharded HDF5 + manifest with the TrainerState, the same machinery as
//   the PS3 trainer: parallel/checkpoint) every `checkpoint_every` steps, at the end, at
//   `stop_at_step` and on SIGTERM/SIGUSR1 (agreed across ranks at the step boundary, as in
//   trainer.h); resume from the newest loadable checkpoint of stage_dir/checkpoints; a
//   non-finite loss on any rank skips the step on every rank.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "parallel/process_group.h"

namespace hd::launcher {

struct VilaStageOptions {
  std::string stage = "vilahd_sft";  // TrainerState.stage and the metrics' `stage` label
  std::string run_name = "default";  // the metrics' `run` label
  std::filesystem::path init;        // VILA-HD folder the stage starts from
  std::filesystem::path data_dir;    // images are relative to it
  std::filesystem::path sft;         // SFT records (JSON lines or JSON)
  std::filesystem::path stage_dir;   // checkpoints/, vila/ (the result), metrics
  std::set<std::string> trainable = {"projector", "top_down_selection"};
  int64_t steps = 10;
  int64_t global_batch = 2;
  // Gradient accumulation: each rank's share runs in this many micro-batches, gradients synced
  // after the last (FSDP set_requires_gradient_sync); global_batch % (world x micro) == 0.
  int64_t micro_batches = 1;
  double lr = 1e-3, min_lr = 0;
  int64_t warmup_steps = 0;
  double weight_decay = 0, beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  double grad_clip = 1.0;                 // 0: off
  double selection_weight = -1;           // < 0: the folder's token_selection_loss_weight
  bool train_w_gt_selection_map = false;  // teacher forcing of boxed records (vila_hd.h)
  // PS3 runs once per record, before step 0 (vilahd::VisionMemo): needs vision_tower and
  // top_down_selection frozen; selection is then bottom-up (or forced) in this stage.
  bool memoize_vision = false;
  bool prompt_pass_grad = false;  // the selection loss trains the LLM too (vila_hd.h)
  // Recompute the LLM's decoder layers / PS3's blocks in backward (train.activation_checkpointing)
  bool recompute_llm = false, recompute_vision = false;
  // train.precision: the model computes in this dtype (FSDP param_dtype; f32 masters and losses)
  DType param_dtype = DType::f32;
  // Where the model trains (loaded on the host, then moved); the records' tensors are made on the
  // host and moved by the model. cpu:1 is the placement tests' second host device.
  Device device = Device::cpu();
  int64_t max_length = 2048;  // text tokens; longer records are dropped and counted
  uint64_t seed = 0;
  int64_t checkpoint_every = 0;  // 0: only at the end / a stop
  int keep_last = 2;
  bool on_corrupt_error = false;  // false: fall back past a damaged checkpoint
  int64_t stop_at_step = 0;       // 0: off
  int64_t max_nonfinite_in_a_row = 5;
  std::vector<int64_t> debug_nonfinite_steps;  // rank 0's loss x NaN at these steps
  // Monitoring.
  bool serve_metrics = false;
  int port_base = 9470;
  bool progress = true;
  std::string jsonl;        // "{rank}" replaced; empty: no file
  std::string config_text;  // stored in checkpoint manifests
};

struct VilaStageOutcome {
  int64_t start_step = 0;  // where this invocation started (a resume: the checkpoint's step)
  int64_t steps_done = 0;  // the step counter at exit
  int stop_signal = 0;     // stopped early by this signal (checkpoint written)
  bool stopped_at_step = false;
  bool finished = false;  // steps_done == steps and the result folder is written
  int64_t nonfinite_skipped = 0;
  int64_t records_dropped = 0;   // over-long or answerless records
  std::vector<double> losses;    // per step run here: the whole batch's loss (NaN: skipped)
  std::filesystem::path result;  // stage_dir/vila when finished
};

// The result folder of a stage (written atomically, last).
std::filesystem::path vila_stage_result(const std::filesystem::path& stage_dir);

// Collective over `pg`. Throws AgreedError (trainer.h) for errors every rank meets alike, hd::Error
// for bad options (checked on every rank before any collective).
VilaStageOutcome run_vila_stage(const VilaStageOptions& options,
                                const std::shared_ptr<parallel::ProcessGroup>& pg);

}  // namespace hd::launcher
