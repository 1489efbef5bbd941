// hdtrain's side of the ViT training-step comparison (bench/vit_step_compare.py runs it).
// Prints one line per timed step: "step_ms=<total> fwd_ms=<> bwd_ms=<> opt_ms=<>", then a
// summary with medians and GFLOP/s. --precision=bf16 trains the model in bf16 with fp32 master
// weights and AdamW state (autograd/mixed_precision.h), PyTorch's autocast counterpart.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "autograd/allocator.h"
#include "autograd/mixed_precision.h"
#include "autograd/optimizer.h"
#include "autograd/thread_pool.h"
#include "bench/bench_util.h"
#include "bench/vit_model.h"
#include "ops/factory.h"
#include "ops/loss.h"
#include "ops/shape.h"

using namespace hd;
using bench::Clock;
using bench::median;
using bench::ms_since;

int main(int argc, char** argv) {
  int steps = 10, warmup = 3;
  int64_t batch = 8, width = 192, depth = 6, heads = 3, image = 378;
  bool activation_checkpointing = false;
  std::string precision = "fp32";
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&](const char* flag) -> const char* {
      std::string f = std::string(flag) + "=";
      return a.rfind(f, 0) == 0 ? argv[i] + f.size() : nullptr;
    };
    if (auto v = value("--steps"))
      steps = std::atoi(v);
    else if (auto v = value("--warmup"))
      warmup = std::atoi(v);
    else if (auto v = value("--batch"))
      batch = std::atoll(v);
    else if (auto v = value("--width"))
      width = std::atoll(v);
    else if (auto v = value("--depth"))
      depth = std::atoll(v);
    else if (auto v = value("--heads"))
      heads = std::atoll(v);
    else if (auto v = value("--image"))
      image = std::atoll(v);
    else if (a == "--checkpoint")
      activation_checkpointing = true;
    else if (auto v = value("--precision");
             v && (std::string(v) == "fp32" || std::string(v) == "bf16"))
      precision = v;
    else {
      std::fprintf(stderr,
                   "hd_bench_vit_step: unknown argument '%s'\n"
                   "usage: hd_bench_vit_step [--steps=N] [--warmup=N] [--batch=B] [--width=D] "
                   "[--depth=L] [--heads=H] [--image=S] [--checkpoint] [--precision=fp32|bf16]\n",
                   argv[i]);
      return 2;
    }
  }
  try {
    nn::ViTConfig config{.image_size = image,
                         .patch = 14,
                         .channels = 3,
                         .width = width,
                         .depth = depth,
                         .heads = heads,
                         .mlp_hidden = 4 * width,
                         .activation_checkpointing = activation_checkpointing};
    const int64_t classes = 1000;
    bench::ViTClassifier model(config, classes);
    model.initialize(0);
    const DType compute = precision == "bf16" ? DType::bf16 : DType::f32;
    std::unique_ptr<MasterWeights> masters;
    if (compute != DType::f32) masters = std::make_unique<MasterWeights>(model, compute);
    AdamW opt(masters ? masters->param_groups(0.05) : param_groups(model, 0.05), {.lr = 1e-3});
    Generator gen(0, "bench-data");
    Tensor images = to(normal({batch, 3, image, image}, 0, 1, gen), compute);
    std::vector<int64_t> label_values;
    for (int64_t i = 0; i < batch; ++i) label_values.push_back((i * 37) % classes);
    Tensor labels = from_vector(label_values, {batch});

    std::vector<double> total, fwd, bwd, upd;
    for (int s = 0; s < warmup + steps; ++s) {
      auto t0 = Clock::now();
      opt.zero_grad();
      Tensor loss = cross_entropy(to(model.forward(images), DType::f32), labels);
      double f = ms_since(t0);
      auto t1 = Clock::now();
      loss.backward();
      if (masters) masters->grads_to_masters();
      double b = ms_since(t1);
      auto t2 = Clock::now();
      opt.step();
      if (masters) masters->masters_to_params();
      double o = ms_since(t2);
      double t = ms_since(t0);
      if (s < warmup) continue;
      total.push_back(t);
      fwd.push_back(f);
      bwd.push_back(b);
      upd.push_back(o);
      std::printf("step_ms=%.1f fwd_ms=%.1f bwd_ms=%.1f opt_ms=%.1f loss=%.4f\n", t, f, b, o,
                  loss.item<float>());
      std::fflush(stdout);
    }
    double gflop = bench::vit_step_flops(config, batch, classes) / 1e9;
    std::printf(
        "summary: precision=%s threads=%d params=%.2fM median_step_ms=%.1f fwd=%.1f bwd=%.1f "
        "opt=%.1f "
        "gflop_per_step=%.1f gflops=%.1f peak_host_bytes=%lld peak_rss_mib=%.0f\n",
        precision.c_str(), cpu_thread_pool().num_threads(), double(model.num_parameters()) / 1e6,
        median(total), median(fwd), median(bwd), median(upd), gflop, gflop / (median(total) / 1e3),
        (long long)allocator_for(Device::cpu()).stats().peak_bytes, bench::peak_rss_mib());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "hd_bench_vit_step: %s\n", e.what());
    return 1;
  }
  return 0;
}
