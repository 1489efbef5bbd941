// MPI collective bus bandwidth (all-reduce, all-gather, reduce-scatter; 1 KiB .. 256 MiB) and
// FSDP vs DDP step time on a small transformer. Run: mpirun -np 2 hd_bench_parallel_collectives
// Timing follows nccl-tests: barrier, time the collective, take the max over ranks; the median
// over iterations is reported; busbw = bytes * bus_factor / time (process_group.h).
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <vector>

#include "autograd/optimizer.h"
#include "ops/elementwise.h"
#include "ops/nn/layers.h"
#include "ops/reduce.h"
#include "parallel/ddp.h"
#include "parallel/fsdp.h"

using namespace hd;
using namespace hd::parallel;
using Clock = std::chrono::steady_clock;

namespace {

double max_over_ranks(ProcessGroup& pg, double v) {
  Tensor t = Tensor::empty({1}, DType::f64);
  t.data<double>()[0] = v;
  pg.all_reduce(t, ReduceOp::max).wait();
  return t.data<double>()[0];
}

template <class F>
double median_seconds(ProcessGroup& pg, int iters, F&& body) {
  std::vector<double> times;
  for (int i = 0; i < iters + 2; ++i) {
    pg.barrier().wait();
    auto t0 = Clock::now();
    body();
    double dt = max_over_ranks(pg, std::chrono::duration<double>(Clock::now() - t0).count());
    if (i >= 2) times.push_back(dt);  // two warm-up iterations
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

class Model : public Module {
 public:
  Model(int64_t dim, int depth) {
    for (int i = 0; i < depth; ++i) {
      blocks.push_back(register_module("block" + std::to_string(i),
                                       std::make_shared<nn::TransformerBlock>(dim, 3, 4 * dim)));
    }
  }
  std::vector<std::shared_ptr<nn::TransformerBlock>> blocks;
};

}  // namespace

int main(int argc, char** argv) {
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
  {
    auto pg = make_mpi_group();
    const int n = pg->world_size();
    const bool root = pg->rank() == 0;
    if (root)
      std::printf("ranks %d\n%-15s %12s %12s %12s   (bus GB/s)\n", n, "bytes", "all_reduce",
                  "all_gather", "reduce_scatter");
    for (int64_t bytes = 1024; bytes <= (int64_t(256) << 20); bytes *= 4) {
      const int64_t elems = bytes / 4;
      const int iters = bytes >= (int64_t(64) << 20) ? 5 : 20;
      Tensor full = Tensor::empty({elems}), part = Tensor::empty({elems / n});
      std::fill(full.data<float>(), full.data<float>() + elems, 1.0f);
      std::fill(part.data<float>(), part.data<float>() + elems / n, 1.0f);
      const int64_t used = elems / n * n * 4;
      Tensor gathered = Tensor::empty({elems / n * n});
      double ar =
          median_seconds(*pg, iters, [&] { pg->all_reduce(full, ReduceOp::sum).synchronize(); });
      double ag = median_seconds(*pg, iters, [&] { pg->all_gather(part, gathered).synchronize(); });
      double rs = median_seconds(
          *pg, iters, [&] { pg->reduce_scatter(gathered, part, ReduceOp::sum).synchronize(); });
      if (root) {
        std::printf("%-15lld %12.3f %12.3f %12.3f\n", (long long)bytes,
                    bytes * bus_factor(Collective::all_reduce, n) / ar / 1e9,
                    used * bus_factor(Collective::all_gather, n) / ag / 1e9,
                    used * bus_factor(Collective::reduce_scatter, n) / rs / 1e9);
      }
    }

    // FSDP vs DDP: width 192, depth 4, batch 4 x 64 tokens per rank, AdamW.
    const int64_t dim = 192, depth = 4;
    Tensor x = Tensor::empty({4, 64, dim});
    for (int64_t i = 0; i < x.numel(); ++i) x.data<float>()[i] = float((i * 7919 % 1000) / 1000.0);
    {
      Model m(dim, depth);
      m.initialize(1);
      DDP ddp(m, pg);
      AdamW opt(param_groups(m, 0.05), {});
      double t = median_seconds(*pg, 10, [&] {
        Tensor h = x;
        for (auto& b : m.blocks) h = b->forward(h);
        mean(square(h)).backward();
        ddp.finish_backward();
        opt.step();
        opt.zero_grad();
      });
      if (root)
        std::printf("DDP  step (psi=%lld): %.2f ms\n", (long long)m.num_parameters(), t * 1e3);
    }
    for (bool reshard : {true, false}) {
      Model m(dim, depth);
      m.initialize(1);
      FSDP fsdp(m, pg);
      std::vector<FSDPUnit*> units;
      for (auto& b : m.blocks) units.push_back(&fsdp.fully_shard(*b, {reshard, {}}));
      FSDPUnit& top = fsdp.fully_shard(m, {reshard, {}});
      AdamW opt(fsdp.param_groups(0.05), {});
      double t = median_seconds(*pg, 10, [&] {
        Tensor y = top.forward(x, [&](const Tensor& in) {
          Tensor h = in;
          for (size_t i = 0; i < units.size(); ++i) {
            h = units[i]->forward(h, [&, i](const Tensor& z) { return m.blocks[i]->forward(z); });
          }
          return h;
        });
        mean(square(y)).backward();
        fsdp.finish_backward();
        opt.step();
        opt.zero_grad();
      });
      if (root)
        std::printf("FSDP step (reshard_after_forward=%d): %.2f ms\n", int(reshard), t * 1e3);
    }
  }
  MPI_Finalize();
  return 0;
}
