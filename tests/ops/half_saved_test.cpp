// [Note: 16-bit saved tensors] (ops/cpu_half.h): a 16-bit op on the CPU computes in f32 but
// keeps what its backward needs in 16 bits, so the bytes a bf16 forward leaves alive (output +
// saved tensors) are about half the f32 forward's. Measured with the host allocator's live-byte
// counter; the gradients are those of the f32 op on the same (rounded) inputs to bf16 accuracy.
#include <gtest/gtest.h>

#include <cstdio>
#include <functional>

#include "autograd/allocator.h"
#include "autograd/random.h"
#include "ops/attention.h"
#include "ops/conv.h"
#include "ops/elementwise.h"
#include "ops/factory.h"
#include "ops/norm.h"
#include "ops/reduce.h"
#include "ops/shape.h"
#include "ops/softmax.h"

namespace hd {
namespace {

int64_t live_host_bytes() {
  return allocator_for(Device::cpu()).stats().current_bytes;
}

struct Run {
  int64_t held_bytes = 0;  // live after forward, beyond the inputs
  std::vector<Tensor> grads;
};

// Makes the inputs (leaves in `dtype`), runs `op`, counts the bytes the forward left alive, then
// backpropagates a fixed weighting of the output and returns the input gradients in f32.
Run run(DType dtype, const std::vector<Shape>& shapes,
        const std::function<Tensor(const std::vector<Tensor>&)>& op) {
  Generator gen(11, "half_saved");
  std::vector<Tensor> in;
  for (const Shape& s : shapes) {
    in.push_back(to(normal(s, 0, 1, gen), dtype).detach());
    in.back().requires_grad_(true);
  }
  Run r;
  Tensor weights = to(normal(op(in).shape(), 0, 1, gen), DType::f32).detach();
  for (Tensor& t : in) t.zero_grad();
  const int64_t before = live_host_bytes();
  Tensor y = op(in);
  r.held_bytes = live_host_bytes() - before;
  sum(mul(to(y, DType::f32), weights)).backward();
  for (const Tensor& t : in) r.grads.push_back(to(t.grad(), DType::f32));
  return r;
}

void expect_half_bytes_and_same_gradients(
    const std::vector<Shape>& shapes, const std::function<Tensor(const std::vector<Tensor>&)>& op) {
  Run f32 = run(DType::f32, shapes, op), bf16 = run(DType::bf16, shapes, op);
  SCOPED_TRACE(::testing::Message()
               << "f32 forward held " << f32.held_bytes << " bytes, bf16 " << bf16.held_bytes);
  std::printf("forward keeps %lld bytes in f32, %lld in bf16 (%.2fx)\n", (long long)f32.held_bytes,
              (long long)bf16.held_bytes, double(bf16.held_bytes) / double(f32.held_bytes));
  EXPECT_GT(f32.held_bytes, 0);
  EXPECT_LE(double(bf16.held_bytes), 0.55 * double(f32.held_bytes));
  ASSERT_EQ(f32.grads.size(), bf16.grads.size());
  for (size_t i = 0; i < f32.grads.size(); ++i) {
    // bf16 inputs and outputs: ~3 significant digits.
    Tensor ref = f32.grads[i];
    double scale = amax(abs(ref)).item<double>();
    double err = amax(abs(sub(bf16.grads[i], ref))).item<double>();
    EXPECT_LT(err, 0.05 * scale) << "input " << i;
  }
}

TEST(HalfSavedTensors, LayerNormSavesItsBf16Input) {
  expect_half_bytes_and_same_gradients({{64, 96}, {96}, {96}}, [](const std::vector<Tensor>& in) {
    return layer_norm(in[0], in[1], in[2], 1e-6);
  });
}

TEST(HalfSavedTensors, RmsNormSavesItsBf16Input) {
  expect_half_bytes_and_same_gradients(
      {{64, 96}, {96}}, [](const std::vector<Tensor>& in) { return rms_norm(in[0], in[1], 1e-6); });
}

TEST(HalfSavedTensors, SoftmaxSavesItsBf16Output) {
  expect_half_bytes_and_same_gradients(
      {{8, 50, 50}}, [](const std::vector<Tensor>& in) { return softmax(in[0], -1); });
}

// q, k, v as the ViT makes them: permuted views of one [B, N, 3, H, Dh] projection, which the
// node saves without a copy in every dtype.
TEST(HalfSavedTensors, AttentionSavesItsBf16InputsAndOutput) {
  expect_half_bytes_and_same_gradients({{2, 40, 3, 2, 16}}, [](const std::vector<Tensor>& in) {
    Tensor qkv = permute(in[0], {2, 0, 3, 1, 4});  // [3, B, H, N, Dh]
    Tensor q = select(qkv, 0, 0), k = select(qkv, 0, 1), v = select(qkv, 0, 2);
    return scaled_dot_product_attention(q, k, v);
  });
}

TEST(HalfSavedTensors, DepthwiseConvSavesItsBf16InputAndWeight) {
  expect_half_bytes_and_same_gradients(
      {{2, 8, 20, 20}, {8, 1, 7, 7}, {8}},
      [](const std::vector<Tensor>& in) { return conv2d(in[0], in[1], in[2], 1, 3, 8); });
}

// A patch embedding (kernel = stride): reshapes around a bf16 matmul, which saves the bf16
// patches.
TEST(HalfSavedTensors, PatchConvSavesBf16Patches) {
  expect_half_bytes_and_same_gradients(
      {{2, 3, 28, 28}, {16, 3, 7, 7}, {16}},
      [](const std::vector<Tensor>& in) { return conv2d(in[0], in[1], in[2], 7, 0, 1); });
}

}  // namespace
}  // namespace hd
