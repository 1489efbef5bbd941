// hdtrain pretrain: PS3 pre-training under mpirun (launcher/trainer.h has the loop).
//
// Exit codes, the same on every rank so mpirun's status is meaningful: 0 finished or stopped by
// SIGTERM/SIGUSR1 after a checkpoint (the job can be resumed by running it again), 1 a training
// error every rank agreed on (e.g. too many non-finite losses, a failed checkpoint save), 2 a bad
// command line or config (nothing is written: the config is checked before MPI starts or any file
// is touched) or a run_dir locked by another job (run_lock.h). Any other failure of one rank ends
// the whole job through run_or_abort, naming the rank.
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "autograd/error.h"
#include "launcher/command.h"
#include "launcher/config.h"
#include "launcher/device_choice.h"
#include "launcher/run_lock.h"
#include "launcher/run_setup.h"
#include "launcher/signals.h"
#include "launcher/trainer.h"
#include "parallel/process_group.h"

namespace hd::launcher {
namespace {

constexpr const char* kUsage =
    "usage: mpirun -np N hdtrain pretrain --config FILE.textproto [--set FIELD=VALUE ...]\n"
    "  --config FILE   run configuration, protobuf text (configs/demo.textproto,\n"
    "                  configs/ps3-1.5k.textproto, configs/ps3-4k.textproto; schema in\n"
    "                  proto/run_config.proto)\n"
    "  --set F=V       override one field by its dotted path, repeatable, e.g.\n"
    "                  --set train.steps=20 --set model.vision.scales=756,1512\n"
    "  --print-config  print the resolved config and exit\n"
    "Resumes from the newest complete checkpoint in run_dir/checkpoints that loads (damaged ones\n"
    "are moved aside: checkpoint.on_corrupt). One job per run_dir (run_dir/hdtrain.lock; a second\n"
    "job exits 2 naming the holder). SIGTERM or SIGUSR1 on any rank: checkpoint at the next step\n"
    "boundary, then exit 0 on every rank.\n";

int run(const std::vector<std::string>& args) {
  const ConfigArgs parsed = split_config_args(args);
  if (parsed.help) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  bool print_only = false;
  try {
    print_only = Args(parsed.rest, {}, {"print-config"}).flag("print-config");
    HD_CHECK(!parsed.config_path.empty(), "missing required option --config");
  } catch (const Error& e) {
    std::fprintf(stderr, "hdtrain pretrain: error: %s\n%s", e.what(), kUsage);
    return 2;
  }
  const std::string& config_path = parsed.config_path;
  const std::vector<std::string>& overrides = parsed.overrides;

  // The config is checked on every rank before MPI starts: the same file gives the same answer
  // everywhere, so every rank exits 2 without any collective, and rank 0 says why.
  const parallel::LaunchInfo li = parallel::launch_info_from_env();
  proto::RunConfig config;
  try {
    config = load_run_config(config_path, overrides, li.world_size);
  } catch (const Error& e) {
    if (li.rank == 0) std::fprintf(stderr, "hdtrain pretrain: error: %s\n", e.what());
    return 2;
  }
  DeviceChoice device;
  if (!choose_device_or_report("pretrain", config.model().device(), li.rank, li.local_rank,
                               li.local_world_size, device))
    return 2;
  const std::string text = to_text(config);
  if (print_only) {
    if (li.rank == 0) std::fputs(text.c_str(), stdout);
    return 0;
  }

  install_stop_signal_handlers();
  std::shared_ptr<parallel::ProcessGroup> pg = parallel::make_mpi_group();
  return parallel::run_or_abort(*pg, [&]() -> int {
    if (pg->rank() == 0)
      std::printf("hdtrain pretrain: run '%s', %d rank(s), config %s -> %s\n",
                  config.name().c_str(), pg->world_size(), config_path.c_str(),
                  config.run_dir().c_str());
    std::unique_ptr<RunLock> lock;  // released when the job ends (after the last checkpoint)
    if (!lock_run_dir(config.run_dir(), *pg, lock, "pretrain")) return 2;
    prepare_run(config, text, *pg);
    try {
      TrainOutcome out = run_pretrain(config, text, pg);
      if (pg->rank() == 0) {
        const auto step = static_cast<long long>(out.steps_done);
        if (out.stop_signal)
          std::printf("hdtrain pretrain: stopped at step %lld of %lld (%s)\n", step,
                      static_cast<long long>(config.train().steps()),
                      stop_signal_name(out.stop_signal));
        else if (out.stopped_at_step)
          std::printf("hdtrain pretrain: stopped at step %lld (stop_at_step)\n", step);
        else
          std::printf("hdtrain pretrain: done at step %lld of %lld\n", step,
                      static_cast<long long>(config.train().steps()));
      }
      std::fflush(stdout);
      return 0;
    } catch (const AgreedError& e) {
      if (pg->rank() == 0) std::fprintf(stderr, "hdtrain pretrain: error: %s\n", e.what());
      return 1;
    }
  });
}

}  // namespace

HD_REGISTER_COMMAND(pretrain, "PS3 pre-training under mpirun (--config FILE [--set F=V ...])", run);

}  // namespace hd::launcher
