// Google Benchmark for the ops on the ViT hot path. Counters: FLOP/s for GEMM and attention
// (forward 4 N^2 Dh per head, backward 2.5x that when recomputing P), bytes/s otherwise.
#include <benchmark/benchmark.h>

#include "autograd/node.h"
#include "ops/attention.h"
#include "ops/conv.h"
#include "ops/cpu/conv.h"
#include "ops/elementwise.h"
#include "ops/factory.h"
#include "ops/linalg.h"
#include "ops/norm.h"
#include "ops/reduce.h"
#include "ops/shape.h"
#include "ops/similarity.h"
#include "ops/softmax.h"

namespace hd {
namespace {

Tensor randn(const Shape& shape, uint64_t seed, bool grad = false) {
  Generator g(seed, "bench");
  Tensor t = normal(shape, 0, 1, g);
  if (grad) t.requires_grad_(true);
  return t;
}

void BM_Matmul(benchmark::State& state) {
  int64_t n = state.range(0);
  Tensor a = randn({n, n}, 1), b = randn({n, n}, 2);
  for (auto _ : state) benchmark::DoNotOptimize(matmul(a, b));
  state.counters["FLOP/s"] =
      benchmark::Counter(2.0 * n * n * n, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_Matmul)->Arg(512)->Arg(1024)->Arg(2048)->Unit(benchmark::kMillisecond)->UseRealTime();

// ViT linear: [B*N, C] x [C, 3C] (qkv) as in the benchmark model.
void BM_LinearQKV(benchmark::State& state) {
  Tensor x = randn({8 * 729, 192}, 3), w = randn({576, 192}, 4);
  for (auto _ : state) benchmark::DoNotOptimize(linear(x, w));
  state.counters["FLOP/s"] =
      benchmark::Counter(2.0 * 8 * 729 * 192 * 576, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_LinearQKV)->Unit(benchmark::kMillisecond)->UseRealTime();

// The ViT's linear layers forward + backward (input and weight gradients) at batch 8 x 729
// tokens; range(0) = out features, range(1) = in features, range(2) = 1 for bf16.
void BM_LinearForwardBackward(benchmark::State& state) {
  const int64_t out = state.range(0), in = state.range(1), rows = 8 * 729;
  const DType dt = state.range(2) ? DType::bf16 : DType::f32;
  Tensor x = to(randn({rows, in}, 3), dt).requires_grad_(true);
  Tensor w = to(randn({out, in}, 4), dt).requires_grad_(true);
  Tensor b = to(randn({out}, 5), dt).requires_grad_(true);
  Tensor g = to(randn({rows, out}, 6), dt);
  for (auto _ : state) {
    linear(x, w, b).backward(g);
    x.zero_grad();
    w.zero_grad();
    b.zero_grad();
  }
  state.SetLabel(dtype_name(dt));
  state.counters["FLOP/s"] =
      benchmark::Counter(3 * 2.0 * rows * in * out, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_LinearForwardBackward)
    ->Args({576, 192, 0})
    ->Args({576, 192, 1})
    ->Args({192, 192, 1})
    ->Args({768, 192, 1})
    ->Args({192, 768, 1})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

void BM_AttentionForward(benchmark::State& state) {
  Tensor q = randn({8, 3, 729, 64}, 5), k = randn({8, 3, 729, 64}, 6),
         v = randn({8, 3, 729, 64}, 7);
  NoGradGuard no_grad;
  for (auto _ : state) benchmark::DoNotOptimize(scaled_dot_product_attention(q, k, v));
  state.counters["FLOP/s"] =
      benchmark::Counter(4.0 * 24 * 729 * 729 * 64, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_AttentionForward)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_AttentionForwardBackward(benchmark::State& state) {
  Tensor q = randn({8, 3, 729, 64}, 5, true), k = randn({8, 3, 729, 64}, 6, true),
         v = randn({8, 3, 729, 64}, 7, true);
  Tensor g = randn({8, 3, 729, 64}, 8);
  for (auto _ : state) {
    scaled_dot_product_attention(q, k, v).backward(g);
    q.zero_grad();
    k.zero_grad();
    v.zero_grad();
  }
  state.counters["FLOP/s"] = benchmark::Counter(3.5 * 4.0 * 24 * 729 * 729 * 64,
                                                benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_AttentionForwardBackward)->Unit(benchmark::kMillisecond)->UseRealTime();

// bf16 q, k, v: Arg 0 widens them to f32 copies up front, Arg 1 reads them in place with bf16
// tile products (oneDNN's where the CPU has them, else each tile widened for OpenBLAS): the
// measurement behind the kernel's default (AttentionBlocks::bf16_tiles).
// Arg 0: bf16 widened to f32 copies up front; 1: bf16 read in place by (oneDNN) tile products;
// 2: the op as it runs by default (on a CPU with AVX512_BF16: the bf16 dot-product kernel,
// ops/cpu/attention_dpbf16.h).
void BM_AttentionBf16ForwardBackward(benchmark::State& state) {
  const int mode = int(state.range(0));
  const bool in_tiles = mode != 0;
  auto leaf = [](uint64_t seed) {
    return to(randn({8, 3, 729, 64}, seed), DType::bf16).requires_grad_(true);
  };
  Tensor q = leaf(5), k = leaf(6), v = leaf(7);
  Tensor g = to(randn({8, 3, 729, 64}, 8), DType::bf16);
  for (auto _ : state) {
    (mode == 2 ? scaled_dot_product_attention(q, k, v)
               : detail::scaled_dot_product_attention_bf16(q, k, v, {}, in_tiles))
        .backward(g);
    q.zero_grad();
    k.zero_grad();
    v.zero_grad();
  }
  state.SetLabel(mode == 2 ? "bf16 default" : in_tiles ? "bf16 in tiles" : "bf16 widened up front");
  state.counters["FLOP/s"] = benchmark::Counter(3.5 * 4.0 * 24 * 729 * 729 * 64,
                                                benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_AttentionBf16ForwardBackward)
    ->Arg(0)
    ->Arg(1)
    ->Arg(2)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// The gather of a stride-k patch convolution (ops/conv.cpp conv_patches): [B, C, H, W] ->
// [B, H/k, W/k, C, k, k] as one copy whose rows are only k elements long. PS3's selection stem at
// the demo's 1512 px with k = 28, and the 378 px low-res patch embedding with k = 14.
// Args: side, k, dtype (0 f32, 1 bf16, 2 an f32 image gathered into bf16 patches; 3 the same as a
// cast of the image and a bf16 gather), all as copies of a permuted view; 4 and 5: the kernel
// conv2d's patch path runs on images (cpu::gather_patches), f32 -> f32 and f32 -> bf16.
void BM_PatchifyCopy(benchmark::State& state) {
  const int64_t side = state.range(0), k = state.range(1), g = side / k, mode = state.range(2);
  Tensor x = randn({2, 3, side, side}, 9);
  if (mode == 1) x = to(x, DType::bf16);
  auto gather = [&](const Tensor& image) {
    return permute(reshape(image, {2, 3, g, k, g, k}), {0, 2, 4, 1, 3, 5});
  };
  for (auto _ : state) {
    if (mode >= 4) {
      Tensor out = Tensor::empty({2, g * g, 3 * k * k}, mode == 4 ? DType::f32 : DType::bf16);
      cpu::gather_patches(x, k, out);
      benchmark::DoNotOptimize(out);
    } else if (mode == 2) {
      benchmark::DoNotOptimize(to(gather(x), DType::bf16));
    } else if (mode == 3) {
      benchmark::DoNotOptimize(contiguous(gather(to(x, DType::bf16))));
    } else {
      benchmark::DoNotOptimize(contiguous(gather(x)));
    }
  }
  state.counters["bytes/s"] =
      benchmark::Counter(2.0 * double(x.nbytes()), benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_PatchifyCopy)
    ->Args({1512, 28, 0})
    ->Args({1512, 28, 1})
    ->Args({1512, 28, 2})
    ->Args({1512, 28, 3})
    ->Args({1512, 28, 4})
    ->Args({1512, 28, 5})
    ->Args({378, 14, 1})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// The PS3 demo model's low-res attention: 2 images x 4 heads x 729 tokens, head dim 16. With so
// few dims per head the tile products are short and the per-score passes (exp, rounding, dS)
// weigh as much as the products. Arg: 0 f32, 1 bf16 (read in place where oneDNN has bf16).
// Arg 0: f32; 1: bf16 as the op runs it (on a CPU with AVX512_BF16 the bf16 dot-product kernel,
// ops/cpu/attention_dpbf16.h); 2: bf16 through the tiled path (oneDNN tile products), the
// kernel's baseline.
void BM_AttentionHeadDim16ForwardBackward(benchmark::State& state) {
  const bool half = state.range(0) != 0, tiled = state.range(0) == 2;
  auto leaf = [&](uint64_t seed) {
    Tensor t = randn({2, 4, 729, 16}, seed);
    return (half ? to(t, DType::bf16) : t).requires_grad_(true);
  };
  Tensor q = leaf(5), k = leaf(6), v = leaf(7);
  Tensor g = randn({2, 4, 729, 16}, 8);
  if (half) g = to(g, DType::bf16);
  for (auto _ : state) {
    (tiled ? detail::scaled_dot_product_attention_dpbf16(q, k, v, {}, false)
           : scaled_dot_product_attention(q, k, v))
        .backward(g);
    q.zero_grad();
    k.zero_grad();
    v.zero_grad();
  }
  state.SetLabel(tiled ? "bf16 tiled" : half ? "bf16" : "f32");
  state.counters["ns/score"] = benchmark::Counter(
      8.0 * 729 * 729, benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
}
BENCHMARK(BM_AttentionHeadDim16ForwardBackward)
    ->Arg(0)
    ->Arg(1)
    ->Arg(2)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// PS3's look-close attention in the demo: 256 selected tokens attending to the low-res KV cache
// (729 keys, a prefix) and to themselves, head dim 16, every input needing its gradient. Arg as
// above (0 f32, 1 bf16, 2 bf16 on the tiled path).
void BM_AttentionPs3LookCloseForwardBackward(benchmark::State& state) {
  const bool half = state.range(0) != 0, tiled = state.range(0) == 2;
  auto leaf = [&](int64_t n, uint64_t seed) {
    Tensor t = randn({2, 4, n, 16}, seed);
    return (half ? to(t, DType::bf16) : t).requires_grad_(true);
  };
  Tensor q = leaf(256, 5), k = leaf(256, 6), v = leaf(256, 7);
  AttentionOptions options;
  options.prefix_k = leaf(729, 9);
  options.prefix_v = leaf(729, 10);
  Tensor g = randn({2, 4, 256, 16}, 8);
  if (half) g = to(g, DType::bf16);
  for (auto _ : state) {
    (tiled ? detail::scaled_dot_product_attention_dpbf16(q, k, v, options, false)
           : scaled_dot_product_attention(q, k, v, options))
        .backward(g);
    for (Tensor* t : {&q, &k, &v, &options.prefix_k, &options.prefix_v}) t->zero_grad();
  }
  state.SetLabel(tiled ? "bf16 tiled" : half ? "bf16" : "f32");
  state.counters["ns/score"] =
      benchmark::Counter(8.0 * 256 * (729 + 256), benchmark::Counter::kIsIterationInvariantRate |
                                                      benchmark::Counter::kInvert);
}
BENCHMARK(BM_AttentionPs3LookCloseForwardBackward)
    ->Arg(0)
    ->Arg(1)
    ->Arg(2)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// The same attention as a composite of ops (matmul -> softmax -> matmul), materialising the
// [N, N] scores: what the flash kernel is measured against.
void BM_AttentionCompositeForwardBackward(benchmark::State& state) {
  Tensor q = randn({8, 3, 729, 64}, 5, true), k = randn({8, 3, 729, 64}, 6, true),
         v = randn({8, 3, 729, 64}, 7, true);
  Tensor g = randn({8, 3, 729, 64}, 8);
  for (auto _ : state) {
    Tensor s = mul(matmul(q, transpose(k, -1, -2)), 0.125);
    matmul(softmax(s, -1), v).backward(g);
    q.zero_grad();
    k.zero_grad();
    v.zero_grad();
  }
  state.counters["FLOP/s"] = benchmark::Counter(3.0 * 4.0 * 24 * 729 * 729 * 64,
                                                benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_AttentionCompositeForwardBackward)->Unit(benchmark::kMillisecond)->UseRealTime();

// Arg 0: f32, Arg 1: bf16 (input, weights and gradients; the kernel computes in f32).
// Args: dtype (0 f32, 1 bf16), rows, channels. The ViT's 192 channels, and the short rows of
// the PS3 demo: the selection ConvNeXt's 32 channels over 2 x 54 x 54 pixels, the trunk's 64.
void BM_LayerNormForwardBackward(benchmark::State& state) {
  const DType dt = state.range(0) ? DType::bf16 : DType::f32;
  const int64_t rows = state.range(1), C = state.range(2);
  auto leaf = [&](const Shape& shape, uint64_t seed) {
    return to(randn(shape, seed), dt).requires_grad_(true);
  };
  Tensor x = leaf({rows, C}, 9), w = leaf({C}, 10), b = leaf({C}, 11);
  Tensor g = to(randn({rows, C}, 12), dt);
  state.SetLabel(dtype_name(dt));
  for (auto _ : state) {
    layer_norm(x, w, b, 1e-6).backward(g);
    x.zero_grad();
    w.zero_grad();
    b.zero_grad();
  }
  state.counters["ns/row"] = benchmark::Counter(
      double(rows), benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
}
BENCHMARK(BM_LayerNormForwardBackward)
    ->Args({0, 8 * 729, 192})
    ->Args({1, 8 * 729, 192})
    ->Args({1, 2 * 54 * 54, 32})
    ->Args({1, 2 * 729, 64})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// A bias gradient: the column sums of the ViT's fc1 output gradient, [8 * 729, 768] in bf16
// (f32 accumulation).
void BM_BiasGradColumnSum(benchmark::State& state) {
  Tensor g = to(randn({8 * 729, 768}, 13), DType::bf16);
  NoGradGuard no_grad;
  for (auto _ : state) benchmark::DoNotOptimize(sum(g, {0}));
  state.counters["bytes/s"] =
      benchmark::Counter(2.0 * 8 * 729 * 768, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_BiasGradColumnSum)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_SoftmaxForwardBackward(benchmark::State& state) {
  Tensor x = randn({24, 729, 729}, 13, true), g = randn({24, 729, 729}, 14);
  for (auto _ : state) {
    softmax(x, -1).backward(g);
    x.zero_grad();
  }
  state.counters["bytes/s"] =
      benchmark::Counter(5.0 * 4 * 24 * 729 * 729, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_SoftmaxForwardBackward)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_GeluForwardBackward(benchmark::State& state) {
  Tensor x = randn({8 * 729, 768}, 15, true), g = randn({8 * 729, 768}, 16);
  for (auto _ : state) {
    gelu(x).backward(g);
    x.zero_grad();
  }
  state.counters["bytes/s"] =
      benchmark::Counter(4.0 * 4 * 8 * 729 * 768, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_GeluForwardBackward)->Unit(benchmark::kMillisecond)->UseRealTime();

// ConvNeXt's 7x7 depthwise conv (pad 3) at the selection map of a full PS3 (54 x 54, 512
// channels; arg = batch). 2 * 49 FLOPs per output element forward; backward twice that.
void BM_DepthwiseConvForward(benchmark::State& state) {
  const int64_t b = state.range(0);
  Tensor x = randn({b, 512, 54, 54}, 20), w = randn({512, 1, 7, 7}, 21), bias = randn({512}, 22);
  NoGradGuard no_grad;
  for (auto _ : state) benchmark::DoNotOptimize(conv2d(x, w, bias, 1, 3, 512));
  state.counters["FLOP/s"] = benchmark::Counter(2.0 * 49 * b * 512 * 54 * 54,
                                                benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_DepthwiseConvForward)->Arg(8)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_DepthwiseConvForwardBackward(benchmark::State& state) {
  const int64_t b = state.range(0);
  Tensor x = randn({b, 512, 54, 54}, 20, true), w = randn({512, 1, 7, 7}, 21, true),
         bias = randn({512}, 22, true);
  Tensor g = randn({b, 512, 54, 54}, 23);
  for (auto _ : state) {
    conv2d(x, w, bias, 1, 3, 512).backward(g);
    x.zero_grad();
    w.zero_grad();
    bias.zero_grad();
  }
  state.counters["FLOP/s"] = benchmark::Counter(3.0 * 2.0 * 49 * b * 512 * 54 * 54,
                                                benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_DepthwiseConvForwardBackward)->Arg(8)->Unit(benchmark::kMillisecond)->UseRealTime();

// PS3's selection ConvNeXt depthwise step: bf16 [2, 32, 54, 54], 7x7, stride 1 (the AVX-512
// 7-tap kernels on a CPU with AVX-512, ops/cpu/depthwise_avx512.h). Arg 0 forward, 1 forward +
// backward.
void BM_DepthwiseConvPs3Demo(benchmark::State& state) {
  const bool backward = state.range(0) != 0;
  auto leaf = [&](const Shape& s, uint64_t seed) {
    return to(randn(s, seed), DType::bf16).requires_grad_(backward);
  };
  Tensor x = leaf({2, 32, 54, 54}, 20), w = leaf({32, 1, 7, 7}, 21), bias = leaf({32}, 22);
  Tensor g = to(randn({2, 32, 54, 54}, 23), DType::bf16);
  for (auto _ : state) {
    if (!backward) {
      NoGradGuard no_grad;
      benchmark::DoNotOptimize(conv2d(x, w, bias, 1, 3, 32).raw_data());
      continue;
    }
    conv2d(x, w, bias, 1, 3, 32).backward(g);
    for (Tensor* t : {&x, &w, &bias}) t->zero_grad();
  }
  state.SetLabel(backward ? "forward + backward" : "forward");
}
BENCHMARK(BM_DepthwiseConvPs3Demo)->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond)->UseRealTime();

// A residual add of the PS3 demo's sizes (bf16 [2, 729, 64] and the selection ConvNeXt's
// [2, 54, 54, 32]): small maps whose cost is the per-op overhead (allocation, the pool's
// wake-up) as much as the bytes. Arg: elements.
void BM_AddBf16Small(benchmark::State& state) {
  const int64_t n = state.range(0);
  Tensor a = to(randn({n}, 21), DType::bf16), b = to(randn({n}, 22), DType::bf16);
  for (auto _ : state) benchmark::DoNotOptimize(add(a, b).raw_data());
  state.counters["ns/elem"] = benchmark::Counter(
      double(n), benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
}
BENCHMARK(BM_AddBf16Small)
    ->Arg(2 * 729 * 64)
    ->Arg(2 * 54 * 54 * 32)
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();

// The same add with one operand a strided view, as the PS3 demo's backward meets them: arg 0
// rows of 64 out of 256 (a narrow of a [2, 729, 256] buffer: a gradient slice), 1 rows of 16 of
// a [2, 4, 729, 16] head view of [2, 729, 64] (attention's K/V gradient), 2 an NCHW tensor read
// as NHWC ([2, 54, 54, 32], the ConvNeXt's residual gradient).
void BM_AddBf16Strided(benchmark::State& state) {
  const int mode = int(state.range(0));
  Tensor a, b;
  if (mode == 0) {
    a = narrow(to(randn({2, 729, 256}, 21), DType::bf16), 2, 64, 64);
  } else if (mode == 1) {
    a = permute(to(randn({2, 729, 4, 16}, 21), DType::bf16), {0, 2, 1, 3});
  } else {
    a = permute(to(randn({2, 32, 54, 54}, 21), DType::bf16), {0, 2, 3, 1});
  }
  b = to(randn(a.shape(), 22), DType::bf16);
  for (auto _ : state) benchmark::DoNotOptimize(add(a, b).raw_data());
  state.counters["ns/elem"] =
      benchmark::Counter(double(a.numel()), benchmark::Counter::kIsIterationInvariantRate |
                                                benchmark::Counter::kInvert);
}
BENCHMARK(BM_AddBf16Strided)->Arg(0)->Arg(1)->Arg(2)->Unit(benchmark::kMicrosecond)->UseRealTime();

// A copy into rows of 16 of a head view (what the gradient of a packed qkv's views is written
// as): [2, 4, 729, 16] into a [2, 729, 3, 4, 16] buffer's middle slot.
void BM_CopyIntoHeadView(benchmark::State& state) {
  Tensor src = to(randn({2, 4, 729, 16}, 23), DType::bf16);
  Tensor buf = to(randn({2, 729, 3, 4, 16}, 24), DType::bf16);
  Tensor dst = permute(select(buf, 2, 1), {0, 2, 1, 3});
  for (auto _ : state) {
    copy_(dst, src);
    benchmark::DoNotOptimize(buf.raw_data());
  }
  state.counters["ns/row"] = benchmark::Counter(
      2.0 * 4 * 729, benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
}
BENCHMARK(BM_CopyIntoHeadView)->Unit(benchmark::kMicrosecond)->UseRealTime();

// PS3's selection head: cosine similarity of the ConvNeXt grid's features with a projected
// prompt (bf16 [2, 54, 54, 32] against [2, 1, 1, 32]), forward and backward.
void BM_CosineSimilaritySelection(benchmark::State& state) {
  Tensor a = to(randn({2, 54, 54, 32}, 25), DType::bf16).requires_grad_(true);
  Tensor b = to(randn({2, 1, 1, 32}, 26), DType::bf16).requires_grad_(true);
  Tensor g = to(randn({2, 54, 54}, 27), DType::bf16);
  for (auto _ : state) {
    cosine_similarity(a, b, -1).backward(g);
    a.zero_grad();
    b.zero_grad();
  }
}
BENCHMARK(BM_CosineSimilaritySelection)->Unit(benchmark::kMicrosecond)->UseRealTime();

// Engine overhead: backward through a long chain of ops on 1-element tensors, where the kernels
// cost almost nothing and the engine's bookkeeping (dependency counts, input buffers, the
// visited set: hash maps keyed by Node*) is what is measured. The graph is kept
// (retain_graph) so only backward is timed; arg = chain length (2 nodes per link).
void BM_BackwardChainTiny(benchmark::State& state) {
  const int64_t links = state.range(0);
  Tensor w = randn({1}, 17, true), b = randn({1}, 18, true), x = randn({1}, 19, true);
  Tensor y = x;
  for (int64_t i = 0; i < links; ++i) y = add(mul(y, w), b);
  Tensor loss = sum(y);
  for (auto _ : state) loss.backward(Tensor(), /*retain_graph=*/true);
  state.counters["nodes/s"] =
      benchmark::Counter(2.0 * double(links) + 4, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_BackwardChainTiny)->Arg(64)->Arg(1024)->Unit(benchmark::kMicrosecond)->UseRealTime();

}  // namespace
}  // namespace hd

BENCHMARK_MAIN();
