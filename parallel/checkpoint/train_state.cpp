// Training checkpoints: FSDP shards + AdamW moments as entries, the TrainerState in the manifest,
// and retention. The async writer is in async.cpp.
//
// Why the moments are separate entries rather than attributes of the parameter datasets: an
// entry carries its own ShardInfo, so the resharding reader treats a moment exactly like a
// parameter (N -> M with no special case), and a model-only consumer (export, import as
// initialisation) skips them by name ("optim." prefix) without reading a byte of them.
#include <algorithm>
#include <iostream>
#include <map>
#include <regex>
#include <system_error>
#include <utility>

#include "autograd/error.h"
#include "parallel/checkpoint/layout.h"
#include "parallel/checkpoint/train_state.h"
#include "proto/checkpoint.pb.h"

namespace hd::parallel::ckpt {
namespace fs = std::filesystem;

namespace {

void to_proto(const TrainerState& s, proto::TrainerState& p) {
  p.set_step(s.step);
  p.set_optimizer_step(s.optimizer_step);
  p.set_stage(s.stage);
  p.set_sampler_seed(s.sampler_seed);
  p.set_sampler_epoch(s.sampler_epoch);
  p.set_sampler_batch(s.sampler_batch);
  p.set_rng_seed(s.rng_seed);
  p.set_rng_offset(s.rng_offset);
  p.set_micro_batches_per_step(s.micro_batches_per_step);
  p.set_nonfinite_skipped_total(s.nonfinite_skipped_total);
  p.set_nonfinite_in_a_row(s.nonfinite_in_a_row);
  for (const auto& [k, v] : s.counters) (*p.mutable_counters())[k] = v;
}

TrainerState from_proto(const proto::TrainerState& p) {
  TrainerState s;
  s.step = p.step();
  s.optimizer_step = p.optimizer_step();
  s.stage = p.stage();
  s.sampler_seed = p.sampler_seed();
  s.sampler_epoch = p.sampler_epoch();
  s.sampler_batch = p.sampler_batch();
  s.rng_seed = p.rng_seed();
  s.rng_offset = p.rng_offset();
  s.micro_batches_per_step = p.micro_batches_per_step();
  s.nonfinite_skipped_total = p.nonfinite_skipped_total();
  s.nonfinite_in_a_row = p.nonfinite_in_a_row();
  for (const auto& [k, v] : p.counters()) s.counters[k] = v;
  return s;
}

ShardInfo renamed(ShardInfo info, const std::string& prefix) {
  info.name = prefix + info.name;
  return info;
}

}  // namespace

std::vector<ShardRef> training_shards(const FSDP& fsdp, AdamW& optimizer, bool allow_frozen) {
  // Where each shard sits in the optimizer, by name; the tensor must be the very shard (same
  // bytes), or the moments saved would belong to some other copy.
  std::map<std::string, std::pair<size_t, size_t>> where;
  const auto& groups = optimizer.groups();
  for (size_t g = 0; g < groups.size(); ++g)
    for (size_t i = 0; i < groups[g].names.size(); ++i) where[groups[g].names[i]] = {g, i};
  std::vector<ShardRef> params, avg, avg_sq;
  for (const auto& unit : fsdp.units()) {
    for (const FSDPParam& p : unit->params()) {
      auto it = where.find(p.info.name);
      if (it == where.end() && allow_frozen) {
        params.push_back({p.info, p.shard});  // frozen: the parameter alone, no moments
        continue;
      }
      HD_CHECK(it != where.end(), "training_shards: parameter '", p.info.name,
               "' is not in the optimizer (build AdamW from fsdp.param_groups())");
      const auto [g, i] = it->second;
      HD_CHECK(groups[g].params[i].raw_data() == p.shard.raw_data(),
               "training_shards: the "
               "optimizer's tensor for '",
               p.info.name,
               "' is not FSDP's shard of it (build AdamW "
               "from fsdp.param_groups())");
      params.push_back({p.info, p.shard});
      avg.push_back({renamed(p.info, "optim.exp_avg."), optimizer.exp_avg(g, i)});
      avg_sq.push_back({renamed(p.info, "optim.exp_avg_sq."), optimizer.exp_avg_sq(g, i)});
    }
  }
  params.insert(params.end(), avg.begin(), avg.end());
  params.insert(params.end(), avg_sq.begin(), avg_sq.end());
  return params;
}

fs::path save_training_checkpoint(const fs::path& dir, int64_t step,
                                  const std::vector<ShardRef>& shards, const TrainerState& state,
                                  ProcessGroup& pg, const SaveOptions& options) {
  return internal::save_checkpoint_with(dir, step, shards, pg, options, [&](proto::Manifest& man) {
    to_proto(state, *man.mutable_trainer_state());
  });
}

TrainingLoadResult load_training_checkpoint(const fs::path& step_path,
                                            const std::vector<ShardRef>& shards,
                                            const LoadOptions& options) {
  const proto::Manifest man = read_manifest(step_path);
  HD_CHECK(man.has_trainer_state(), "checkpoint ", step_path.string(), ": no trainer state in ",
           kManifestName,
           " (saved by save_checkpoint or `hdtrain ckpt import`, not by a training run; load it "
           "with load_checkpoint to initialise parameters)");
  TrainingLoadResult r;
  r.state = from_proto(man.trainer_state());
  r.load = load_checkpoint(step_path, shards, options);
  return r;
}

std::vector<fs::path> apply_retention(const fs::path& dir, const RetentionPolicy& policy) {
  HD_CHECK(policy.keep_last >= 1, "checkpoint retention: keep_last must be at least 1, got ",
           policy.keep_last, " (deleting every checkpoint is never intended)");
  HD_CHECK(policy.keep_every >= 0, "checkpoint retention: keep_every must be >= 0, got ",
           policy.keep_every);
  struct Folder {
    int64_t step;
    fs::path path;
  };
  std::vector<Folder> complete, stale;
  const std::regex pattern(R"(step_(\d{8})(\.tmp)?)");
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    std::smatch m;
    const std::string name = e.path().filename().string();
    if (!e.is_directory() || !std::regex_match(name, m, pattern)) continue;
    const int64_t step = std::stoll(m[1].str());
    if (m[2].matched) {
      stale.push_back({step, e.path()});
      continue;
    }
    try {
      read_manifest(e.path());
      complete.push_back({step, e.path()});
    } catch (const Error&) {
      // Not a checkpoint: moved aside below ([Note: invalid folders]), never counted or deleted
      // (a manifest of another format version stays where it is, with a warning).
    }
  }
  HD_CHECK(!ec, "checkpoint retention: cannot list ", dir.string(), ": ", ec.message());
  move_aside_invalid(dir);
  std::sort(complete.begin(), complete.end(),
            [](const Folder& a, const Folder& b) { return a.step > b.step; });
  std::vector<Folder> doomed = stale;
  for (size_t i = 0; i < complete.size(); ++i) {
    const bool recent = i < size_t(policy.keep_last);
    const bool permanent = policy.keep_every > 0 && complete[i].step % policy.keep_every == 0;
    if (!recent && !permanent) doomed.push_back(complete[i]);
  }
  // Oldest first; at equal steps a stale .tmp before the complete folder (stable sort).
  std::stable_sort(doomed.begin(), doomed.end(),
                   [](const Folder& a, const Folder& b) { return a.step < b.step; });
  std::vector<fs::path> removed;
  for (const Folder& f : doomed) {
    fs::remove_all(f.path, ec);
    HD_CHECK(!ec, "checkpoint retention: cannot delete ", f.path.string(), ": ", ec.message());
    removed.push_back(f.path);
  }
  return removed;
}

}  // namespace hd::parallel::ckpt
