// The CUDA backend against the CPU, in the style of ggml's test-backend-ops: one table of
// operator cases (section 2), each run forward and backward on random inputs, on the GPU and on
// the CPU, with dtype-aware tolerances (section 1 has the machinery; section 3 the tests).
//
// - Inputs are drawn once on the host in f64, rounded to the case dtype there, and copied to
//   the device, so both sides see identical values. bf16/f16 cases are checked against the CPU
//   computing in f32 on the same rounded inputs (the CPU kernels compute 16-bit types in f32 too).
// - Non-contiguous inputs: a case input may be stored transposed (the op sees a transposed
//   view) or broadcast; odd sizes (1, 3, 5, 7, 129, ...) cover partial blocks and tails.
// - Overrun guard: every device input lives in the middle of a larger device buffer whose head
//   and tail are filled with a canary value; after forward and backward the canaries must be
//   intact (in-place ops write into such guarded views too). Outputs the op allocates itself
//   are covered by running this binary under compute-sanitizer (docs/cuda.md).
// - Backward: L = sum(out * W) for a fixed random W; the leaves' gradients are compared.
//   (Gradient formulas themselves are checked against finite differences by the CPU tests.)
//
// Without a GPU every case skips with the probe's reason; the no-GPU error path is tested here
// for real (CudaRuntime.*).
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "autograd/engine.h"
#include "autograd/optimizer.h"
#include "autograd/random.h"
#include "ops/attention.h"
#include "ops/conv.h"
#include "ops/elementwise.h"
#include "ops/factory.h"
#include "ops/index.h"
#include "ops/linalg.h"
#include "ops/loss.h"
#include "ops/norm.h"
#include "ops/reduce.h"
#include "ops/resample.h"
#include "ops/shape.h"
#include "ops/softmax.h"

#ifdef HD_HAVE_CUDA
#include "ops/cuda/kernels.h"
#include "ops/cuda/runtime.h"
#endif

namespace hd {
namespace {

#ifdef HD_HAVE_CUDA
#define HD_REQUIRE_CUDA()                                                                     \
  do {                                                                                        \
    if (!cuda::available()) GTEST_SKIP() << "no CUDA device: " << cuda::unavailable_reason(); \
  } while (0)
#else
#define HD_REQUIRE_CUDA() GTEST_SKIP() << "no CUDA device: this build has HD_CUDA=OFF"
#endif

const Device kGpu = Device::cuda(0);

// ============================================================================================
// Section 1: machinery
// ============================================================================================

struct Tol {
  double atol, rtol;
};
Tol tolerance(DType dt, double scale) {
  switch (dt) {
    case DType::f64:
      return {1e-10 * scale, 1e-9 * scale};
    case DType::f32:
      return {2e-5 * scale, 2e-4 * scale};
    default:
      return {2e-2 * scale, 2e-2 * scale};  // bf16 / f16 against an f32 reference
  }
}

// How a case input is made.
struct InputSpec {
  Shape shape;
  double lo = -1.0, hi = 1.0;
  bool transposed = false;  // stored with the last two dims swapped; the op sees a transpose
  bool grad = true;         // a leaf requiring grad (floating inputs only)
  // Non-random inputs (indices, masks, targets): built on the CPU, copied as they are.
  std::function<Tensor()> fixed;
};

struct OpCase {
  std::string name;
  std::vector<InputSpec> inputs;
  std::function<Tensor(const std::vector<Tensor>&)> f;
  bool backward = true;
  std::vector<DType> dtypes = {DType::f32, DType::f64};
  double tol_scale = 1.0;
};

void PrintTo(const OpCase& c, std::ostream* os) {
  *os << c.name;
}

constexpr int64_t kPad = 67;  // canary elements before and after each device input
constexpr double kCanary = -7777.0;

// A device copy of `host` placed in the middle of a canary-filled buffer.
struct Guarded {
  Tensor buffer;  // [kPad + n + kPad]
  Tensor view;    // the data, contiguous, shaped like host
};

Guarded guard_on_device(const Tensor& host, Device target = kGpu) {
  const int64_t n = host.numel();
  Guarded g;
  g.buffer = full({kPad + n + kPad}, kCanary, host.dtype(), target);
  Tensor dev = to(contiguous(host), target);
  g.view = g.buffer.as_strided(host.shape(), contiguous_strides(host.shape()), kPad);
  NoGradGuard no_grad;
  copy_(g.view, dev);
  return g;
}

void expect_canaries(const Guarded& g, const std::string& what) {
  const int64_t n = g.view.numel();
  const double expected = full({1}, kCanary, g.buffer.dtype()).to_vector<double>()[0];
  std::vector<double> all = g.buffer.to_vector<double>();
  for (int64_t i = 0; i < kPad; ++i) {
    ASSERT_EQ(all[size_t(i)], expected)
        << what << ": write before the buffer (element " << i - kPad << ")";
    ASSERT_EQ(all[size_t(kPad + n + i)], expected)
        << what << ": write past the end (element " << n + i << ")";
  }
}

// Max violation of |a - b| <= atol + rtol |b| over elements (NaN in the same places is equal).
void expect_close(const Tensor& gpu, const Tensor& cpu_ref, Tol tol, const std::string& what) {
  ASSERT_EQ(gpu.shape(), cpu_ref.shape()) << what;
  std::vector<double> a = gpu.to_vector<double>(), b = cpu_ref.to_vector<double>();
  int bad = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::isnan(a[i]) && std::isnan(b[i])) continue;
    if (std::isinf(b[i]) && a[i] == b[i]) continue;
    double err = std::abs(a[i] - b[i]), bound = tol.atol + tol.rtol * std::abs(b[i]);
    if (!(err <= bound) && bad++ < 5) {
      ADD_FAILURE() << what << ": element " << i << " gpu " << a[i] << " cpu " << b[i]
                    << " (|diff| " << err << " > " << bound << ")";
    }
  }
  EXPECT_EQ(bad, 0) << what << ": " << bad << " of " << a.size() << " elements out of tolerance";
}

// `target`: the GPU, or the CPU itself for its bf16 path (then "gpu" in messages is the bf16 run).
void run_case(const OpCase& c, DType dt, uint64_t seed, Device target = kGpu) {
  const std::string tag = c.name + " [" + dtype_name(dt) + "]";
  const bool half = dt == DType::bf16 || dt == DType::f16;
  const DType ref_dt = half ? DType::f32 : dt;  // the CPU reference's dtype
  Generator gen(seed, c.name);

  std::vector<Tensor> cpu_leaves, gpu_leaves, cpu_in, gpu_in;
  std::vector<Guarded> guards;
  for (const InputSpec& s : c.inputs) {
    Tensor host;
    bool differentiable = false;
    if (s.fixed) {
      host = s.fixed();
      if (is_floating(host.dtype())) host = to(host, dt);  // e.g. scalar parameters
    } else {
      Shape stored = s.shape;
      if (s.transposed) std::swap(stored[stored.size() - 1], stored[stored.size() - 2]);
      host = to(uniform(stored, s.lo, s.hi, gen, DType::f64), dt);  // rounded to dt here
      differentiable = s.grad && c.backward;
    }
    Guarded g = guard_on_device(host, target);
    Tensor cpu_leaf = is_floating(host.dtype()) && host.dtype() == dt ? to(host, ref_dt) : host;
    cpu_leaf = cpu_leaf.detach();
    Tensor gpu_leaf = g.view.detach();
    if (differentiable) {
      cpu_leaf.requires_grad_();
      gpu_leaf.requires_grad_();
    }
    guards.push_back(g);
    cpu_leaves.push_back(cpu_leaf);
    gpu_leaves.push_back(gpu_leaf);
    cpu_in.push_back(s.transposed ? transpose(cpu_leaf, -1, -2) : cpu_leaf);
    gpu_in.push_back(s.transposed ? transpose(gpu_leaf, -1, -2) : gpu_leaf);
  }

  Tensor out_cpu = c.f(cpu_in);
  Tensor out_gpu = c.f(gpu_in);
  ASSERT_EQ(out_gpu.device(), target) << tag << ": output left the device";
  if (is_floating(out_gpu.dtype()) && c.backward) {
    EXPECT_EQ(out_gpu.dtype(), dt)
        << tag << ": a " << dtype_name(dt) << " op must answer in " << dtype_name(dt);
  }
  Tol tol = tolerance(dt, c.tol_scale);
  if (is_floating(out_gpu.dtype())) {
    expect_close(out_gpu, out_cpu, tol, tag + " forward");
  } else {
    EXPECT_EQ(out_gpu.to_vector<double>(), out_cpu.to_vector<double>()) << tag << " forward";
  }

  bool any_grad = false;
  for (const Tensor& t : cpu_leaves) any_grad |= t.requires_grad();
  if (any_grad && is_floating(out_gpu.dtype())) {
    Tensor w = uniform(out_cpu.shape(), -1.0, 1.0, gen, DType::f64);
    Tensor w_dt = to(w, dt);
    sum(mul(out_cpu, to(w_dt, ref_dt))).backward();
    sum(mul(out_gpu, to(w_dt, target))).backward();
    for (size_t i = 0; i < cpu_leaves.size(); ++i) {
      if (!cpu_leaves[i].requires_grad()) continue;
      Tensor gc = cpu_leaves[i].grad(), gg = gpu_leaves[i].grad();
      ASSERT_TRUE(gc.defined() && gg.defined()) << tag << ": missing gradient for input " << i;
      ASSERT_EQ(gg.device(), target) << tag << ": gradient of input " << i << " left the device";
      // Gradients go through more rounding steps than the forward: twice the tolerance.
      expect_close(gg, gc, tolerance(dt, 2 * c.tol_scale),
                   tag + " grad of input " + std::to_string(i));
    }
  }
  for (size_t i = 0; i < guards.size(); ++i)
    expect_canaries(guards[i], tag + " input " + std::to_string(i));
}

// ============================================================================================
// Section 2: the operator table. To add an op, add a case here.
// ============================================================================================

InputSpec in(Shape s, double lo = -1.0, double hi = 1.0) {
  InputSpec i;
  i.shape = std::move(s);
  i.lo = lo;
  i.hi = hi;
  return i;
}
InputSpec in_t(Shape s) {
  InputSpec i = in(std::move(s));
  i.transposed = true;
  return i;
}
InputSpec fixed(std::function<Tensor()> f) {
  InputSpec i;
  i.fixed = std::move(f);
  i.grad = false;
  return i;
}
const std::vector<DType> kAllFloat = {DType::f32, DType::f64, DType::bf16};

std::vector<OpCase> unary_cases() {
  struct U {
    const char* name;
    Tensor (*f)(const Tensor&);
    double lo, hi;
  };
  const U us[] = {{"neg", neg, -1, 1},
                  {"exp", exp, -2, 2},
                  {"log", log, 0.1, 3},
                  {"sqrt", sqrt, 0.1, 3},
                  {"rsqrt", rsqrt, 0.2, 3},
                  {"tanh", tanh, -3, 3},
                  {"sigmoid", sigmoid, -4, 4},
                  {"relu", relu, -1, 1},
                  {"silu", silu, -3, 3},
                  {"abs", abs, -1, 1},
                  {"softplus", softplus, -5, 5},
                  {"log1p", log1p, -0.5, 2},
                  {"square", square, -2, 2},
                  {"reciprocal", reciprocal, 0.5, 2},
                  {"sin", sin, -3, 3},
                  {"cos", cos, -3, 3},
                  {"log_sigmoid", log_sigmoid, -5, 5}};
  std::vector<OpCase> cases;
  for (const U& u : us) {
    auto f = u.f;
    cases.push_back({u.name,
                     {in({7, 129}, u.lo, u.hi)},
                     [f](const std::vector<Tensor>& x) { return f(x[0]); },
                     true,
                     kAllFloat});
  }
  cases.push_back(
      {"gelu_erf", {in_t({5, 33})}, [](const auto& x) { return gelu(x[0]); }, true, kAllFloat});
  cases.push_back({"gelu_tanh",
                   {in({3, 1, 17})},
                   [](const auto& x) { return gelu(x[0], GeluApprox::tanh); },
                   true,
                   kAllFloat});
  cases.push_back({"pow_scalar",
                   {in({31}, 0.2, 2)},
                   [](const auto& x) { return pow(x[0], 3.0); },
                   true,
                   kAllFloat});
  cases.push_back(
      {"clamp", {in({4, 9}, -2, 2)}, [](const auto& x) { return clamp(x[0], -0.5, 0.7); }});
  cases.push_back(
      {"mul_scalar_noncontig", {in_t({6, 10})}, [](const auto& x) { return mul(x[0], 2.5); }});
  return cases;
}

std::vector<OpCase> binary_cases() {
  std::vector<OpCase> c;
  c.push_back({"add_broadcast",
               {in({3, 1, 5}), in({4, 5})},
               [](const auto& x) { return add(x[0], x[1]); },
               true,
               kAllFloat});
  c.push_back(
      {"sub_noncontig", {in_t({5, 7}), in({5, 7})}, [](const auto& x) { return sub(x[0], x[1]); }});
  c.push_back({"mul_broadcast_col",
               {in({6, 1}), in_t({6, 9})},
               [](const auto& x) { return mul(x[0], x[1]); },
               true,
               kAllFloat});
  c.push_back(
      {"div", {in({2, 3, 4}), in({3, 4}, 0.5, 2)}, [](const auto& x) { return div(x[0], x[1]); }});
  c.push_back({"pow", {in({13}, 0.2, 2), in({13})}, [](const auto& x) { return pow(x[0], x[1]); }});
  c.push_back(
      {"maximum", {in({8, 3}), in({3})}, [](const auto& x) { return maximum(x[0], x[1]); }});
  c.push_back(
      {"minimum", {in({8, 3}), in({8, 3})}, [](const auto& x) { return minimum(x[0], x[1]); }});
  c.push_back(
      {"gt_bool", {in({5, 6}), in({6})}, [](const auto& x) { return gt(x[0], x[1]); }, false});
  InputSpec cond = in({4, 7});
  cond.grad = false;  // only its sign is used
  c.push_back({"where",
               {cond, in({4, 7}), in({7})},
               [](const auto& x) { return where(gt(x[0], 0.0), x[1], x[2]); },
               true,
               kAllFloat});
  return c;
}

std::vector<OpCase> reduce_shape_cases() {
  std::vector<OpCase> c;
  c.push_back(
      {"sum_all", {in({37, 129})}, [](const auto& x) { return sum(x[0]); }, true, kAllFloat});
  c.push_back(
      {"sum_dim_keep", {in_t({5, 6, 7})}, [](const auto& x) { return sum(x[0], {1}, true); }});
  c.push_back({"mean_last",
               {in({3, 300})},
               [](const auto& x) { return mean(x[0], {-1}); },
               true,
               kAllFloat});
  c.push_back({"amax", {in({9, 11})}, [](const auto& x) { return amax(x[0]); }});
  c.push_back({"logsumexp_mid", {in({4, 5, 6})}, [](const auto& x) { return logsumexp(x[0], 1); }});
  c.push_back({"argmax", {in({6, 19})}, [](const auto& x) { return argmax(x[0], 1); }, false});
  c.push_back(
      {"contiguous_copy", {in_t({7, 3, 5})}, [](const auto& x) { return contiguous(x[0]); }});
  c.push_back({"cat", {in({2, 3}), in({2, 5})}, [](const auto& x) {
                 return cat({x[0], x[1]}, 1);
               }});
  c.push_back({"pad", {in({3, 4})}, [](const auto& x) { return pad(x[0], {1, 2, 0, 1}, 0.5); }});
  c.push_back({"to_f64_and_back", {in({5, 5})}, [](const auto& x) {
                 return to(mul(to(x[0], DType::f64), 3.0), x[0].dtype());
               }});
  return c;
}

// Inputs q, k, v, prefix_k, prefix_v, key_mask; causal.
Tensor attention_prefix_mask_causal(const std::vector<Tensor>& x) {
  AttentionOptions o;
  o.causal = true;
  o.prefix_k = x[3];
  o.prefix_v = x[4];
  o.key_mask = x[5];
  return scaled_dot_product_attention(x[0], x[1], x[2], o);
}

std::vector<OpCase> linalg_norm_cases() {
  std::vector<OpCase> c;
  c.push_back({"matmul",
               {in({7, 5}), in({5, 9})},
               [](const auto& x) { return matmul(x[0], x[1]); },
               true,
               kAllFloat});
  c.push_back({"matmul_transposed_operands", {in_t({6, 4}), in_t({4, 3})}, [](const auto& x) {
                 return matmul(x[0], x[1]);
               }});
  c.push_back({"matmul_batched_broadcast",
               {in({2, 3, 4, 6}), in({6, 5})},
               [](const auto& x) { return matmul(x[0], x[1]); },
               true,
               kAllFloat});
  c.push_back({"matmul_batch_broadcast_both", {in({2, 1, 3, 4}), in({3, 4, 2})}, [](const auto& x) {
                 return matmul(x[0], x[1]);
               }});
  c.push_back({"linear_bias",
               {in({3, 4, 8}), in({5, 8}), in({5})},
               [](const auto& x) { return linear(x[0], x[1], x[2]); },
               true,
               kAllFloat});
  c.push_back({"softmax_last",
               {in({5, 129}, -3, 3)},
               [](const auto& x) { return softmax(x[0], -1); },
               true,
               kAllFloat});
  c.push_back(
      {"softmax_mid", {in({3, 7, 4}, -3, 3)}, [](const auto& x) { return softmax(x[0], 1); }});
  c.push_back({"log_softmax",
               {in({4, 1000}, -3, 3)},
               [](const auto& x) { return log_softmax(x[0], -1); },
               true,
               kAllFloat});
  c.push_back({"layer_norm",
               {in({6, 97}), in({97}), in({97})},
               [](const auto& x) { return layer_norm(x[0], x[1], x[2]); },
               true,
               kAllFloat,
               2.0});
  c.push_back({"layer_norm_noncontig", {in_t({12, 5}), in({5}), in({5})}, [](const auto& x) {
                 return layer_norm(x[0], x[1], x[2]);
               }});
  c.push_back({"rms_norm",
               {in({2, 3, 64}), in({64})},
               [](const auto& x) { return rms_norm(x[0], x[1]); },
               true,
               kAllFloat,
               2.0});
  c.push_back({"attention",
               {in({2, 3, 5, 8}), in({2, 3, 7, 8}), in({2, 3, 7, 6})},
               [](const auto& x) { return scaled_dot_product_attention(x[0], x[1], x[2]); },
               true,
               kAllFloat,
               2.0});
  c.push_back({"attention_causal",
               {in({1, 2, 6, 4}), in({1, 2, 6, 4}), in({1, 2, 6, 4})},
               [](const auto& x) {
                 AttentionOptions o;
                 o.causal = true;
                 return scaled_dot_product_attention(x[0], x[1], x[2], o);
               }});
  // Batch 1 masks every key: its queries must get zeros and zero gradients on both devices.
  c.push_back({"attention_prefix_mask_causal",
               {in({2, 2, 5, 4}), in({2, 2, 5, 4}), in({2, 2, 5, 3}), in({2, 2, 3, 4}),
                in({2, 2, 3, 3}), fixed([] {
                  return from_vector<int32_t>({1, 0, 1, 1, 1, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0},
                                              {2, 8}, DType::boolean);
                })},
               attention_prefix_mask_causal});
  // The fused kernel's tiling: 45 queries (6 blocks of 8 rows, the last partial), 33 prefix + 70
  // own keys (4 tiles of 32, the last partial), head dim 72 (3 dims per lane, SigLIP's), Dv 40,
  // a key mask with holes in the prefix and the own keys, causal.
  c.push_back({"attention_tiles_prefix_mask_causal",
               {in({2, 3, 45, 72}), in({2, 3, 70, 72}), in({2, 3, 70, 40}), in({2, 3, 33, 72}),
                in({2, 3, 33, 40}), fixed([] {
                  std::vector<int32_t> m(2 * 103);
                  for (size_t i = 0; i < m.size(); ++i) m[i] = (i * 7 + i / 103) % 5 != 0;
                  return from_vector<int32_t>(m, {2, 103}, DType::boolean);
                })},
               attention_prefix_mask_causal,
               true,
               kAllFloat,
               2.0});
  // q/k/v as permuted views of a [B, N, H, D] projection (the ViT's layout): strided rows, unit
  // last stride, no copy on the way in.
  c.push_back({"attention_permuted_views",
               {in({2, 37, 3, 16}), in({2, 41, 3, 16}), in({2, 41, 3, 16})},
               [](const auto& x) {
                 return scaled_dot_product_attention(permute(x[0], {0, 2, 1, 3}),
                                                     permute(x[1], {0, 2, 1, 3}),
                                                     permute(x[2], {0, 2, 1, 3}));
               }});
  // Head dims past 128 (8 dims per lane) and Dv != Dh.
  c.push_back({"attention_wide_heads",
               {in({1, 2, 9, 160}), in({1, 2, 40, 160}), in({1, 2, 40, 130})},
               [](const auto& x) { return scaled_dot_product_attention(x[0], x[1], x[2]); }});
  return c;
}

std::vector<OpCase> loss_index_vision_cases() {
  std::vector<OpCase> c;
  c.push_back({"cross_entropy",
               {in({6, 11}, -2, 2), fixed([] {
                  return from_vector<int64_t>({0, 10, 3, -100, 7, 3}, {6});
                })},
               [](const auto& x) { return cross_entropy(x[0], x[1]); }});
  c.push_back({"bce_with_logits", {in({4, 5}, -3, 3), in({4, 5}, 0, 1)}, [](const auto& x) {
                 return binary_cross_entropy_with_logits(x[0], x[1]);
               }});
  c.push_back({"dice", {in({3, 8}, 0.05, 0.95), in({3, 8}, 0, 1)}, [](const auto& x) {
                 return dice_loss(x[0], x[1]);
               }});
  c.push_back({"siglip",
               {in({4, 8}), in({6, 8}), fixed([] { return full({}, 0.5); }),
                fixed([] { return full({}, -1.0); })},
               [](const auto& x) { return siglip_loss(x[0], x[1], x[2], x[3]); }});
  c.push_back({"embedding",
               {in({10, 6}), fixed([] {
                  return from_vector<int64_t>({3, 0, 9, 3, 3, 1, 7}, {7});
                })},
               [](const auto& x) { return embedding(x[0], x[1]); }});
  c.push_back({"index_select_mid",
               {in({3, 8, 5}), fixed([] {
                  return from_vector<int64_t>({7, 0, 7, 2}, {4});
                })},
               [](const auto& x) { return index_select(x[0], 1, x[1]); }});
  c.push_back({"gather",
               {in({4, 6}), fixed([] {
                  return from_vector<int64_t>({5, 0, 1, 1, 2, 3, 4, 5}, {4, 2});
                })},
               [](const auto& x) { return gather(x[0], 1, x[1]); }});
  c.push_back({"scatter_add",
               {in({4, 6}), fixed([] {
                  return from_vector<int64_t>({5, 5, 1, 0, 2, 2, 4, 5}, {4, 2});
                }),
                in({4, 2})},
               [](const auto& x) { return scatter_add(x[0], 1, x[1], x[2]); }});
  c.push_back({"topk_values", {in({3, 50})}, [](const auto& x) { return topk(x[0], 7).values; }});
  c.push_back(
      {"topk_indices", {in({3, 50})}, [](const auto& x) { return topk(x[0], 7).indices; }, false});
  c.push_back({"conv2d_im2col", {in({2, 3, 9, 7}), in({4, 3, 3, 3}), in({4})}, [](const auto& x) {
                 return conv2d(x[0], x[1], x[2], 2, 1);
               }});
  c.push_back({"conv2d_depthwise",
               {in({2, 4, 11, 10}), in({4, 1, 7, 7}), in({4})},
               [](const auto& x) { return conv2d(x[0], x[1], x[2], 1, 3, 4); }});
  c.push_back({"adaptive_max_pool2d", {in({2, 3, 7, 9})}, [](const auto& x) {
                 return adaptive_max_pool2d(x[0], 3, 4).values;
               }});
  c.push_back({"interpolate_bilinear", {in({1, 2, 5, 6})}, [](const auto& x) {
                 return interpolate(x[0], 7, 3, ResampleMode::bilinear);
               }});
  return c;
}

std::vector<OpCase> all_cases() {
  std::vector<OpCase> all;
  for (auto part : {unary_cases(), binary_cases(), reduce_shape_cases(), linalg_norm_cases(),
                    loss_index_vision_cases()}) {
    all.insert(all.end(), part.begin(), part.end());
  }
  return all;
}

// ============================================================================================
// Section 3: tests
// ============================================================================================

class CudaBackendOps : public ::testing::TestWithParam<OpCase> {};

TEST_P(CudaBackendOps, MatchesCpuForwardAndBackward) {
  HD_REQUIRE_CUDA();
  const OpCase& c = GetParam();
  uint64_t seed = 1;
  for (DType dt : c.dtypes) {
    SCOPED_TRACE(c.name + " " + dtype_name(dt));
    run_case(c, dt, seed++);
  }
}

// The CPU's bf16 path, on every case of the table: bf16 inputs in, a bf16 answer out, computed in
// f32 inside the op where precision needs it, against the CPU in f32 on the same rounded inputs
// with the bf16 tolerances (issue 15: bf16 as a compute type on the CPU).
TEST_P(CudaBackendOps, CpuBf16MatchesCpuF32) {
  const OpCase& c = GetParam();
  run_case(c, DType::bf16, 7, Device::cpu());
}

// The table itself runs here on any machine: every case's CPU side (the reference the GPU is
// held to), forward and backward, must be well-formed: finite outputs and a gradient for every
// differentiable input. This is what keeps the table honest on machines without a GPU.
TEST_P(CudaBackendOps, CpuReferenceIsWellFormed) {
  const OpCase& c = GetParam();
  for (DType dt : c.dtypes) {
    SCOPED_TRACE(c.name + " " + dtype_name(dt));
    const DType ref_dt = (dt == DType::bf16 || dt == DType::f16) ? DType::f32 : dt;
    Generator gen(11, c.name);
    std::vector<Tensor> leaves, ins;
    for (const InputSpec& s : c.inputs) {
      Tensor t;
      if (s.fixed) {
        t = s.fixed();
        if (is_floating(t.dtype())) t = to(t, ref_dt);
      } else {
        Shape stored = s.shape;
        if (s.transposed) std::swap(stored[stored.size() - 1], stored[stored.size() - 2]);
        t = to(to(uniform(stored, s.lo, s.hi, gen, DType::f64), dt), ref_dt).detach();
        if (s.grad && c.backward) t.requires_grad_();
      }
      leaves.push_back(t);
      ins.push_back(s.transposed ? transpose(t, -1, -2) : t);
    }
    Tensor out = c.f(ins);
    ASSERT_TRUE(out.defined());
    EXPECT_TRUE(out.device().is_cpu());
    if (is_floating(out.dtype())) {
      for (double v : out.to_vector<double>()) {
        ASSERT_TRUE(std::isfinite(v)) << "non-finite reference output";
      }
      if (c.backward) {
        sum(mul(out, uniform(out.shape(), -1, 1, gen, out.dtype()))).backward();
        for (size_t i = 0; i < leaves.size(); ++i) {
          if (leaves[i].requires_grad()) {
            EXPECT_TRUE(leaves[i].grad().defined()) << "input " << i;
          }
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Table, CudaBackendOps, ::testing::ValuesIn(all_cases()),
                         [](const ::testing::TestParamInfo<OpCase>& info) {
                           return info.param.name;
                         });

TEST(CudaBackend, InPlaceOpsStayInsideTheirBuffers) {
  HD_REQUIRE_CUDA();
  Generator gen(7, "inplace");
  Tensor a = uniform({5, 33}, -1, 1, gen), b = uniform({33}, -1, 1, gen);
  Guarded ga = guard_on_device(a);
  Tensor va = ga.view;
  add_(va, to(b, kGpu));
  mul_(va, 3.0);
  expect_close(va, mul(add(a, b), 3.0), tolerance(DType::f32, 1), "add_ then mul_");
  Tensor t = va.as_strided({5, 11}, {33, 3}, 1);  // a strided window of the same buffer
  fill_(t, 2.0);
  Tensor host = to(va, Device::cpu());
  Tensor expected = mul(add(a, b), 3.0);
  Tensor ew = expected.as_strided({5, 11}, {33, 3}, 1);
  fill_(ew, 2.0);
  expect_close(host, expected, tolerance(DType::f32, 1), "fill_ on a strided window");
  expect_canaries(ga, "in-place ops");
}

TEST(CudaBackend, AdamWMatchesCpu) {
  HD_REQUIRE_CUDA();
  for (DType dt : {DType::f32, DType::f64}) {
    Generator gen(3, "adamw");
    Tensor p_cpu = uniform({129, 7}, -1, 1, gen, dt), g_cpu = uniform({129, 7}, -1, 1, gen, dt);
    Tensor p_gpu = to(p_cpu, kGpu).detach();
    p_cpu = clone(p_cpu).detach();
    p_cpu.requires_grad_();
    p_gpu.requires_grad_();
    AdamW cpu_opt({ParamGroup{"decay", {"w"}, {p_cpu}, 0.1}}, AdamWOptions{1e-2, 0.9, 0.99, 1e-8});
    AdamW gpu_opt({ParamGroup{"decay", {"w"}, {p_gpu}, 0.1}}, AdamWOptions{1e-2, 0.9, 0.99, 1e-8});
    for (int step = 0; step < 3; ++step) {
      Tensor g = mul(g_cpu, double(step + 1));
      p_cpu.set_grad(g);
      p_gpu.set_grad(to(g, kGpu));
      cpu_opt.step();
      gpu_opt.step();
    }
    expect_close(p_gpu, p_cpu, tolerance(dt, 1), std::string("adamw ") + dtype_name(dt));
    expect_close(gpu_opt.exp_avg_sq(0, 0), cpu_opt.exp_avg_sq(0, 0), tolerance(dt, 1), "adamw v");
  }
}

#ifdef HD_HAVE_CUDA
TEST(CudaBackend, Tf32IsASettingAndStaysClose) {
  HD_REQUIRE_CUDA();
  Generator gen(5, "tf32");
  Tensor a = uniform({64, 96}, -1, 1, gen), b = uniform({96, 48}, -1, 1, gen);
  Tensor ref = matmul(a, b);
  cuda::set_allow_tf32(true);
  Tensor fast = matmul(to(a, kGpu), to(b, kGpu));
  cuda::set_allow_tf32(false);
  expect_close(fast, ref, {2e-2, 2e-2}, "tf32 matmul");  // 10-bit mantissa inputs
}

TEST(CudaRuntime, AllocatorCountsAndCaches) {
  HD_REQUIRE_CUDA();
  Allocator& alloc = allocator_for(kGpu);
  alloc.reset_peak();
  MemoryStats before = alloc.stats();
  {
    Tensor t = Tensor::empty({1 << 20}, DType::f32, kGpu);
    MemoryStats during = alloc.stats();
    EXPECT_EQ(during.current_bytes, before.current_bytes + (int64_t(4) << 20));
    EXPECT_GE(during.peak_bytes, during.current_bytes);
    EXPECT_EQ(during.allocations, before.allocations + 1);
  }
  cuda::current_stream(0).synchronize();
  MemoryStats after = alloc.stats();
  EXPECT_EQ(after.current_bytes, before.current_bytes);
  EXPECT_GE(after.peak_bytes, before.current_bytes + (int64_t(4) << 20));
  EXPECT_GE(after.cached_bytes, int64_t(4) << 20);  // kept in the pool, not returned
  alloc.empty_cache();
}

TEST(CudaRuntime, StreamsEventsAndPinnedCopies) {
  HD_REQUIRE_CUDA();
  auto side = cuda::Stream::create(0);
  Tensor x = arange(0, 1000, 1, DType::f32, kGpu);  // on the default stream
  side->wait(cuda::current_stream(0));
  Tensor y;
  {
    cuda::StreamGuard on_side(*side);
    y = mul(x, 2.0);  // enqueued on the side stream
  }
  cuda::Event done;
  done.record(*side);
  done.synchronize();
  EXPECT_TRUE(done.query());
  cuda::PinnedBuffer pinned(y.nbytes());
  cuda::copy_device_to_host(pinned.data(), y.raw_data(), y.nbytes(), 0);
  const float* p = static_cast<const float*>(pinned.data());
  for (int i = 0; i < 1000; ++i) ASSERT_EQ(p[i], 2.0f * float(i));
}
#endif

// The CUDA attention path is a composition of ops; its semantics (prefix, causal, key mask, a
// fully masked batch) are checked here against the CPU flash kernel, on the CPU, in f64.
TEST(CudaBackend, ComposedAttentionMatchesTheCpuKernel) {
  Generator gen(9, "composed_attention");
  auto leaf = [&](Shape s) { return uniform(s, -1, 1, gen, DType::f64).detach().requires_grad_(); };
  for (bool causal : {false, true}) {
    Tensor q = leaf({2, 2, 5, 4}), k = leaf({2, 2, 6, 4}), v = leaf({2, 2, 6, 3});
    Tensor pk = leaf({2, 2, 3, 4}), pv = leaf({2, 2, 3, 3});
    AttentionOptions o;
    o.causal = causal;
    o.prefix_k = pk;
    o.prefix_v = pv;
    o.key_mask = from_vector<int32_t>({1, 0, 1, 1, 1, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
                                      {2, 9}, DType::boolean);
    Tensor w = uniform({2, 2, 5, 3}, -1, 1, gen, DType::f64);
    std::vector<Tensor> leaves = {q, k, v, pk, pv};
    sum(mul(scaled_dot_product_attention(q, k, v, o), w)).backward();
    std::vector<Tensor> ref_grads;
    for (Tensor& t : leaves) {
      ref_grads.push_back(t.grad());
      t.zero_grad();
    }
    Tensor ref = scaled_dot_product_attention(q, k, v, o).detach();
    Tensor got = detail::attention_composed(q, k, v, o);
    expect_close(got, ref, tolerance(DType::f64, 10), "composed attention forward");
    sum(mul(got, w)).backward();
    for (size_t i = 0; i < leaves.size(); ++i) {
      ASSERT_TRUE(leaves[i].grad().defined()) << "input " << i;
      expect_close(leaves[i].grad(), ref_grads[i], tolerance(DType::f64, 10),
                   "composed attention grad " + std::to_string(i) + (causal ? " causal" : ""));
    }
  }
}

// These run on every machine: without a GPU, CUDA tensors are a clear error, never a crash.
TEST(CudaRuntime, NoDeviceIsAClearError) {
#ifdef HD_HAVE_CUDA
  if (cuda::available())
    GTEST_SKIP() << "a CUDA device is present: the no-device path cannot be tested";
  try {
    Tensor::empty({2, 3}, DType::f32, kGpu);
    FAIL() << "allocating a CUDA tensor without a device must throw";
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("no CUDA device for cuda:0"), std::string::npos) << msg;
    EXPECT_NE(msg.find(cuda::unavailable_reason()), std::string::npos) << msg;
  }
  try {
    to(ones({4}), kGpu);
    FAIL() << "moving a tensor to a missing device must throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no CUDA device"), std::string::npos) << e.what();
  }
  // The CPU is unaffected.
  EXPECT_EQ(sum(ones({4})).item<float>(), 4.0f);
#else
  EXPECT_THROW(Tensor::empty({2}, DType::f32, kGpu), Error);
#endif
}

}  // namespace
}  // namespace hd
