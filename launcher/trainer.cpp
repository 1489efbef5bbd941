// The pre-training loop (see trainer.h for why decisions are all-reduced and why it is
// deterministic). Order of one step, every rank:
//   lr <- schedule(step); for each micro-batch: next batch, forward, backward (gradient sync only
//   on the last one); finish_backward; all-reduce [non-finite, stop signal, loss terms];
//   non-finite anywhere -> zero gradients, count, maybe stop with an error; else clip, AdamW
//   step, clamp logit_scale; report; checkpoint when due; stop when a signal was seen.
#include "launcher/trainer.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>

#include "autograd/error.h"
#include "autograd/optimizer.h"
#include "launcher/config.h"
#include "launcher/device_choice.h"
#include "launcher/eval_report.h"
#include "launcher/model_config.h"
#include "launcher/signals.h"
#include "launcher/train_start.h"
#include "monitoring/monitor.h"
#include "ops/elementwise.h"
#include "ops/factory.h"
#include "parallel/checkpoint/host_staging.h"
#include "parallel/checkpoint/train_state.h"
#include "ps3/data/loader.h"
#include "ps3/data/records.h"
#include "ps3/data/sampler.h"
#include "ps3/data/text.h"
#include "ps3/parallelize.h"
#include "ps3/pretrain.h"

namespace hd::launcher {
namespace {

namespace fs = std::filesystem;
using parallel::ckpt::TrainerState;
using parallel::ckpt::training_shards;

// "{rank}" in a path -> the rank number.
std::string with_rank(std::string path, int rank) {
  for (size_t at; (at = path.find("{rank}")) != std::string::npos;)
    path.replace(at, 6, std::to_string(rank));
  return path;
}

// The model and what trains it, built together so that they can be built again (train_start.h:
// a damaged checkpoint that partly loaded before every other one failed too).
struct Network {
  ps3::PS3CLIP model;
  std::unique_ptr<parallel::FSDP> fsdp;
  std::unique_ptr<AdamW> opt;
  explicit Network(const ps3::PS3Config& config) : model(config) {}
};

// The shard that holds logit_scale's one value on this rank (undefined on the others).
Tensor logit_scale_shard(const parallel::FSDP& fsdp) {
  for (const auto& unit : fsdp.units())
    for (const auto& p : unit->params())
      if (p.info.name == "logit_scale" && p.info.length > 0) return p.shard;
  return Tensor();
}

// Per-step values all-reduced (sum) across ranks; flags are 0/1 per rank, so "> 0" is "any".
enum Slot {
  kNonFinite,
  kStop,
  kLoss,
  kContrastive,
  kBcePrior,
  kBcePosterior,
  kGtShare,
  // Selection probability inside / outside the box cells: sums and the number of micro-batches
  // that had local rows (a rank without any has nothing to average).
  kPriorIn,
  kPriorOut,
  kPosteriorIn,
  kPosteriorOut,
  kBoxStatCount,
  kSelectionGradSq,  // squared gradient norm of the selection modules (this rank's shards)
  // This rank's background checkpoint write has failed: every rank then collects the error at
  // this step boundary (wait()) instead of training on until the next save.
  kCheckpointFailed,
  // Samples this rank's loader skipped for bad input (undecodable image, bad record) this step.
  kSkippedInputs,
  kSlots
};

}  // namespace

TrainOutcome run_pretrain(const proto::RunConfig& c, const std::string& config_text,
                          const std::shared_ptr<parallel::ProcessGroup>& pg,
                          const std::string& stage) {
  const int rank = pg->rank(), world = pg->world_size();
  const auto& tc = c.train();
  const fs::path ckpt_dir = fs::path(c.run_dir()) / "checkpoints";

  // ---- data -------------------------------------------------------------------------------
  data::BadInputLog bad_log(c.data().strict());
  // Every rank parses every record alike: rank 0 alone prints what it drops (once per job).
  bad_log.set_quiet(rank != 0);
  data::Dataset train_set = data::open_dataset(c.data().train_dir(), bad_log);
  bad_log.set_quiet(false);  // from here on a rank reports the samples it loads itself
  // Records every rank dropped while opening the dataset (counted once, on rank 0, below).
  const int64_t bad_records = bad_log.count();
  HD_CHECK(!train_set.records.empty(), "data.train_dir '", c.data().train_dir(),
           "' holds no usable image/caption pairs");
  const int64_t micro = tc.micro_batches();
  const int64_t micro_global = tc.global_batch() / micro;  // one sampler batch = one micro-batch
  std::vector<int64_t> boxes;
  std::vector<bool> has_global;
  for (const auto& r : train_set.records) {
    boxes.push_back(int64_t(r.boxes.size()));
    has_global.push_back(!r.global_text.empty());
  }
  data::Sampler sampler(boxes, has_global, micro_global, c.seed(), c.data().global_caption_prob());
  HD_CHECK(sampler.batches_per_epoch() >= 1,
           "train.global_batch / train.micro_batches = ", micro_global,
           " is larger than the training set (", train_set.records.size(), " images in ",
           c.data().train_dir(), "): a batch never repeats an image");

  // ---- model, FSDP, optimizer --------------------------------------------------------------
  data::Tokenizer probe_tok(c.data().tokenizer());
  ps3::PS3Config mcfg = to_ps3_config(c.model(), probe_tok.vocab_size());
  const RecomputedTowers recomputed = parse_activation_checkpointing(tc.activation_checkpointing());
  mcfg.vision.activation_checkpointing = recomputed.vision;
  mcfg.text.activation_checkpointing = recomputed.text;
  data::Tokenizer tokenizer(c.data().tokenizer(), mcfg.text.context);
  // model.device (launcher/device_choice.h; the command checked it before MPI started). The
  // model is initialised on the host (the same bits on every device), then moved; the batches
  // stay host tensors, which the model moves (ps3/pretrain.h).
  const Device device = choose_device_here(c.model().device(), pg->local_rank(), -1).device;
  // Device tensors travel over NCCL (FSDP's gathers and reduce-scatters, the cross-rank text
  // exchange of the contrastive loss); host values (the per-step agreement, resume metadata,
  // checkpoint commits) stay on the MPI group.
  std::shared_ptr<parallel::ProcessGroup> tensor_group = pg;
  if (device.type == DeviceType::cuda) {
    tensor_group = parallel::make_nccl_group(pg);
    if (rank == 0)
      std::fprintf(stderr,
                   "hdtrain pretrain: note: training on GPUs (cuda:local rank, NCCL). This path "
                   "is tested on the CPU with a second host device and by docs/cuda.md's GPU "
                   "script; report what fails.\n");
  }
  auto build = [&] {
    auto n = std::make_unique<Network>(mcfg);
    n->model.initialize(c.seed());  // identical on every rank (parameter streams keyed by name)
    if (device != Device::cpu()) n->model.to_(device, DType::f32);
    parallel::FSDPOptions fsdp_options;
    if (tc.precision() == "bf16") fsdp_options.mixed_precision.param_dtype = DType::bf16;
    n->fsdp = ps3::shard_ps3(n->model, tensor_group, fsdp_options);
    n->opt = std::make_unique<AdamW>(
        split_param_groups(n->fsdp->param_groups(tc.weight_decay(), DecayRule{}),
                           ps3::is_selection_parameter, "selection", tc.selection_lr_scale()),
        AdamWOptions{.lr = tc.lr(), .beta1 = tc.beta1(), .beta2 = tc.beta2(), .eps = tc.eps()});
    return n;
  };
  std::unique_ptr<Network> net = build();
  WarmupCosine schedule{tc.lr(), tc.warmup_steps(), tc.steps(), tc.min_lr()};

  // ---- resume / init_from (train_start.h) --------------------------------------------------
  TrainerState fresh;
  fresh.stage = "ps3_pretrain";
  fresh.sampler_seed = c.seed();
  fresh.rng_seed = c.seed();
  fresh.micro_batches_per_step = micro;
  TrainStart start = start_training(c, *net->fsdp, *net->opt, *pg, fresh);
  if (start.rebuild_model) {
    // A damaged checkpoint left part of its values in the shards and none loaded after it: the
    // run starts from scratch, so the model is initialised again (FSDP included).
    const int64_t fallbacks = start.fallbacks;
    net.reset();
    net = build();
    start = start_training(c, *net->fsdp, *net->opt, *pg, fresh);
    start.fallbacks += fallbacks;
  }
  ps3::PS3CLIP& model = net->model;
  parallel::FSDP& fsdp = *net->fsdp;
  AdamW& opt = *net->opt;
  Tensor logit_scale = logit_scale_shard(fsdp);
  TrainerState state = start.state;
  sampler.load_state({state.sampler_seed, state.sampler_epoch, state.sampler_batch});
  const int64_t start_step = state.step;
  HD_CHECK(start_step <= tc.steps(), "run_dir '", c.run_dir(), "' holds a checkpoint at step ",
           start_step, " beyond train.steps = ", tc.steps());

  data::LoaderOptions lo;
  lo.image_size = mcfg.vision.image_size();
  lo.low_res = mcfg.vision.low_res;
  lo.selection_res = mcfg.vision.selection_res;
  lo.threads = c.data().loader_threads();
  lo.prefetch_batches = c.data().prefetch_batches();
  lo.rank = rank;
  lo.world = world;
  lo.random_resized_crop = c.data().random_resized_crop();
  lo.cache_bytes = c.data().cache_mb() << 20;
  // Batches bound for a GPU are assembled in pinned memory: their copies do not block the host.
  lo.pin_memory = device.type == DeviceType::cuda;
  // A bf16 model gets bf16 views (the values it would round them to itself): half the bytes.
  if (tc.precision() == "bf16") lo.image_dtype = DType::bf16;

  // ---- monitoring --------------------------------------------------------------------------
  monitoring::MonitorConfig mc;
  mc.labels = {.run = c.name(), .rank = rank, .stage = stage};
  mc.info.world_size = world;
  mc.info.local_rank = pg->local_rank();
  mc.info.total_steps = tc.steps();
  mc.info.loss_terms = {"total", "contrastive", "selection_bce_prior", "selection_bce_posterior"};
  mc.serve = c.monitoring().serve();
  mc.server.port_base = c.monitoring().port_base();
  mc.jsonl_path = with_rank(c.monitoring().jsonl(), rank);
  mc.progress = c.monitoring().progress();
  if (device != Device::cpu()) mc.accelerator = device;
  monitoring::Monitor monitor(mc);
  monitor.metrics().on_checkpoint_fallbacks(start.fallbacks);
  // hdtrain_samples_skipped_total feeds the data-error alert: every skipped input is counted, by
  // the rank that skipped it (dataset records by rank 0, which all ranks read alike).
  if (rank == 0) monitor.metrics().on_skipped_samples("bad_record", bad_records);

  // ---- checkpoints -------------------------------------------------------------------------
  parallel::ckpt::RetentionPolicy retention{c.checkpoint().keep_last(),
                                            c.checkpoint().keep_every()};
  std::unique_ptr<parallel::ckpt::AsyncCheckpointer> async_ckpt;
  if (c.checkpoint().async())
    async_ckpt = std::make_unique<parallel::ckpt::AsyncCheckpointer>(
        parallel::make_mpi_group({.timeout_s = 3600}), retention);
  // A failed save ends the run on every rank alike (save_checkpoint fails everywhere or nowhere,
  // the async writer reports through wait()), so it is an AgreedError, not a job abort.
  auto checkpoint_failed = [&](const std::exception& e, const std::string& when = "") {
    monitor.metrics().on_checkpoint(0, 0, false);
    return AgreedError(std::string(e.what()) + when + "; the last complete checkpoint is in " +
                       ckpt_dir.string());
  };
  auto wait_for_async_save = [&](const std::string& when = "") {
    if (!async_ckpt) return;
    try {
      async_ckpt->wait();
    } catch (const Error& e) {
      throw checkpoint_failed(e, when);
    }
  };
  auto save = [&](const TrainerState& st) {
    auto t0 = std::chrono::steady_clock::now();
    // Shards on a device are copied to the host for the writer (host_staging.h).
    parallel::ckpt::HostStaging staging(training_shards(fsdp, opt));
    staging.to_host();
    const auto& shards = staging.host();
    int64_t bytes = 0;
    for (const auto& s : shards) bytes += s.info.length * int64_t(sizeof(float));
    try {
      if (async_ckpt) {
        async_ckpt->save(ckpt_dir, st.step, shards, st, {.config_text = config_text});
      } else {
        parallel::ckpt::save_training_checkpoint(ckpt_dir, st.step, shards, st, *pg,
                                                 {.config_text = config_text});
      }
    } catch (const Error& e) {
      throw checkpoint_failed(e);
    }
    if (!async_ckpt && rank == 0) {
      // Housekeeping on rank 0 alone: a failure must not end one rank only (as in async.cpp).
      try {
        parallel::ckpt::apply_retention(ckpt_dir, retention);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "hdtrain: warning: %s\n", e.what());
      }
    }
    double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    monitor.metrics().on_checkpoint(bytes, sec, true);
  };

  std::vector<Tensor> selection_shards;  // for the selection gradient norm
  for (const auto& unit : fsdp.units())
    for (const auto& p : unit->params())
      if (ps3::is_selection_parameter(p.info.name)) selection_shards.push_back(p.shard);
  // ---- the loop ----------------------------------------------------------------------------
  ps3::PretrainOptions po;
  po.look_close_steps = tc.look_close_steps();
  po.gt_forcing = tc.gt_forcing();
  po.pool_gt_only = tc.pool_gt_only();
  po.prior_weight = tc.prior_weight();
  po.posterior_weight = tc.posterior_weight();
  po.selection_loss = tc.selection_loss() == "balanced"        ? ps3::SelectionLoss::balanced
                      : tc.selection_loss() == "balanced_rank" ? ps3::SelectionLoss::balanced_rank
                                                               : ps3::SelectionLoss::bce;
  po.prior_all_regions = tc.prior_target() == "all_regions";
  po.posterior_all_regions = tc.posterior_target() == "all_regions";
  std::vector<int64_t> poison(tc.debug_nonfinite_steps().begin(), tc.debug_nonfinite_steps().end());

  TrainOutcome out;
  out.steps_done = start_step;
  {
    data::Loader loader(train_set, sampler, &tokenizer, lo, bad_log);
    int64_t bad_seen = bad_log.count();
    for (int64_t step = start_step; step < tc.steps(); ++step) {
      monitoring::StepTimer timer;
      double lr = schedule.at(step);
      opt.set_lr(lr);
      double local[kSlots] = {};
      int64_t samples = 0, tokens = 0, patches = 0;
      data::SamplerState position;
      for (int64_t m = 0; m < micro; ++m) {
        fsdp.set_requires_gradient_sync(m == micro - 1);
        data::Batch batch;
        {
          auto p = timer.phase(monitoring::Phase::data_wait);
          batch = loader.next();
        }
        position = batch.state_after;
        ps3::PretrainResult res;
        Tensor loss;
        {
          auto p = timer.phase(monitoring::Phase::forward);
          res = ps3::pretrain_forward(model, batch, po, tensor_group.get());
          loss = micro > 1 ? res.loss * (1.0 / double(micro)) : res.loss;
          if (rank == 0 && std::find(poison.begin(), poison.end(), step) != poison.end())
            loss = loss * std::numeric_limits<double>::quiet_NaN();
        }
        double lv = loss.item<float>();
        if (!std::isfinite(lv)) local[kNonFinite] = 1;
        local[kLoss] += lv;
        local[kContrastive] += res.contrastive / double(micro);
        local[kBcePrior] += res.bce_prior / double(micro);
        local[kBcePosterior] += res.bce_posterior / double(micro);
        local[kGtShare] += res.gt_patch_share / double(micro);
        if (std::isfinite(res.prior_in_box) && std::isfinite(res.posterior_in_box)) {
          local[kPriorIn] += res.prior_in_box, local[kPriorOut] += res.prior_outside;
          local[kPosteriorIn] += res.posterior_in_box;
          local[kPosteriorOut] += res.posterior_outside;
          local[kBoxStatCount] += 1;
        }
        {
          // Always run backward, even for a non-finite loss: FSDP's reduce-scatters inside it
          // are collectives the other ranks are already waiting in.
          auto p = timer.phase(monitoring::Phase::backward);
          loss.backward();
        }
        samples += batch.batch_size();
        patches += res.selected_patches +
                   batch.batch_size() * mcfg.vision.low_grid() * mcfg.vision.low_grid();
        if (batch.tokens.defined()) {
          auto ids = batch.tokens.to_vector<int32_t>();
          for (int32_t id : ids) tokens += id != tokenizer.pad_id();
        }
      }
      double grad_norm = std::numeric_limits<double>::quiet_NaN();
      bool skipped = false;
      {
        auto p = timer.phase(monitoring::Phase::communication);
        fsdp.finish_backward();
        local[kStop] = stop_signal_received() != 0 ? 1 : 0;
        local[kCheckpointFailed] = async_ckpt && async_ckpt->failed() ? 1 : 0;
        local[kSelectionGradSq] = grad_norm_squared(selection_shards);
        const int64_t bad_now = bad_log.count();
        local[kSkippedInputs] = double(bad_now - bad_seen);
        monitor.metrics().on_skipped_samples("bad_input", bad_now - bad_seen);
        bad_seen = bad_now;
        Tensor agreed = from_vector(std::vector<double>(local, local + kSlots), {kSlots});
        pg->all_reduce(agreed, parallel::ReduceOp::sum).wait();
        auto v = agreed.to_vector<double>();
        std::copy(v.begin(), v.end(), local);
      }
      bool stop_requested = local[kStop] > 0;
      // A background save failed on some rank: stop here, on every rank, rather than train on
      // unprotected until the next save reports it.
      if (local[kCheckpointFailed] > 0)
        wait_for_async_save(" (noticed at step " + std::to_string(step) + ")");
      {
        auto p = timer.phase(monitoring::Phase::optimizer);
        skipped = local[kNonFinite] > 0;
        if (!skipped) {
          grad_norm = fsdp.clip_grad_norm(
              tc.grad_clip() > 0 ? tc.grad_clip() : std::numeric_limits<double>::infinity());
          skipped = !std::isfinite(grad_norm);  // same on every rank (all-reduced norm)
        }
        if (!skipped) {
          opt.step();
          if (logit_scale.defined()) ps3::PS3CLIP::clamp_logit_scale(logit_scale);
        }
        opt.zero_grad();
      }
      if (skipped) {
        ++state.nonfinite_skipped_total;
        ++state.nonfinite_in_a_row;
      } else {
        state.nonfinite_in_a_row = 0;
      }
      state.step = step + 1;
      state.optimizer_step = opt.step_count();
      state.sampler_seed = position.seed;
      state.sampler_epoch = position.epoch;
      state.sampler_batch = position.batch;
      state.rng_offset = uint64_t(state.step);
      state.counters["samples_total"] += double(samples);
      state.counters["samples_skipped"] += local[kSkippedInputs];  // all ranks (all-reduced)

      auto mean = [&](Slot s) { return local[s] / double(world); };
      monitoring::StepReport report;
      report.step = step;
      report.samples = samples;
      report.tokens = tokens;
      report.patches = patches;
      double total = skipped ? std::numeric_limits<double>::quiet_NaN() : mean(kLoss);
      report.losses = {{"total", total},
                       {"contrastive", mean(kContrastive)},
                       {"selection_bce_prior", mean(kBcePrior)},
                       {"selection_bce_posterior", mean(kBcePosterior)}};
      auto box_mean = [&](Slot s) {
        return local[kBoxStatCount] > 0 ? local[s] / local[kBoxStatCount] : NAN;
      };
      report.selection = {{"prior_in_box", box_mean(kPriorIn)},
                          {"prior_outside", box_mean(kPriorOut)},
                          {"posterior_in_box", box_mean(kPosteriorIn)},
                          {"posterior_outside", box_mean(kPosteriorOut)},
                          {"grad_norm", std::sqrt(local[kSelectionGradSq])}};
      report.learning_rate = lr;
      report.grad_norm = grad_norm;
      report.timing = timer.finish();
      monitor.on_step(report);
      out.steps_done = state.step;
      out.nonfinite_skipped = state.nonfinite_skipped_total;

      if (skipped && state.nonfinite_in_a_row >= tc.max_nonfinite_in_a_row()) {
        wait_for_async_save();
        throw AgreedError("non-finite loss in " + std::to_string(state.nonfinite_in_a_row) +
                          " steps in a row (train.max_nonfinite_in_a_row = " +
                          std::to_string(tc.max_nonfinite_in_a_row()) + "), last at step " +
                          std::to_string(step) + "; the last good checkpoint is in " +
                          ckpt_dir.string());
      }
      bool stop_here = stop_requested || (tc.stop_at_step() > 0 && state.step == tc.stop_at_step());
      int64_t every = c.checkpoint().every_steps();
      if ((every > 0 && state.step % every == 0) || state.step == tc.steps() || stop_here)
        save(state);
      if (stop_here) {
        out.stop_signal = stop_requested ? std::max(stop_signal_received(), 1) : 0;
        out.stopped_at_step = !stop_requested;
        if (rank == 0) {
          if (stop_requested)
            std::printf(
                "\n[stop] a stop signal reached a rank: checkpoint at step %lld in %s; "
                "exiting (run again to resume)\n",
                static_cast<long long>(state.step), ckpt_dir.string().c_str());
          else
            std::printf("\n[stop] train.stop_at_step = %lld reached: checkpoint written\n",
                        static_cast<long long>(tc.stop_at_step()));
        }
        break;
      }
    }
  }
  wait_for_async_save();
  monitor.finish();
  if (rank == 0 && state.nonfinite_skipped_total > 0)
    std::printf("[train] %lld step(s) skipped for a non-finite loss\n",
                static_cast<long long>(state.nonfinite_skipped_total));
  if (rank == 0 && state.counters["samples_skipped"] > 0)
    std::printf(
        "[train] %lld sample(s) skipped for bad input over the run, all ranks (each named "
        "above; hdtrain_samples_skipped_total)\n",
        static_cast<long long>(state.counters["samples_skipped"]));

  bool finished = out.steps_done == tc.steps() && out.stop_signal == 0;
  if (finished && c.eval().at_end() && !c.data().eval_dir().empty())
    evaluate_and_report(c, mcfg, fsdp, tokenizer, *pg);
  pg->barrier().wait();
  return out;
}

}  // namespace hd::launcher
