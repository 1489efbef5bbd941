// One VILA-HD training stage (see vilahd_stage.h for the design). Order of one step, every rank:
//   lr <- schedule(step); the global batch from the step; this rank's samples; per micro-batch
//   forward with the loss terms scaled to the whole batch and backward (gradient sync after the
//   last only); finish_backward; all-reduce [non-finite, stop signal, loss terms]; non-finite
//   anywhere -> zero gradients, count, maybe stop with an error; else clip, AdamW step; report;
//   checkpoint when due; stop when asked.
#include "launcher/vilahd_stage.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <numeric>

#include "autograd/error.h"
#include "autograd/optimizer.h"
#include "launcher/signals.h"
#include "launcher/trainer.h"
#include "launcher/vilahd_memo.h"
#include "monitoring/monitor.h"
#include "ops/factory.h"
#include "ops/shape.h"
#include "parallel/checkpoint/host_staging.h"
#include "parallel/checkpoint/resume.h"
#include "parallel/checkpoint/train_state.h"
#include "ps3/data/bad_input.h"
#include "vilahd/conversation.h"
#include "vilahd/parallelize.h"
#include "vilahd/sft_data.h"
#include "vilahd/trainable_parts.h"
#include "vilahd/vila_checkpoint.h"

namespace hd::launcher {
namespace {

namespace fs = std::filesystem;
namespace ckpt = parallel::ckpt;
using ::hd::detail::concat;

std::string with_rank(std::string path, int rank) {
  for (size_t at; (at = path.find("{rank}")) != std::string::npos;)
    path.replace(at, 6, std::to_string(rank));
  return path;
}

uint64_t splitmix64(uint64_t& x) {
  uint64_t z = (x += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Epoch `epoch`'s order of n records: Fisher-Yates driven by splitmix64(seed, epoch).
std::vector<size_t> epoch_order(size_t n, uint64_t seed, int64_t epoch) {
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  uint64_t state = seed * 0x2545F4914F6CDD1Dull + uint64_t(epoch) + 1;
  for (size_t i = n; i > 1; --i) std::swap(order[i - 1], order[splitmix64(state) % i]);
  return order;
}

// A usable record and what every rank needs to know about it without its image.
struct Item {
  data::SftRecord record;
  int64_t label_tokens = 0;  // answer tokens the LM loss averages over (after the shift)
};

// Records -> items: drops (and names) over-long records and records without an answer.
std::vector<Item> usable_items(const std::vector<data::SftRecord>& records,
                               const vilahd::BpeTokenizer& tok, int64_t max_length, int rank,
                               const fs::path& sft, int64_t& dropped) {
  std::vector<Item> items;
  for (size_t i = 0; i < records.size(); ++i) {
    std::vector<vilahd::ChatMessage> turns;
    for (const auto& [from, value] : records[i].conversations)
      turns.push_back({from == "human" || from == "user"      ? "user"
                       : from == "gpt" || from == "assistant" ? "assistant"
                                                              : from,
                       value});
    std::vector<vilahd::VilaImage> one(1);
    vilahd::VilaSample s = vilahd::conversation_sample(tok, turns, std::move(one));
    int64_t labels = 0;
    for (size_t t = 1; t < s.labels.size(); ++t) labels += s.labels[t] != -100;
    const int64_t length = int64_t(s.input_ids.size());
    if (length > max_length || labels == 0) {
      if (rank == 0)
        std::fprintf(stderr, "hdtrain: warning: %s record %zu skipped: %s\n", sft.c_str(), i + 1,
                     labels == 0
                         ? "no assistant answer"
                         : concat(length, " text tokens > max_length ", max_length).c_str());
      ++dropped;
      continue;
    }
    items.push_back({records[i], labels});
  }
  return items;
}

struct Network {
  std::unique_ptr<vilahd::VilaHdModel> model;
  std::unique_ptr<parallel::FSDP> fsdp;
  std::unique_ptr<AdamW> opt;
  ~Network() {
    if (model) model->set_unit_runner({});
  }
};

enum Slot { kNonFinite, kStop, kLoss, kLm, kSelection, kSlots };

}  // namespace

fs::path vila_stage_result(const fs::path& stage_dir) {
  return stage_dir / "vila";
}

VilaStageOutcome run_vila_stage(const VilaStageOptions& o,
                                const std::shared_ptr<parallel::ProcessGroup>& pg) {
  const int rank = pg->rank(), world = pg->world_size();
  HD_CHECK(o.steps >= 1, "stage ", o.stage, ": steps = ", o.steps, " must be >= 1");
  HD_CHECK(o.global_batch >= 1 && o.global_batch % world == 0, "stage ", o.stage,
           ": global_batch = ", o.global_batch, " must be a positive multiple of the world size ",
           world);
  HD_CHECK(o.micro_batches >= 1 && o.global_batch % (world * o.micro_batches) == 0, "stage ",
           o.stage, ": micro_batches = ", o.micro_batches, " must be >= 1 and divide global_batch ",
           o.global_batch, " / world size ", world);
  HD_CHECK(o.lr > 0, "stage ", o.stage, ": lr = ", o.lr, " must be > 0");
  HD_CHECK(o.warmup_steps >= 0 && o.warmup_steps < o.steps, "stage ", o.stage,
           ": warmup_steps = ", o.warmup_steps, " must be in [0, steps = ", o.steps, ")");
  HD_CHECK(fs::is_regular_file(o.init / "llm" / "tokenizer.json"), "stage ", o.stage,
           ": the start folder '", o.init.string(),
           "' is not a VILA-HD folder (no llm/tokenizer.json)");
  HD_CHECK(fs::is_regular_file(o.sft), "stage ", o.stage, ": SFT file '", o.sft.string(),
           "' does not exist");
  const fs::path ckpt_dir = o.stage_dir / "checkpoints";
  const fs::path tokenizer_json = o.init / "llm" / "tokenizer.json";

  // ---- data (the same on every rank) -------------------------------------------------------
  const vilahd::BpeTokenizer tok = vilahd::BpeTokenizer::load(tokenizer_json);
  data::BadInputLog bad_log;
  bad_log.set_quiet(rank != 0);  // every rank reads every record: rank 0 alone prints the drops
  const std::vector<data::SftRecord> records = data::read_sft(o.sft.string(), bad_log);
  VilaStageOutcome out;
  out.records_dropped = bad_log.count();
  const std::vector<Item> items =
      usable_items(records, tok, o.max_length, rank, o.sft, out.records_dropped);
  HD_CHECK(!items.empty(), "stage ", o.stage, ": SFT file '", o.sft.string(),
           "' has no usable record");
  for (size_t i = 0; i < items.size(); ++i)
    HD_CHECK(fs::is_regular_file(o.data_dir / items[i].record.image), "stage ", o.stage,
             ": SFT file '", o.sft.string(), "' names image '", items[i].record.image,
             "', which is not in ", o.data_dir.string());

  // ---- model, FSDP, optimizer --------------------------------------------------------------
  // Device parameters are sharded over NCCL; host values (agreement, resume, commits) stay on MPI.
  std::shared_ptr<parallel::ProcessGroup> tensor_group =
      o.device.type == DeviceType::cuda ? parallel::make_nccl_group(pg) : pg;
  auto build = [&] {
    auto n = std::make_unique<Network>();
    n->model = vilahd::load_vila_folder(o.init);
    if (o.device != Device::cpu()) n->model->to_(o.device, DType::f32);
    n->model->set_activation_checkpointing(o.recompute_llm, o.recompute_vision);
    vilahd::freeze_all_but(*n->model, o.trainable);
    parallel::FSDPOptions fsdp_options;
    fsdp_options.mixed_precision.param_dtype = o.param_dtype;
    n->fsdp = vilahd::shard_vila(*n->model, tensor_group, fsdp_options);
    std::vector<ParamGroup> groups;
    for (ParamGroup g : n->fsdp->param_groups(o.weight_decay)) {
      ParamGroup kept{g.label, {}, {}, g.weight_decay, g.lr_scale};
      for (size_t i = 0; i < g.names.size(); ++i)
        if (o.trainable.count(vilahd::trainable_part_of(g.names[i])))
          kept.names.push_back(g.names[i]), kept.params.push_back(g.params[i]);
      if (!kept.names.empty()) groups.push_back(std::move(kept));
    }
    HD_CHECK(!groups.empty(), "stage ", o.stage, ": nothing to train");
    n->opt =
        std::make_unique<AdamW>(std::move(groups), AdamWOptions{o.lr, o.beta1, o.beta2, o.eps});
    return n;
  };
  std::unique_ptr<Network> net = build();
  const double sel_weight = o.selection_weight >= 0
                                ? o.selection_weight
                                : net->model->config().token_selection_loss_weight;
  const ps3::VisionConfig vision = net->model->config().vision;

  // ---- resume ------------------------------------------------------------------------------
  ckpt::TrainerState state;
  state.stage = o.stage;
  state.sampler_seed = o.seed;
  state.rng_seed = o.seed;
  int64_t fallbacks = 0;
  for (int attempt = 0; attempt < 2; ++attempt) {
    ckpt::ResumeResult r;
    ckpt::HostStaging staging(ckpt::training_shards(*net->fsdp, *net->opt, true));
    try {
      r = ckpt::resume_training(
          ckpt_dir, staging.host(), *pg,
          {.on_corrupt = o.on_corrupt_error ? ckpt::OnCorrupt::error : ckpt::OnCorrupt::fallback});
    } catch (const ckpt::ResumeError& e) {
      throw AgreedError(e.what());
    }
    if (r.path) staging.to_devices();
    fallbacks += int64_t(r.corrupt.size());
    if (r.path) {
      if (r.loaded.state.stage != o.stage)
        throw AgreedError(concat("checkpoint ", r.path->string(), " belongs to stage '",
                                 r.loaded.state.stage, "', not '", o.stage, "'"));
      state = r.loaded.state;
      net->opt->set_step_count(state.optimizer_step);
      if (rank == 0)
        std::printf("[resume] stage %s from %s: step %lld\n", o.stage.c_str(),
                    r.path->string().c_str(), static_cast<long long>(state.step));
      break;
    }
    if (!r.shards_dirty) break;
    net.reset();  // a damaged checkpoint partly loaded: start again from the start folder
    net = build();
  }
  HD_CHECK(state.step <= o.steps, "stage ", o.stage, ": ", ckpt_dir.string(),
           " holds a checkpoint at step ", state.step, " beyond steps = ", o.steps);
  out.start_step = out.steps_done = state.step;
  vilahd::VilaHdModel& model = *net->model;
  model.set_train_with_gt_selection(o.train_w_gt_selection_map);
  model.set_prompt_pass_grad(o.prompt_pass_grad);
  parallel::FSDP& fsdp = *net->fsdp;
  AdamW& opt = *net->opt;
  WarmupCosine schedule{o.lr, o.warmup_steps, o.steps, o.min_lr};

  // ---- monitoring --------------------------------------------------------------------------
  monitoring::MonitorConfig mc;
  mc.labels = {.run = o.run_name, .rank = rank, .stage = o.stage};
  mc.info.world_size = world;
  mc.info.local_rank = pg->local_rank();
  mc.info.total_steps = o.steps;
  mc.info.loss_terms = {"total", "lm", "selection"};
  mc.serve = o.serve_metrics;
  mc.server.port_base = o.port_base;
  mc.jsonl_path = o.jsonl.empty() ? "" : with_rank(o.jsonl, rank);
  mc.progress = o.progress;
  if (o.device != Device::cpu()) mc.accelerator = o.device;
  monitoring::Monitor monitor(mc);
  monitor.metrics().on_checkpoint_fallbacks(fallbacks);
  if (rank == 0) monitor.metrics().on_skipped_samples("filtered", out.records_dropped);

  auto save = [&](const ckpt::TrainerState& st) {
    const auto t0 = std::chrono::steady_clock::now();
    ckpt::HostStaging staging(ckpt::training_shards(fsdp, opt, true));  // device shards: copies
    staging.to_host();
    const auto& shards = staging.host();
    int64_t bytes = 0;
    for (const auto& s : shards) bytes += s.info.length * int64_t(sizeof(float));
    try {
      ckpt::save_training_checkpoint(ckpt_dir, st.step, shards, st, *pg,
                                     {.config_text = o.config_text});
    } catch (const Error& e) {
      monitor.metrics().on_checkpoint(0, 0, false);
      throw AgreedError(
          concat(e.what(), "; the last complete checkpoint is in ", ckpt_dir.string()));
    }
    if (rank == 0) {
      try {
        ckpt::apply_retention(ckpt_dir, {o.keep_last, 0});
      } catch (const std::exception& e) {
        std::fprintf(stderr, "hdtrain: warning: %s\n", e.what());
      }
    }
    monitor.metrics().on_checkpoint(
        bytes, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), true);
  };

  // ---- the loop ----------------------------------------------------------------------------
  vilahd::ImageCache images(vision, 32);
  const int64_t B = o.global_batch, per_rank = B / world, micro = o.micro_batches,
                per_micro = per_rank / micro;
  const size_t n_items = items.size();
  std::vector<vilahd::VilaSample> memo_samples;  // per item, when memoizing
  if (o.memoize_vision) {
    // PS3 runs once per distinct record image across the job, before step 0 (vilahd_memo.h), so
    // no step ever misses; a batch mixing boxed and unboxed records would miss (another key).
    size_t boxed = 0;
    for (const Item& it : items) boxed += it.record.box.has_value();
    if (boxed != 0 && boxed != n_items)
      throw AgreedError(concat("stage ", o.stage, ": memoize_vision needs every record of ",
                               o.sft.string(), " with a box or none (", boxed, " of ", n_items,
                               " have one)"));
    auto memo = std::make_shared<vilahd::VisionMemo>();
    try {
      model.set_vision_memo(memo);
    } catch (const Error& e) {
      throw AgreedError(concat("stage ", o.stage, ": ", e.what()));
    }
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<const data::SftRecord*> records;
    for (const Item& it : items) records.push_back(&it.record);
    memo_samples = fill_vision_memo_across_ranks(model, *memo, records, boxed != 0, tok, images,
                                                 o.data_dir, *pg);
    if (rank == 0)
      std::printf("[memo] stage %s: PS3 outputs of %zu records kept (%.1f s)\n", o.stage.c_str(),
                  n_items,
                  std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  int64_t cached_epoch = -1;
  std::vector<size_t> order;
  auto item_at = [&](int64_t position) -> const Item& {
    const int64_t epoch = position / int64_t(n_items);
    if (epoch != cached_epoch) order = epoch_order(n_items, o.seed, epoch), cached_epoch = epoch;
    return items[order[size_t(position % int64_t(n_items))]];
  };
  for (int64_t step = state.step; step < o.steps; ++step) {
    monitoring::StepTimer timer;
    const double lr = schedule.at(step);
    opt.set_lr(lr);
    // The global batch: every rank knows all of it (counts), builds only its own samples.
    std::vector<const Item*> global;
    for (int64_t i = 0; i < B; ++i) global.push_back(&item_at(step * B + i));
    bool all_boxed = true;
    int64_t tokens_global = 0;
    for (int64_t i = 0; i < B; ++i) {
      all_boxed = all_boxed && global[size_t(i)]->record.box.has_value();
      tokens_global += global[size_t(i)]->label_tokens;
    }
    std::vector<vilahd::VilaSample> batch;
    {
      auto p = timer.phase(monitoring::Phase::data_wait);
      for (int64_t i = rank * per_rank; i < (rank + 1) * per_rank; ++i) {
        const data::SftRecord& r = global[size_t(i)]->record;
        if (o.memoize_vision)
          batch.push_back(memo_samples[size_t(global[size_t(i)] - items.data())]);
        else
          batch.push_back(
              vilahd::sft_sample(tok, r, images.get(o.data_dir / r.image), vision, all_boxed));
      }
    }
    double local[kSlots] = {};
    const bool poisoned =
        rank == 0 && std::find(o.debug_nonfinite_steps.begin(), o.debug_nonfinite_steps.end(),
                               step) != o.debug_nonfinite_steps.end();
    for (int64_t m = 0; m < micro; ++m) {
      // Gradients stay local until the last micro-batch (FSDP accumulates them unsharded).
      fsdp.set_requires_gradient_sync(m == micro - 1);
      const std::vector<vilahd::VilaSample> part(batch.begin() + m * per_micro,
                                                 batch.begin() + (m + 1) * per_micro);
      int64_t tokens_part = 0;
      for (int64_t i = 0; i < per_micro; ++i)
        tokens_part += global[size_t(rank * per_rank + m * per_micro + i)]->label_tokens;
      auto p = timer.phase(monitoring::Phase::forward);
      vilahd::VilaOutputs res = model.forward(part);
      // Scaled so that FSDP's average over ranks of the sum over micro-batches is the whole
      // batch's gradient (header): LM by the part's share of the answer tokens, selection by
      // 1 / micro (all-boxed batches: per_micro boxed images in every part on every rank).
      const double lm_scale = double(tokens_part) * world / double(tokens_global);
      const double sel_scale = 1.0 / double(micro);
      Tensor loss = mul(res.lm_loss, lm_scale);
      local[kLm] += res.lm_loss.item<double>() * lm_scale / world;
      if (all_boxed && res.selection_loss.defined() && sel_weight > 0) {
        loss = add(loss, mul(res.selection_loss, sel_weight * sel_scale));
        local[kSelection] += res.selection_loss.item<double>() * sel_scale / world;
      }
      if (poisoned) loss = mul(loss, std::numeric_limits<double>::quiet_NaN());
      const double lv = loss.item<double>();
      local[kNonFinite] += std::isfinite(lv) ? 0 : 1;
      local[kLoss] += lv / world;
      auto q = timer.phase(monitoring::Phase::backward);
      loss.backward();  // always: FSDP's reduce-scatters are collectives the others wait in
    }
    double grad_norm = std::numeric_limits<double>::quiet_NaN();
    {
      auto p = timer.phase(monitoring::Phase::communication);
      fsdp.finish_backward();
      local[kStop] = stop_signal_received() != 0 ? 1 : 0;
      Tensor agreed = from_vector(std::vector<double>(local, local + kSlots), {kSlots});
      pg->all_reduce(agreed, parallel::ReduceOp::sum).wait();
      const std::vector<double> v = agreed.to_vector<double>();
      std::copy(v.begin(), v.end(), local);
    }
    bool skipped = local[kNonFinite] > 0;
    {
      auto p = timer.phase(monitoring::Phase::optimizer);
      if (!skipped) {
        grad_norm = fsdp.clip_grad_norm(o.grad_clip > 0 ? o.grad_clip
                                                        : std::numeric_limits<double>::infinity());
        skipped = !std::isfinite(grad_norm);  // the same on every rank (all-reduced norm)
      }
      if (!skipped) opt.step();
      opt.zero_grad();
    }
    state.nonfinite_in_a_row = skipped ? state.nonfinite_in_a_row + 1 : 0;
    state.nonfinite_skipped_total += skipped;
    state.step = step + 1;
    state.optimizer_step = opt.step_count();
    state.sampler_batch = state.step;  // the data position is the step (header)
    state.rng_offset = uint64_t(state.step);
    state.counters["samples_total"] += double(B);

    const double total = skipped ? std::numeric_limits<double>::quiet_NaN() : local[kLoss];
    out.losses.push_back(total);
    monitoring::StepReport report;
    report.step = step;
    report.samples = per_rank;
    for (const auto& s : batch) report.tokens += int64_t(s.input_ids.size());
    report.losses = {{"total", total}, {"lm", local[kLm]}, {"selection", local[kSelection]}};
    report.learning_rate = lr;
    report.grad_norm = grad_norm;
    report.timing = timer.finish();
    monitor.on_step(report);
    out.steps_done = state.step;
    out.nonfinite_skipped = state.nonfinite_skipped_total;

    if (skipped && state.nonfinite_in_a_row >= o.max_nonfinite_in_a_row)
      throw AgreedError(concat("stage ", o.stage, ": non-finite loss in ", state.nonfinite_in_a_row,
                               " steps in a row, last at step ", step,
                               "; the last good checkpoint is in ", ckpt_dir.string()));
    const bool stop_requested = local[kStop] > 0;
    const bool stop_here = stop_requested || (o.stop_at_step > 0 && state.step == o.stop_at_step);
    if ((o.checkpoint_every > 0 && state.step % o.checkpoint_every == 0) || state.step == o.steps ||
        stop_here)
      save(state);
    if (stop_here && state.step < o.steps) {
      out.stop_signal = stop_requested ? std::max(stop_signal_received(), 1) : 0;
      out.stopped_at_step = !stop_requested;
      if (rank == 0)
        std::printf("\n[stop] stage %s: %s at step %lld, checkpoint in %s\n", o.stage.c_str(),
                    stop_requested ? "stop signal" : "stop_at_step",
                    static_cast<long long>(state.step), ckpt_dir.string().c_str());
      break;
    }
  }
  monitor.finish();

  // ---- the result folder: rank 0 writes the gathered parameters ---------------------------
  if (out.steps_done == o.steps && out.stop_signal == 0) {
    std::map<std::string, Tensor> full = fsdp.full_parameters();  // collective
    const fs::path result = vila_stage_result(o.stage_dir);
    if (rank == 0) {
      std::unique_ptr<vilahd::VilaHdModel> copy = vilahd::load_vila_folder(o.init);
      for (auto& [name, p] : copy->named_parameters()) {
        const Tensor src = to(full.at(name), Device::cpu());
        HD_CHECK(src.numel() == p.numel(), "stage result: parameter '", name, "' has ", src.numel(),
                 " values, the model ", p.numel());
        std::memcpy(p.data<float>(), src.data<float>(), size_t(p.numel()) * sizeof(float));
      }
      const fs::path tmp = result.string() + ".tmp";
      std::error_code ec;
      fs::remove_all(tmp, ec);
      fs::remove_all(result, ec);  // a result of an earlier finish of this very stage
      vilahd::save_vila_folder(*copy, tmp, tokenizer_json);
      fs::rename(tmp, result);
    }
    pg->barrier().wait();
    out.finished = true;
    out.result = result;
  }
  return out;
}

}  // namespace hd::launcher
