// GPU benchmarks of the CUDA backend (issue 7). Prints figures, asserts nothing; without a GPU
// it prints "no CUDA device: <reason>" and exits 0 (so CI can build and run it anywhere).
//
//   1. GEMM TFLOP/s in bf16 (and f32, f32+TF32) against the device's dense peak.
//   2. Attention forward+backward TFLOP/s: the fused kernel (ops/cuda/attention.cu) side by side
//      with the plain cuBLAS softmax(QK^T)V composition (detail::attention_composed), and the
//      ratio. The fused kernel runs on CUDA cores (no mma yet): its win is memory (no [Nq, Nk]
//      scores); whether it is also faster is what this measures.
//   3. One transformer block training step (forward + backward, no optimizer), tiny and
//      SigLIP-sized (width 1152, 16 heads, MLP 4304, 2560 + 729 tokens), reported as MFU
//      (model FLOPs / time / peak). Issue target: >= 50% MFU in bf16 on an H100.
//   4. conv2d forward + backward: our paths against cuDNN, side by side (bench_conv).
//
// Timing: CUDA events around `iters` runs after `warmup` runs on the current stream; the median
// of 5 repetitions is printed. Peak: HD_PEAK_TFLOPS overrides; else 989 (sm_90, H100 SXM bf16
// dense), 312 (sm_80, A100 bf16 dense); f32 without TF32 uses peak / 16 as a rough guide.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "autograd/node.h"
#include "autograd/random.h"
#include "ops/attention.h"
#include "ops/conv.h"
#include "ops/elementwise.h"
#include "ops/factory.h"
#include "ops/linalg.h"
#include "ops/nn/layers.h"
#include "ops/reduce.h"
#include "ops/shape.h"
#ifdef HD_HAVE_CUDA
#include "ops/cuda/kernels.h"
#include "ops/cuda/runtime.h"
#endif

#ifdef HD_HAVE_CUDA
namespace hd {
namespace {

const Device kGpu = Device::cuda(0);

double peak_bf16_tflops() {
  if (const char* env = std::getenv("HD_PEAK_TFLOPS")) return std::atof(env);
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess) return 0;
  if (prop.major == 9) return 989.0;
  if (prop.major == 8 && prop.minor == 0) return 312.0;
  return 0;  // unknown: MFU not printed
}

// Median milliseconds per call of f over 5 repetitions of `iters` calls.
double time_ms(const std::function<void()>& f, int warmup = 3, int iters = 10) {
  for (int i = 0; i < warmup; ++i) f();
  cuda::Stream& s = cuda::current_stream(0);
  std::vector<double> reps;
  for (int r = 0; r < 5; ++r) {
    cuda::Event start(true), stop(true);
    start.record(s);
    for (int i = 0; i < iters; ++i) f();
    stop.record(s);
    stop.synchronize();
    reps.push_back(double(stop.elapsed_ms(start)) / iters);
  }
  std::sort(reps.begin(), reps.end());
  return reps[2];
}

Tensor randn(const Shape& shape, DType dt, Generator& gen, double scale = 1.0) {
  return to(to(mul(normal(shape, 0.0, 1.0, gen), scale), dt), kGpu).detach();
}

void bench_gemm(double peak) {
  std::printf("\n== GEMM (C = A B, row-major, M = N = K) ==\n");
  Generator gen(1, "gemm");
  for (int64_t n : {2048, 4096, 8192}) {
    for (int mode = 0; mode < 3; ++mode) {
      DType dt = mode == 0 ? DType::bf16 : DType::f32;
      cuda::set_allow_tf32(mode == 2);
      Tensor a = randn({n, n}, dt, gen), b = randn({n, n}, dt, gen);
      NoGradGuard no_grad;
      double ms = time_ms([&] { matmul(a, b); });
      double tflops = 2.0 * double(n) * double(n) * double(n) / (ms * 1e-3) / 1e12;
      const char* name = mode == 0 ? "bf16" : (mode == 1 ? "f32" : "f32+tf32");
      std::printf("%-9s n=%-5lld %8.3f ms  %7.1f TFLOP/s", name, (long long)n, ms, tflops);
      if (peak > 0 && mode == 0)
        std::printf("  (%.0f%% of bf16 peak %.0f)", 100 * tflops / peak, peak);
      std::printf("\n");
    }
  }
  cuda::set_allow_tf32(false);
}

void bench_attention(double peak) {
  std::printf("\n== attention forward + backward: fused kernel vs cuBLAS composition ==\n");
  Generator gen(2, "attention");
  struct Shape4 {
    int64_t B, H, N, D;
  };
  for (Shape4 s : {Shape4{8, 3, 197, 64}, Shape4{1, 16, 3289, 72}}) {
    for (DType dt : {DType::bf16, DType::f32}) {
      Tensor q = randn({s.B, s.H, s.N, s.D}, dt, gen).requires_grad_();
      Tensor k = randn({s.B, s.H, s.N, s.D}, dt, gen).requires_grad_();
      Tensor v = randn({s.B, s.H, s.N, s.D}, dt, gen).requires_grad_();
      Tensor g = randn({s.B, s.H, s.N, s.D}, dt, gen);
      // forward 4 B H N^2 D (QK^T and PV); backward 2.5x forward (FlashAttention-2's count).
      const double flops = 3.5 * 4.0 * double(s.B * s.H) * double(s.N) * double(s.N) * double(s.D);
      double ms[2];
      for (int composed = 0; composed < 2; ++composed) {
        ms[composed] = time_ms(
            [&] {
              Tensor o = composed ? detail::attention_composed(q, k, v, {})
                                  : scaled_dot_product_attention(q, k, v);
              o.backward(g);
            },
            2, 5);
      }
      std::printf("%-5s B=%lld H=%lld N=%lld D=%lld", dtype_name(dt), (long long)s.B,
                  (long long)s.H, (long long)s.N, (long long)s.D);
      for (int composed = 0; composed < 2; ++composed) {
        const double tflops = flops / (ms[composed] * 1e-3) / 1e12;
        std::printf("  %s %8.3f ms %6.1f TFLOP/s", composed ? "composed" : "fused", ms[composed],
                    tflops);
        if (peak > 0 && dt == DType::bf16) std::printf(" (%.0f%%)", 100 * tflops / peak);
      }
      std::printf("  composed/fused time %.2f\n", ms[1] / ms[0]);
    }
  }
}

void bench_block(double peak) {
  std::printf("\n== transformer block training step (forward + backward) ==\n");
  struct Cfg {
    const char* name;
    int64_t batch, tokens, width, heads, mlp;
  };
  for (Cfg c :
       {Cfg{"tiny", 8, 197, 192, 3, 768}, Cfg{"siglip-so400m", 1, 2560 + 729, 1152, 16, 4304}}) {
    for (DType dt : {DType::bf16, DType::f32}) {
      nn::TransformerBlock block(c.width, c.heads, c.mlp);
      block.initialize(3);
      block.to_(kGpu, dt);
      Generator gen(4, "block");
      Tensor x = randn({c.batch, c.tokens, c.width}, dt, gen).requires_grad_();
      Tensor g = randn({c.batch, c.tokens, c.width}, dt, gen);
      double ms = time_ms(
          [&] {
            block.zero_grad();
            block.forward(x).backward(g);
          },
          2, 5);
      // forward: 2 T (4 d^2 + 2 d mlp) + 4 B N^2 d (attention); step = 3 x forward.
      double T = double(c.batch * c.tokens), d = double(c.width), N = double(c.tokens);
      double flops = 3.0 * (2.0 * T * (4.0 * d * d + 2.0 * d * double(c.mlp)) +
                            4.0 * double(c.batch) * N * N * d);
      double tflops = flops / (ms * 1e-3) / 1e12;
      std::printf("%-14s %-5s %8.3f ms  %7.1f TFLOP/s", c.name, dtype_name(dt), ms, tflops);
      if (peak > 0 && dt == DType::bf16) std::printf("  MFU %.1f%%", 100 * tflops / peak);
      std::printf("\n");
    }
  }
}

// 4. conv2d forward + backward, our paths (patch GEMM, depthwise kernel, im2col + cuBLAS)
// against cuDNN on the same call, side by side: issue 18's "cuDNN where it beats our kernels".
void bench_conv() {
  std::printf("\n== conv2d forward + backward: ours vs cuDNN (HD_CUDNN_CONV) ==\n");
  struct Case {
    const char* name;
    Shape x, w;
    int64_t stride, padding, groups;
  };
  const Case cases[] = {
      {"patch14 (SigLIP stem)", {8, 3, 378, 378}, {1152, 3, 14, 14}, 14, 0, 1},
      {"selection stem 28", {8, 3, 1512, 1512}, {512, 3, 28, 28}, 28, 0, 1},
      {"ConvNeXt dw 7x7", {8, 512, 54, 54}, {512, 1, 7, 7}, 1, 3, 512},
      {"3x3 s1 p1", {8, 256, 56, 56}, {256, 256, 3, 3}, 1, 1, 1},
  };
  Generator gen(5, "bench_conv");
  for (const Case& c : cases) {
    for (DType dt : {DType::f32, DType::bf16}) {
      Tensor x = randn(c.x, dt, gen), w = randn(c.w, dt, gen, 0.05);
      x.requires_grad_(true);
      w.requires_grad_(true);
      double ms[2];
      for (int cudnn = 0; cudnn < 2; ++cudnn) {
        cuda::set_use_cudnn_conv(cudnn == 1);
        ms[cudnn] = time_ms(
            [&] {
              Tensor y = conv2d(x, w, Tensor(), c.stride, c.padding, c.groups);
              sum(y).backward();
              x.zero_grad();
              w.zero_grad();
            },
            2, 5);
      }
      cuda::set_use_cudnn_conv(false);
      std::printf("%-22s %-5s ours %8.3f ms  cuDNN %8.3f ms  ours/cuDNN %.2f\n", c.name,
                  dtype_name(dt), ms[0], ms[1], ms[0] / ms[1]);
    }
  }
}

}  // namespace
}  // namespace hd
#endif

int main() {
#ifdef HD_HAVE_CUDA
  if (!hd::cuda::available()) {
    std::printf("no CUDA device: %s\n", hd::cuda::unavailable_reason().c_str());
    return 0;
  }
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, 0);
  double peak = hd::peak_bf16_tflops();
  std::printf("device: %s (sm_%d%d), bf16 dense peak used: %.0f TFLOP/s\n", prop.name, prop.major,
              prop.minor, peak);
  hd::bench_gemm(peak);
  hd::bench_attention(peak);
  hd::bench_block(peak);
  hd::bench_conv();
  return 0;
#else
  std::printf("no CUDA device: this build has HD_CUDA=OFF\n");
  return 0;
#endif
}
