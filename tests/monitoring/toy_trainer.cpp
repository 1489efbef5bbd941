// A toy trainer for the Prometheus integration test: each rank trains a tiny MLP regression with
// AdamW and reports through hd::monitoring::Monitor exactly as a real trainer would. MPI gives
// rank and size only (no collectives, so pausing one rank does not stall the other: the test
// needs the stall alert to name exactly the paused rank). The "communication" phase times a local
// gradient averaging copy and reports it as an all_reduce; checkpoints write the parameters to a
// file; every 15th step reports a skipped sample.
//
// Control files in --control-dir (the test creates them): pause_rank<R> pauses rank R (it keeps
// serving /metrics but completes no step), stop ends every rank. Rank 0 writes the file_sd target
// list (--sd-file), as the launcher does.
//
//   mpirun -np 2 hd_monitoring_toy_trainer --run ID --port-base P --control-dir D --sd-file F
#include <mpi.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

#include "autograd/error.h"
#include "autograd/optimizer.h"
#include "monitoring/discovery.h"
#include "monitoring/monitor.h"
#include "monitoring/step_timer.h"
#include "ops/elementwise.h"
#include "ops/factory.h"
#include "ops/linalg.h"
#include "ops/reduce.h"

namespace {

using namespace hd;
using namespace hd::monitoring;

bool exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

struct Args {
  std::string run = "toy", control_dir = ".", sd_file;
  int port_base = MetricsServerConfig::kDefaultPortBase;
  double seconds = 60, step_sleep = 0.05;
  int64_t steps = 100000;
};

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--run")
      a.run = v;
    else if (k == "--control-dir")
      a.control_dir = v;
    else if (k == "--sd-file")
      a.sd_file = v;
    else if (k == "--port-base")
      a.port_base = std::stoi(v);
    else if (k == "--seconds")
      a.seconds = std::stod(v);
    else if (k == "--step-sleep")
      a.step_sleep = std::stod(v);
    else if (k == "--steps")
      a.steps = std::stoll(v);
    else
      throw Error("toy_trainer: unknown option " + k);
  }
  return a;
}

int local_rank_from_env(int rank) {
  const char* v = std::getenv("OMPI_COMM_WORLD_LOCAL_RANK");
  return v ? std::atoi(v) : rank;
}

void train(const Args& args, int rank, int size) {
  const int local_rank = local_rank_from_env(rank);
  if (rank == 0 && !args.sd_file.empty()) {
    write_file_sd(args.sd_file, rank_targets({"127.0.0.1"}, size, args.port_base, args.run));
  }
  MonitorConfig mc;
  mc.labels = {.run = args.run, .rank = rank, .stage = "train"};
  mc.info = {.world_size = size,
             .local_rank = local_rank,
             .total_steps = args.steps,
             .loss_terms = {"total", "lm"}};
  mc.server.port_base = args.port_base;
  mc.jsonl_path = args.control_dir + "/metrics_rank" + std::to_string(rank) + ".jsonl";
  mc.progress_config.log_interval_seconds = 5;
  Monitor mon(mc);

  const int64_t batch = 32, in = 16, hidden = 32;
  Generator gen(uint64_t(1 + rank), "toy");
  Tensor w_true = normal({in, 1}, 0, 1, gen);
  Tensor w1 = mul(normal({in, hidden}, 0, 1, gen), 0.25).requires_grad_();
  Tensor w2 = mul(normal({hidden, 1}, 0, 1, gen), 0.25).requires_grad_();
  std::vector<Tensor> params = {w1, w2};
  AdamW opt({ParamGroup{"all", {"w1", "w2"}, params, 0.0}}, {.lr = 1e-2});
  WarmupCosine schedule{1e-2, 10, args.steps};

  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::duration<double>(args.seconds);
  const std::string pause_file = args.control_dir + "/pause_rank" + std::to_string(rank);
  const std::string stop_file = args.control_dir + "/stop";
  for (int64_t step = 0; step < args.steps && std::chrono::steady_clock::now() < deadline;) {
    if (exists(stop_file)) break;
    if (exists(pause_file)) {  // stalled: serve metrics, complete no step
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      continue;
    }
    StepTimer timer;
    Tensor x, y;
    {
      auto p = timer.phase(Phase::data_wait);
      x = normal({batch, in}, 0, 1, gen);
      y = matmul(x, w_true);
    }
    Tensor loss;
    {
      auto p = timer.phase(Phase::forward);
      loss = mean(square(sub(matmul(relu(matmul(x, w1)), w2), y)));
    }
    {
      auto p = timer.phase(Phase::backward);
      opt.zero_grad();
      loss.backward();
    }
    {
      auto p = timer.phase(Phase::communication);
      const auto t0 = std::chrono::steady_clock::now();
      int64_t bytes = 0;
      for (const Tensor& t : params) {
        std::vector<float> g = t.grad().to_vector<float>();  // stands in for an all-reduce
        bytes += int64_t(g.size() * sizeof(float));
      }
      mon.metrics().on_collective(
          "all_reduce", bytes,
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    double grad_norm;
    {
      auto p = timer.phase(Phase::optimizer);
      opt.set_lr(schedule.at(step));
      grad_norm = clip_grad_norm(params, 10.0);
      opt.step();
    }
    const double loss_value = loss.item<float>();
    StepReport rep;
    rep.step = step;
    rep.samples = batch;
    rep.tokens = batch * in;
    rep.patches = batch;
    rep.losses = {{"total", loss_value}, {"lm", loss_value}, {"selection_bce_prior", loss_value}};
    // The toy has no selection: these exercise the export path of the dashboard's selection row
    // (hdtrain_selection) with values of the right kind (probabilities, a gradient norm).
    rep.selection = {{"prior_in_box", 1.0 / (1.0 + loss_value)},
                     {"prior_outside", loss_value / (1.0 + loss_value)},
                     {"grad_norm", grad_norm}};
    rep.learning_rate = schedule.at(step);
    rep.grad_norm = grad_norm;
    rep.timing = timer.finish();
    mon.on_step(rep);
    if (step % 15 == 14) mon.metrics().on_skipped_samples("invalid", 1);
    if (step % 20 == 19) {
      const auto t0 = std::chrono::steady_clock::now();
      const std::string ckpt = args.control_dir + "/ckpt_rank" + std::to_string(rank) + ".bin";
      std::FILE* f = std::fopen(ckpt.c_str(), "wb");
      int64_t bytes = 0;
      for (const Tensor& t : params) {
        std::vector<float> v = t.to_vector<float>();
        if (f) bytes += int64_t(std::fwrite(v.data(), sizeof(float), v.size(), f) * sizeof(float));
      }
      const bool ok = f != nullptr && std::fclose(f) == 0;
      mon.metrics().on_checkpoint(
          bytes, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), ok);
    }
    ++step;
    std::this_thread::sleep_for(std::chrono::duration<double>(args.step_sleep));
  }
  mon.finish();
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  int rc = 0;
  try {
    train(parse(argc, argv), rank, size);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "[rank %d] error: %s\n", rank, e.what());
    rc = 1;
  }
  // No barrier: a rank that fails must not hang the others; mpirun reports the exit codes.
  MPI_Finalize();
  return rc;
}
