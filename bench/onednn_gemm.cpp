// GEMM through the matmul op against oneDNN called directly, side by side in one run ([Note:
// oneDNN GEMMs] in ops/cpu/onednn_matmul.h). Issue 15's target: bf16 through our op >= 90 % of
// oneDNN direct at 1024^2 and 4096^2. Also f32: the op (OpenBLAS) against oneDNN's f32 kernel,
// the reason f32 stays on OpenBLAS. On a CPU without oneDNN bf16 kernels the bf16 rows say so.
//
// usage: hd_bench_onednn_gemm [--reps=N] [--sizes=1024,4096] [--vit] [--ps3]
// --vit adds the bf16 linear products of the ViT step (bench/vit_step.cpp), op against direct;
// --ps3 those of the PS3 demo model's step (bench/ps3_resolution.cpp): width 64, 2 images of 729
// low-res tokens, and the selection stem's 28 x 28 patch convolution over 54 x 54 patches.
#include <array>
#include <cstdio>
#include <cstring>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "autograd/random.h"
#include "autograd/thread_pool.h"
#include "bench/bench_util.h"
#include "ops/cpu/onednn_matmul.h"
#include "ops/factory.h"
#include "ops/linalg.h"
#include "ops/shape.h"

using namespace hd;

namespace {

double median_ms(int reps, const std::function<void()>& body) {
  body();  // warm-up: primitive creation, page faults
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    auto t0 = bench::Clock::now();
    body();
    t.push_back(bench::ms_since(t0));
  }
  return bench::median(t);
}

}  // namespace

int main(int argc, char** argv) {
  int reps = 5;
  std::vector<int64_t> sizes{1024, 4096};
  // Linear products to time: {tokens, in, out}.
  std::vector<std::array<int64_t, 3>> linears;
  const char* linear_title = "";
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--reps=", 7) == 0) {
      reps = std::atoi(argv[i] + 7);
    } else if (std::strncmp(argv[i], "--sizes=", 8) == 0) {
      sizes.clear();
      std::stringstream list(argv[i] + 8);
      for (std::string s; std::getline(list, s, ',');) sizes.push_back(std::stoll(s));
    } else if (std::strcmp(argv[i], "--vit") == 0) {
      linear_title = "ViT linear products, 8 x 729 tokens";
      for (auto [in, out] : std::vector<std::pair<int64_t, int64_t>>{
               {192, 576}, {192, 192}, {192, 768}, {768, 192}}) {
        linears.push_back({8 * 729, in, out});
      }
    } else if (std::strcmp(argv[i], "--ps3") == 0) {
      linear_title = "PS3 demo linear products (2 x 729 low-res tokens; stem: 2 x 54^2 patches)";
      linears = {{1458, 64, 192}, {1458, 64, 64},   {1458, 64, 256},
                 {1458, 256, 64}, {5832, 2352, 32}, {2 * 27 * 27, 588, 64}};
    } else {
      std::fprintf(stderr,
                   "usage: hd_bench_onednn_gemm [--reps=N] [--sizes=1024,4096] [--vit] [--ps3]\n");
      return 2;
    }
  }
  const auto& cap = cpu::onednn::capability();
  std::printf("oneDNN %s, ISA %s, %d threads; bf16 matmul: %s\n", cap.version.c_str(),
              cap.isa.c_str(), cpu_thread_pool().num_threads(),
              cap.bf16_matmul ? cap.bf16_impl.c_str() : cap.reason.c_str());
  std::printf("%-6s %-5s %-26s %10s %10s %-22s %10s %10s %7s\n", "n", "dtype", "op path", "op_ms",
              "op_GF/s", "oneDNN kernel", "dnnl_ms", "dnnl_GF/s", "op/dnnl");
  for (int64_t n : sizes) {
    const double flops = 2.0 * double(n) * double(n) * double(n);
    for (DType dt : {DType::f32, DType::bf16}) {
      Generator g(1, "gemm_bench");
      Tensor a = to(normal({n, n}, 0, 1, g), dt), b = to(normal({n, n}, 0, 1, g), dt);
      Tensor out = Tensor::empty({n, n}, dt);
      const char* path = dt == DType::f32  ? "OpenBLAS"
                         : cap.bf16_matmul ? "oneDNN bf16"
                                           : "convert to f32, OpenBLAS";
      double op_ms = median_ms(reps, [&] { out = matmul(a, b); });
      if (dt == DType::bf16 && !cap.bf16_matmul) {
        std::printf("%-6lld %-5s %-26s %10.1f %10.1f %-22s %10s %10s %7s\n", (long long)n, "bf16",
                    path, op_ms, flops / op_ms / 1e6, "(none on this CPU)", "-", "-", "-");
        continue;
      }
      Tensor direct = Tensor::empty({n, n}, dt);
      double dnnl_ms = median_ms(reps, [&] { cpu::onednn::matmul(a, b, direct); });
      std::printf("%-6lld %-5s %-26s %10.1f %10.1f %-22s %10.1f %10.1f %7.2f\n", (long long)n,
                  dtype_name(dt), path, op_ms, flops / op_ms / 1e6,
                  cpu::onednn::implementation(a, b, direct).c_str(), dnnl_ms, flops / dnnl_ms / 1e6,
                  dnnl_ms / op_ms);
    }
  }
  if (linears.empty() || !cap.bf16_matmul) return 0;
  // A transformer block's linear products in bf16 (tokens x width, weight [out, in]): forward
  // x W^T, input gradient g W, weight gradient g^T x. The op cuts them into row blocks or K
  // slices on our pool; oneDNN direct runs each whole on its OpenMP team.
  std::printf("\n%s, bf16 (op/dnnl > 1: the op is faster)\n", linear_title);
  std::printf("%-12s %-9s %10s %10s %10s %10s %7s\n", "in->out", "product", "op_ms", "op_GF/s",
              "dnnl_ms", "dnnl_GF/s", "op/dnnl");
  for (auto [tokens, in, out_f] : linears) {
    Generator g(2, "gemm_bench");
    Tensor x = to(normal({tokens, in}, 0, 1, g), DType::bf16);
    Tensor w = to(normal({out_f, in}, 0, 1, g), DType::bf16);
    Tensor gy = to(normal({tokens, out_f}, 0, 1, g), DType::bf16);
    const double flops = 2.0 * double(tokens) * double(in) * double(out_f);
    struct Product {
      const char* name;
      Tensor a, b;
    };
    for (const Product& p :
         {Product{"forward", x, transpose(w, 0, 1)}, Product{"grad_in", gy, w},
          Product{"grad_w", transpose(gy, 0, 1), x}, Product{"grad_w^T", transpose(x, 0, 1), gy}}) {
      double op_ms = median_ms(reps, [&] { Tensor r = matmul(p.a, p.b); });
      Tensor direct = Tensor::empty({p.a.size(0), p.b.size(1)}, DType::bf16);
      double dnnl_ms = median_ms(reps, [&] { cpu::onednn::matmul(p.a, p.b, direct); });
      std::printf("%4lld->%-6lld %-9s %10.2f %10.1f %10.2f %10.1f %7.2f\n", (long long)in,
                  (long long)out_f, p.name, op_ms, flops / op_ms / 1e6, dnnl_ms,
                  flops / dnnl_ms / 1e6, dnnl_ms / op_ms);
    }
  }
  return 0;
}
