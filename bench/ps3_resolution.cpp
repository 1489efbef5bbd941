// PS3's cost claim, measured: with the number of selected patches k fixed, a training step of
// the vision model should cost about the same at 756, 1512 and 3780 (only the top-k scan and
// the per-scale residual gather see the grid), while a global SigLIP-style pass over every patch
// grows with (res/14)^4 in attention and (res/14)^2 elsewhere.
//
// Prints, for the demo vision config (or --paper-width etc.), one row per max scale: median
// forward+backward ms and the allocator's peak bytes, with ratios to 756; then analytic
// training FLOPs of PS3 vs a global pass at that resolution, for the demo and the paper
// (SO400M, k = 2560) configs. With --recompute, each row also runs the same model with
// activation checkpointing (every block recomputed in backward), alternating with the plain run
// rep by rep, and prints its time and peak as ratios to the plain run's; with --bf16, a bf16
// copy of the model (train.precision bf16: bf16 weights and activations, ops computing in f32
// where they must, ops/cpu_half.h; bf16 image views, as its loader makes them) the same way:
// its wall ms, process CPU ms and the CPU ms as a ratio to the plain run's.
// --max=R runs only the row whose largest scale is R (the ratios are then to that row).
// --bf16-only skips the fp32 run (its columns print as "-"): for alternating this binary's bf16
// step with another binary's fp32 step (docs/performance.md, the PS3 target).
// Usage: hd_bench_ps3_resolution [--reps=N] [--batch=B] [--steps=S] [--recompute] [--bf16]
//                                [--bf16-only] [--max=756|1512|3780]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <string>
#include <vector>

#include "autograd/allocator.h"
#include "ops/elementwise.h"
#include "ops/factory.h"
#include "ops/reduce.h"
#include "ops/shape.h"
#include "ps3/config.h"
#include "ps3/vision_model.h"

using namespace hd;
using Clock = std::chrono::steady_clock;

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty()
             ? 0
             : (v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]));
}

// Forward FLOPs of one pre-LN block: N queries over Nk keys (matmuls only; 2 per MAC). The
// attention term (QK^T and PV) is the only one quadratic in tokens; it is counted separately so
// the table can show both accountings (the paper does not say which its 79x uses).
double block_linear_flops(double N, double W, double mlp) {
  return 2 * N * (3 * W * W + W * W + 2 * W * mlp);
}
double block_attention_flops(double N, double Nk, double W) {
  return 2 * 2 * N * Nk * W;
}
double block_flops(double N, double Nk, double W, double mlp) {
  return block_linear_flops(N, W, mlp) + block_attention_flops(N, Nk, W);
}

struct Flops {
  double ps3 = 0, global = 0;
  double ps3_attention = 0, global_attention = 0;  // the quadratic parts of the above
};

// Training FLOPs (3x forward) of one image: PS3 = low-res pass + selection branch + k selected
// tokens per step attending to 729 + k keys (+ MAP heads), vs global = every patch at `res`.
Flops training_flops(const ps3::VisionConfig& c, int64_t res, int64_t k, int64_t steps) {
  const double W = double(c.width), mlp = double(c.mlp_hidden), L = double(c.depth);
  const double P = double(c.channels * c.patch * c.patch);
  const double n_low = double(c.low_grid() * c.low_grid());
  auto map_head = [&](double n) { return 2 * n * 2 * W * W + 2 * W * W * 2 + 2 * 2 * W * mlp; };
  double low = L * block_flops(n_low, n_low, W, mlp) + 2 * n_low * P * W + map_head(n_low);
  // Selection: selection_feature_proj (in = |layers| W, hidden = in, out = ns W) over 729 tokens,
  // ConvNeXt on selection_res, two prompt cosines (negligible).
  const double sel_in = double(c.select_layers.size()) * W, ns = double(c.scales.size());
  double sel = 2 * n_low * (sel_in * sel_in + sel_in * ns * W);
  const double gs = double(c.selection_res / c.convnext_stem), hid = double(c.convnext_hidden);
  sel += 2 * gs * gs *
         (P / (c.patch * c.patch) * c.convnext_stem * c.convnext_stem * hid +
          c.convnext_depth * (49 * hid + 8 * hid * hid) + hid * c.convnext_out);
  double high = 0;
  for (int64_t s = 0; s < steps; ++s) {
    high += L * block_flops(double(k), n_low + double(k), W, mlp) + 2 * double(k) * P * W +
            2 * double(k) * 27 * 27 * W;  // selective position embedding
  }
  high += map_head(double(k * steps));
  const double n = double((res / c.patch) * (res / c.patch));
  double global = L * block_flops(n, n, W, mlp) + 2 * n * P * W + map_head(n);
  double ps3_attention = L * block_attention_flops(n_low, n_low, W);
  for (int64_t s = 0; s < steps; ++s)
    ps3_attention += L * block_attention_flops(double(k), n_low + double(k), W);
  return {3 * (low + sel + high), 3 * global, 3 * ps3_attention,
          3 * L * block_attention_flops(n, n, W)};
}

// Deterministic synthetic patches (values in [-1, 1]), cheap next to the model.
Tensor synthetic_patches(int64_t b, int64_t scale, const std::vector<int64_t>& idx) {
  std::vector<float> v(idx.size() * 3 * 14 * 14);
  for (size_t t = 0; t < idx.size(); ++t) {
    for (size_t e = 0; e < 588; ++e) {
      v[t * 588 + e] =
          float(std::sin(0.001 * double(idx[t] * 588 + int64_t(e)) + double(b + scale)));
    }
  }
  return from_vector<float>(v, {int64_t(idx.size()), 3, 14, 14});
}

}  // namespace

int main(int argc, char** argv) {
  int reps = 5;
  int64_t batch = 2, steps = 1;
  int64_t only_max = 0;  // --max=R: only the row whose largest scale is R
  bool recompute = false, bf16 = false, bf16_only = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a.rfind("--reps=", 0) == 0)
      reps = std::atoi(a.c_str() + 7);
    else if (a.rfind("--batch=", 0) == 0)
      batch = std::atoll(a.c_str() + 8);
    else if (a.rfind("--steps=", 0) == 0)
      steps = std::atoll(a.c_str() + 8);
    else if (a == "--recompute")
      recompute = true;
    else if (a == "--bf16")
      bf16 = true;
    else if (a == "--bf16-only")
      bf16 = bf16_only = true;
    else if (a.rfind("--max=", 0) == 0)
      only_max = std::atoll(a.c_str() + 6);
    else {
      std::fprintf(stderr,
                   "usage: hd_bench_ps3_resolution [--reps=N] [--batch=B] [--steps=S] "
                   "[--recompute] [--bf16] [--bf16-only] [--max=756|1512|3780]\n");
      return 2;
    }
  }
  try {
    const ps3::VisionConfig demo = ps3::PS3Config::demo(1000).vision;
    const std::vector<std::vector<int64_t>> scale_sets = {{756}, {756, 1512}, {756, 1512, 3780}};
    std::printf(
        "PS3 vision training step, demo config (width %lld, depth %lld, k = %lld per step, "
        "%lld step(s), batch %lld, median of %d)\n",
        (long long)demo.width, (long long)demo.depth, (long long)demo.max_select, (long long)steps,
        (long long)batch, reps);
    // cpu_ms (process CPU time, all threads) is the figure to compare on a shared machine.
    std::printf("%-6s %-14s %9s %9s %7s %10s %7s %9s", "max", "k split", "step_ms", "cpu_ms",
                "ratio", "peak_MiB", "ratio", "params_M");
    if (recompute)
      std::printf(" | %12s %9s %10s %9s", "recompute_ms", "x plain", "peak_MiB", "x plain");
    if (bf16) {
      std::printf(" | %9s %9s %9s %10s %9s", "bf16_ms", "bf16_cpu", "x plain", "peak_MiB",
                  "x plain");
    }
    std::printf("\n");
    double base_ms = 0, base_peak = 0;
    for (const auto& scales : scale_sets) {
      if (only_max > 0 && scales.back() != only_max) continue;
      ps3::VisionConfig c = demo;
      c.scales = scales;
      ps3::PS3VisionModel model(c), model_bf16(c);
      model.initialize(0);
      if (bf16) {
        model_bf16.initialize(0);
        model_bf16.to_(Device::cpu(), DType::bf16);
      }
      Generator gen(1, "bench-images");
      ps3::VisionInputs in;
      in.low_res = uniform({batch, 3, c.low_res, c.low_res}, -1, 1, gen);
      in.selection = uniform({batch, 3, c.selection_res, c.selection_res}, -1, 1, gen);
      in.patches = synthetic_patches;
      in.prompt = uniform({batch, c.width}, -1, 1, gen);
      in.look_close_steps = steps;
      // The bf16 model's views come from the loader in bf16 (LoaderOptions::image_dtype, set by
      // train.precision bf16): the same values rounded, made before the step like the f32 ones.
      // (Alternating with the fp32 run, both sets of views are alive in either step's peak;
      // with --bf16-only the f32 ones are dropped.)
      ps3::VisionInputs in_bf16 = in;
      in_bf16.low_res = to(in.low_res, DType::bf16);
      in_bf16.selection = to(in.selection, DType::bf16);
      if (bf16_only) in.low_res = in.selection = Tensor();
      // One training step's forward + backward: wall ms, process CPU ms, allocator peak bytes.
      struct Sample {
        std::vector<double> ms, cpu;
        int64_t peak = 0;
      };
      auto run_step = [&](ps3::PS3VisionModel& model, Sample& out, bool keep) {
        model.zero_grad();
        allocator_for(Device::cpu()).reset_peak();
        auto t0 = Clock::now();
        std::clock_t c0 = std::clock();
        ps3::VisionOutputs o = model.forward(&model == &model_bf16 ? in_bf16 : in);
        Tensor loss = add(sum(o.high_res_pooled), sum(o.low_res_pooled));
        for (size_t s = 0; s < scales.size(); ++s) {
          loss = add(loss, add(mean(o.prior_probs[s]), mean(o.posterior_probs[s])));
        }
        to(loss, DType::f32).backward();
        double t = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
        double tc = 1000.0 * double(std::clock() - c0) / CLOCKS_PER_SEC;
        if (keep) out.ms.push_back(t), out.cpu.push_back(tc);  // first rep warms the cache
        out.peak = std::max(out.peak, allocator_for(Device::cpu()).stats().peak_bytes);
      };
      Sample plain, recomputed, half;
      for (int r = 0; r < reps + 1; ++r) {
        model.set_activation_checkpointing(false);
        if (!bf16_only) run_step(model, plain, r > 0);
        if (bf16) run_step(model_bf16, half, r > 0);
        if (!recompute) continue;
        model.set_activation_checkpointing(true);
        run_step(model, recomputed, r > 0);
      }
      double m = median(plain.ms), mc = median(plain.cpu), pk = double(plain.peak) / (1 << 20);
      if (base_ms == 0) base_ms = mc, base_peak = pk;
      std::string split;
      for (int64_t k : ps3::split_budget(scales, c.max_select)) {
        if (!split.empty()) split += '/';
        split += std::to_string(k);
      }
      if (bf16_only) {
        std::printf("%-6lld %-14s %9s %9s %7s %10s %7s %9.2f", (long long)scales.back(),
                    split.c_str(), "-", "-", "-", "-", "-", double(model.num_parameters()) / 1e6);
      } else {
        std::printf("%-6lld %-14s %9.1f %9.1f %7.2f %10.1f %7.2f %9.2f", (long long)scales.back(),
                    split.c_str(), m, mc, mc / base_ms, pk, pk / base_peak,
                    double(model.num_parameters()) / 1e6);
      }
      if (recompute) {
        const double rc = median(recomputed.cpu), rp = double(recomputed.peak) / (1 << 20);
        std::printf(" | %12.1f %9.2f %10.1f %9.2f", rc, rc / mc, rp, rp / pk);
      }
      if (bf16) {
        const double hc = median(half.cpu), hp = double(half.peak) / (1 << 20);
        if (bf16_only)
          std::printf(" | %9.1f %9.1f %9s %10.1f %9s", median(half.ms), hc, "-", hp, "-");
        else
          std::printf(" | %9.1f %9.1f %9.2f %10.1f %9.2f", median(half.ms), hc, hc / mc, hp,
                      hp / pk);
      }
      std::printf("\n");
    }
    auto flops_table = [&](const char* title, ps3::VisionConfig c, int64_t flop_steps) {
      std::printf("\n%s: analytic training GFLOPs per image (3x forward matmuls)\n", title);
      std::printf("%-6s %12s %14s %10s %22s\n", "res", "PS3", "global", "global/PS3",
                  "without attention QK/PV");
      for (int64_t res : {756, 1512, 3780}) {
        Flops f = training_flops(c, res, c.max_select, flop_steps);
        std::printf("%-6lld %12.1f %14.1f %10.1f %22.1f\n", (long long)res, f.ps3 / 1e9,
                    f.global / 1e9, f.global / f.ps3,
                    (f.global - f.global_attention) / (f.ps3 - f.ps3_attention));
      }
    };
    flops_table("demo config", demo, steps);
    flops_table("paper config (SO400M, k = 2560, 1 step)", ps3::PS3Config::paper_4k().vision, 1);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "hd_bench_ps3_resolution: %s\n", e.what());
    return 1;
  }
  return 0;
}
