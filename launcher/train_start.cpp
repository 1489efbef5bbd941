// Resume (with fallback) and init_from for the pre-training loop (see train_start.h).
#include "launcher/train_start.h"

#include <cstdio>
#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include "autograd/error.h"
#include "launcher/trainer.h"
#include "parallel/checkpoint/host_staging.h"
#include "parallel/checkpoint/resume.h"
#include "proto/checkpoint.pb.h"

namespace hd::launcher {
namespace {

namespace fs = std::filesystem;
namespace ckpt = parallel::ckpt;
using ::hd::detail::concat;

// The parameter shards alone (init_from: weights, no optimizer state).
std::vector<ckpt::ShardRef> parameter_shards(const parallel::FSDP& fsdp) {
  std::vector<ckpt::ShardRef> out;
  for (const auto& unit : fsdp.units())
    for (const auto& p : unit->params()) out.push_back({p.info, p.shard});
  return out;
}

bool is_optimizer_entry(const std::string& name) {
  return name.rfind("optim.", 0) == 0;
}

void init_from(const proto::CheckpointConfig& k, parallel::FSDP& fsdp, int rank) {
  const fs::path from = k.init_from();
  HD_CHECK(fs::exists(from / ckpt::kManifestName), "checkpoint.init_from '", from.string(),
           "' is not a checkpoint step folder (no ", ckpt::kManifestName,
           "; import HF weights with `hdtrain ckpt import`)");
  const std::vector<ckpt::ShardRef> shards = parameter_shards(fsdp);
  // Names first, from the manifest alone: the same answer on every rank, before any data is read.
  std::set<std::string> saved, wanted;
  const proto::Manifest manifest = ckpt::read_manifest(from);
  for (const auto& t : manifest.tensors())
    if (!is_optimizer_entry(t.name())) saved.insert(t.name());  // moments: not initialisation
  std::vector<std::string> missing, unused;
  for (const auto& s : shards) {
    wanted.insert(s.info.name);
    if (!saved.count(s.info.name)) missing.push_back(s.info.name);
  }
  for (const auto& name : saved)
    if (!wanted.count(name)) unused.push_back(name);
  std::string problems;
  if (!missing.empty() && !k.init_from_allow_missing())
    problems += concat(missing.size(),
                       " parameters of the model are missing from it: ", ckpt::name_list(missing),
                       "; set checkpoint.init_from_allow_missing: true to keep them initialised");
  if (!unused.empty() && !k.init_from_allow_unused())
    problems += concat(problems.empty() ? "" : ". ", unused.size(),
                       " of its parameters are unused by the model: ", ckpt::name_list(unused),
                       "; set checkpoint.init_from_allow_unused: true to ignore them");
  if (!problems.empty())
    throw AgreedError(concat("checkpoint.init_from '", from.string(),
                             "' does not match the model (another architecture?): ", problems));
  try {
    ckpt::HostStaging staging(shards);  // device shards are read into host copies first
    ckpt::load_checkpoint(from, staging.host(), {.allow_missing = true, .allow_unexpected = true});
    staging.to_devices();
  } catch (const ckpt::CorruptCheckpoint&) {
    throw;  // found by one rank's reads: not agreed, the job ends through run_or_abort
  } catch (const Error& e) {
    throw AgreedError(concat("checkpoint.init_from: ", e.what()));  // shapes: same everywhere
  }
  if (rank == 0)
    std::printf("[init] parameters from %s: %zu loaded, %zu missing%s, %zu unused%s\n",
                from.string().c_str(), shards.size() - missing.size(), missing.size(),
                missing.empty() ? ""
                                : " (allowed by checkpoint.init_from_allow_missing: kept "
                                  "initialised)",
                unused.size(),
                unused.empty() ? "" : " (allowed by checkpoint.init_from_allow_unused: ignored)");
}

}  // namespace

TrainStart start_training(const proto::RunConfig& c, parallel::FSDP& fsdp, AdamW& opt,
                          parallel::ProcessGroup& pg, const ckpt::TrainerState& fresh) {
  const int rank = pg.rank();
  const fs::path ckpt_dir = fs::path(c.run_dir()) / "checkpoints";
  TrainStart start;
  start.state = fresh;
  ckpt::ResumeOptions ro;
  ro.on_corrupt =
      c.checkpoint().on_corrupt() == "error" ? ckpt::OnCorrupt::error : ckpt::OnCorrupt::fallback;
  ckpt::ResumeResult r;
  ckpt::HostStaging staging(ckpt::training_shards(fsdp, opt));  // host_staging.h
  try {
    r = ckpt::resume_training(ckpt_dir, staging.host(), pg, ro);
  } catch (const ckpt::ResumeError& e) {
    throw AgreedError(e.what());
  }
  if (r.path) staging.to_devices();
  start.fallbacks = int64_t(r.corrupt.size());
  if (r.path) {
    start.state = r.loaded.state;
    if (start.state.micro_batches_per_step != c.train().micro_batches())
      throw AgreedError(concat("checkpoint ", r.path->string(),
                               " was written with train.micro_batches = ",
                               start.state.micro_batches_per_step, " but the config now says ",
                               c.train().micro_batches(), ": the data position would not match"));
    opt.set_step_count(start.state.optimizer_step);
    if (rank == 0) {
      std::printf("[resume] from %s: step %lld (saved on %d ranks)", r.path->string().c_str(),
                  static_cast<long long>(start.state.step), r.loaded.load.saved_world_size);
      if (start.fallbacks > 0)
        std::printf(", after %lld corrupt checkpoint(s) in %.2f s",
                    static_cast<long long>(start.fallbacks), r.seconds);
      std::printf("\n");
    }
    return start;
  }
  if (start.fallbacks > 0 && rank == 0)
    std::printf(
        "[resume] no checkpoint in %s loads (%lld damaged, moved aside, %.2f s): "
        "starting again from the beginning\n",
        ckpt_dir.string().c_str(), static_cast<long long>(start.fallbacks), r.seconds);
  if (r.shards_dirty) {
    start.rebuild_model = true;
    return start;
  }
  if (!c.checkpoint().init_from().empty()) init_from(c.checkpoint(), fsdp, rank);
  return start;
}

}  // namespace hd::launcher
