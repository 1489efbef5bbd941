// hdtrain run: a staged run under mpirun (issue 17): the config's `stages`, in order, each in
// run_dir/stages/<NN>_<kind>/ (stage_config.h), each starting from the previous one's weights:
//   ps3_pretrain  run_pretrain (trainer.h) with the stage's train overrides
//   vilahd_align  run_vila_stage (vilahd_stage.h) from a VILA-HD folder: the previous VILA-HD
//   vilahd_sft    stage's result, or (after ps3_pretrain or first) one built by the function
//                 behind `vilahd init --ps3` (vilahd_init.h) into the stage's init/
//   eval          `hdtrain vilahd eval` on rank 0, the report in the stage folder and run_dir
//
// Resume: a stage that finished has a `done` file (written by rank 0 under a temporary name
// and renamed, after every rank finished the stage), and is never run again; the first stage
// without one runs, resuming from its own checkpoints. So running the same command again after a
// kill, a stop signal or a stop_at_step continues in the right stage at the right step. A stop
// signal between stages is agreed like one inside a stage (one all-reduce at the boundary).
//
// Exit codes as `hdtrain pretrain`: 0 done or stopped (run again to resume), 1 an error every
// rank agreed on, 2 a bad command line or config (checked on every rank before MPI starts, every
// stage of it) or a locked run_dir.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <thread>

#include "autograd/error.h"
#include "launcher/command.h"
#include "launcher/config.h"
#include "launcher/device_choice.h"
#include "launcher/run_lock.h"
#include "launcher/run_setup.h"
#include "launcher/signals.h"
#include "launcher/stage_config.h"
#include "launcher/trainer.h"
#include "launcher/vilahd_init.h"
#include "launcher/vilahd_stage.h"
#include "launcher/vilahd_tools.h"
#include "ops/factory.h"
#include "vilahd/trainable_parts.h"

namespace hd::launcher {
namespace {

namespace fs = std::filesystem;

constexpr const char* kUsage =
    "usage: mpirun -np N hdtrain run --config FILE.textproto [--set FIELD=VALUE ...]\n"
    "                                [--stop-after-stage I] [--print-config]\n"
    "  Runs the config's stages in order (ps3_pretrain, vilahd_align, vilahd_sft, eval; schema\n"
    "  in proto/run_config.proto, e.g. configs/pipeline-demo.textproto), each in\n"
    "  run_dir/stages/<NN>_<kind>/ and starting from the previous stage's weights. Running the\n"
    "  same command again resumes: finished stages (their `done` file) are skipped, the current\n"
    "  one continues from its newest checkpoint.\n"
    "  --set F=V             override a field; stages.N.FIELD=V sets one of stage N (0-based)\n"
    "  --stop-after-stage I  stop (exit 0) once stage I is done, as a preemption at that boundary\n"
    "  --print-config        print the resolved config and exit\n"
    "SIGTERM or SIGUSR1 on any rank: checkpoint at the next step boundary (or stop at the next\n"
    "stage boundary), then exit 0 on every rank.\n";

// Every rank: has any rank seen a stop signal? (one all-reduce, at a stage boundary)
bool stop_agreed(parallel::ProcessGroup& pg) {
  Tensor f = Tensor::empty({1}, DType::f64);
  f.data<double>()[0] = stop_signal_received() != 0 ? 1 : 0;
  pg.all_reduce(f, parallel::ReduceOp::sum).wait();
  return f.data<double>()[0] > 0;
}

// Rank 0 writes `path` atomically (temporary name, then rename).
void write_atomically(const fs::path& path, const std::string& text) {
  const fs::path tmp = path.string() + ".tmp";
  {
    std::ofstream out(tmp);
    out << text;
    HD_CHECK(out.good(), "cannot write ", tmp.string());
  }
  fs::rename(tmp, path);
}

// Other ranks wait for a file rank 0 writes after work that may outlast a collective's timeout.
void wait_for_file(const fs::path& path) {
  while (!fs::exists(path)) std::this_thread::sleep_for(std::chrono::milliseconds(200));
}

// The VILA-HD folder stage i starts from (building it when it comes from PS3 weights).
fs::path vila_start(const proto::RunConfig& c, int i, parallel::ProcessGroup& pg) {
  const proto::StageConfig& s = c.stages(i);
  if (!s.init_from().empty()) return s.init_from();
  if (i > 0 && is_vila_stage(c.stages(i - 1))) return vila_stage_result(stage_dir(c, i - 1));
  const fs::path init = stage_dir(c, i) / "init";
  if (pg.rank() == 0 && !fs::exists(init)) {
    VilaInitSpec spec;
    spec.origin = "stages[" + std::to_string(i) + "] (building the VILA-HD model)";
    spec.tokenizer = c.vilahd().tokenizer();
    spec.seed = c.seed();
    spec.mode = c.vilahd().look_close_mode();
    spec.llm_preset = c.vilahd().llm_preset();
    spec.llm_from = c.vilahd().llm_from();
    spec.ps3_model = c.model();
    spec.num_look_close = c.vilahd().num_look_close();
    spec.select_num_each_scale.assign(c.vilahd().select_num_each_scale().begin(),
                                      c.vilahd().select_num_each_scale().end());
    if (c.vilahd().has_high_res_pos_embed())
      spec.high_res_pos_embed = c.vilahd().high_res_pos_embed();
    if (c.vilahd().has_token_selection_loss_weight())
      spec.selection_weight = c.vilahd().token_selection_loss_weight();
    // After ps3_pretrain: its run folder (the newest complete checkpoint); else vision_from.
    spec.ps3 = i > 0 && c.stages(i - 1).kind() == "ps3_pretrain" ? stage_dir(c, i - 1).string()
                                                                 : c.vilahd().vision_from();
    const fs::path tmp = init.string() + ".tmp";
    fs::remove_all(tmp);
    write_vila_init_folder(spec, tmp);
    fs::rename(tmp, init);
    std::printf("[run] stage %d starts from a new VILA-HD folder %s (vision tower: %s)\n", i,
                init.c_str(), spec.ps3.empty() ? "random" : spec.ps3.c_str());
  }
  pg.barrier().wait();
  return init;
}

// Runs stage i; true when it finished (false: stopped, run again to resume).
bool run_stage(const proto::RunConfig& c, const std::string& text, int i,
               const std::shared_ptr<parallel::ProcessGroup>& pg) {
  const proto::StageConfig& s = c.stages(i);
  const fs::path dir = stage_dir(c, i);
  if (pg->rank() == 0) fs::create_directories(dir);
  pg->barrier().wait();
  if (s.kind() == "ps3_pretrain") {
    proto::RunConfig p = ps3_stage_config(c, i, dir);
    if (p.checkpoint().init_from().empty() && i > 0 && c.stages(i - 1).kind() == "ps3_pretrain")
      throw AgreedError("stages[" + std::to_string(i) +
                        "]: two ps3_pretrain stages in a row need init_from on the second");
    TrainOutcome out = run_pretrain(p, to_text(p), pg, "ps3_pretrain");
    return out.stop_signal == 0 && !out.stopped_at_step && out.steps_done == s.steps();
  }
  if (s.kind() == "eval") {
    const fs::path model =
        s.init_from().empty() ? vila_stage_result(stage_dir(c, i - 1)) : fs::path(s.init_from());
    const fs::path report = dir / "eval.json";
    if (pg->rank() == 0) {
      int rc =
          vilahd_eval({"--checkpoint", model.string(), "--data", c.data().dir(), "--mc", s.mc(),
                       "--max-questions", std::to_string(s.max_questions()), "--max-look-close",
                       std::to_string(s.max_look_close()), "--out", report.string()});
      HD_CHECK(rc == 0, "stages[", i, "] (eval): hdtrain vilahd eval failed (exit ", rc, ")");
      fs::copy_file(report, fs::path(c.run_dir()) / "eval.json",
                    fs::copy_options::overwrite_existing);
      fs::copy_file(dir / "eval.png", fs::path(c.run_dir()) / "eval.png",
                    fs::copy_options::overwrite_existing);
      write_atomically(dir / "evaluated", "ok\n");
    } else {
      wait_for_file(dir / "evaluated");  // may take longer than a collective's timeout
    }
    pg->barrier().wait();
    return true;
  }
  VilaStageOptions o;
  o.stage = s.kind();
  o.run_name = c.name();
  o.init = vila_start(c, i, *pg);
  o.data_dir = c.data().dir();
  o.sft = s.sft();
  o.stage_dir = dir;
  o.trainable = vilahd::parse_trainable_parts(s.trainable());
  o.steps = s.steps();
  o.global_batch = s.global_batch();
  o.micro_batches = std::max<int64_t>(1, s.micro_batches());
  o.lr = s.lr();
  o.min_lr = s.min_lr();
  o.warmup_steps = s.warmup_steps();
  o.weight_decay = s.weight_decay();
  o.grad_clip = s.grad_clip();
  o.selection_weight = s.has_selection_weight() ? s.selection_weight() : -1;
  o.train_w_gt_selection_map = s.train_w_gt_selection_map();
  o.memoize_vision = s.memoize_vision();
  o.prompt_pass_grad = s.prompt_pass_grad();
  const RecomputedTowers recomputed =
      parse_activation_checkpointing(c.train().activation_checkpointing());
  o.recompute_llm = recomputed.llm;
  o.recompute_vision = recomputed.vision;
  o.param_dtype = c.train().precision() == "bf16" ? DType::bf16 : DType::f32;
  o.device = choose_device_here(c.model().device(), pg->local_rank(), -1).device;  // checked
  o.max_length = s.max_length();
  o.seed = c.seed() + uint64_t(i);
  o.checkpoint_every = s.checkpoint_every();
  o.keep_last = c.checkpoint().keep_last();
  o.on_corrupt_error = c.checkpoint().on_corrupt() == "error";
  o.stop_at_step = s.stop_at_step();
  o.max_nonfinite_in_a_row = c.train().max_nonfinite_in_a_row();
  o.serve_metrics = c.monitoring().serve();
  o.port_base = c.monitoring().port_base();
  o.progress = c.monitoring().progress();
  o.jsonl = (dir / "metrics_rank{rank}.jsonl").string();
  o.config_text = text;
  VilaStageOutcome out = run_vila_stage(o, pg);
  if (pg->rank() == 0 && out.finished)
    std::printf("[run] stage %d (%s) done: %s\n", i, s.kind().c_str(), out.result.c_str());
  return out.finished;
}

int run(const std::vector<std::string>& args) {
  const ConfigArgs parsed = split_config_args(args);
  if (parsed.help) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  bool print_only = false;
  int stop_after = -1;
  try {
    const Args a(parsed.rest, {"stop-after-stage"}, {"print-config"});
    print_only = a.flag("print-config");
    stop_after = int(a.get_int("stop-after-stage", -1));
    HD_CHECK(!parsed.config_path.empty(), "missing required option --config");
  } catch (const Error& e) {
    std::fprintf(stderr, "hdtrain run: error: %s\n%s", e.what(), kUsage);
    return 2;
  }
  const std::string& config_path = parsed.config_path;
  const std::vector<std::string>& overrides = parsed.overrides;
  const parallel::LaunchInfo li = parallel::launch_info_from_env();
  proto::RunConfig config;
  try {
    config = load_staged_config(config_path, overrides, li.world_size);
  } catch (const Error& e) {
    if (li.rank == 0) std::fprintf(stderr, "hdtrain run: error: %s\n", e.what());
    return 2;
  }
  DeviceChoice device;
  if (!choose_device_or_report("run", config.model().device(), li.rank, li.local_rank,
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
    const int rank = pg->rank(), n = config.stages_size();
    if (rank == 0)
      std::printf("hdtrain run: '%s', %d stage(s), %d rank(s), config %s -> %s\n",
                  config.name().c_str(), n, pg->world_size(), config_path.c_str(),
                  config.run_dir().c_str());
    std::unique_ptr<RunLock> lock;
    if (!lock_run_dir(config.run_dir(), *pg, lock, "run")) return 2;
    prepare_run(config, text, *pg);
    try {
      for (int i = 0; i < n; ++i) {
        const std::string kind = config.stages(i).kind();
        const fs::path done = stage_dir(config, i) / "done";
        if (fs::exists(done)) {
          if (rank == 0) std::printf("[run] stage %d (%s): done, skipped\n", i, kind.c_str());
          continue;
        }
        if (stop_agreed(*pg)) {
          if (rank == 0)
            std::printf("hdtrain run: stopped before stage %d (%s) by a stop signal\n", i,
                        kind.c_str());
          return 0;
        }
        if (rank == 0) std::printf("[run] stage %d (%s) ...\n", i, kind.c_str());
        std::fflush(stdout);
        const auto t0 = std::chrono::steady_clock::now();
        if (!run_stage(config, text, i, pg)) {
          if (rank == 0)
            std::printf("hdtrain run: stopped in stage %d (%s); run the same command to resume\n",
                        i, kind.c_str());
          return 0;
        }
        const double sec =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        if (rank == 0)
          write_atomically(done, "kind: " + kind + "\nseconds: " + std::to_string(sec) + "\n");
        pg->barrier().wait();
        if (rank == 0)
          std::printf("[run] stage %d (%s) finished in %.1f s\n", i, kind.c_str(), sec);
        if (i == stop_after && i + 1 < n) {
          if (rank == 0)
            std::printf("hdtrain run: stopped after stage %d (--stop-after-stage)\n", i);
          return 0;
        }
      }
      if (rank == 0) std::printf("hdtrain run: done (%d stages)\n", n);
      std::fflush(stdout);
      return 0;
    } catch (const AgreedError& e) {
      if (rank == 0) std::fprintf(stderr, "hdtrain run: error: %s\n", e.what());
      return 1;
    }
  });
}

}  // namespace

HD_REGISTER_COMMAND(run, "a staged run under mpirun: PS3 -> VILA-HD align -> SFT -> eval", run);

}  // namespace hd::launcher
