// Gradients of every view and layout op against finite differences (f64).
#include <gtest/gtest.h>

#include "autograd/node.h"
#include "ops/elementwise.h"
#include "ops/factory.h"
#include "ops/reduce.h"
#include "ops/shape.h"
#include "tests/testing/gradcheck.h"

namespace hd {
namespace {

using testing::check_gradients;
using testing::max_abs_diff;
using testing::random_leaf;
using Inputs = std::vector<Tensor>;

// Sums the last dim, keeping it (so [r, c] -> [r, 1]); [n] -> [1].
Tensor sum_to_first(const Tensor& x) {
  Shape s = x.shape();
  s.back() = 1;
  return sum_to(x, s);
}

TEST(ShapeGrad, ReshapeViewFlatten) {
  Tensor x = random_leaf({2, 3, 4}, 1);
  EXPECT_TRUE(check_gradients(
      [](const Inputs& in) {
        return mul(reshape(in[0], {4, -1}), 2.0);
      },
      {x}));
  EXPECT_TRUE(check_gradients([](const Inputs& in) { return flatten(in[0], 1); }, {x}));
  // reshape of a non-contiguous view (copies, still differentiable)
  EXPECT_TRUE(
      check_gradients([](const Inputs& in) { return reshape(transpose(in[0], 0, 2), {-1}); }, {x}));
}

TEST(ShapeGrad, PermuteTransposeSelectSqueeze) {
  Tensor x = random_leaf({2, 3, 4}, 2);
  EXPECT_TRUE(check_gradients(
      [](const Inputs& in) {
        return exp(permute(in[0], {2, 0, 1}));
      },
      {x}));
  EXPECT_TRUE(check_gradients([](const Inputs& in) { return select(in[0], 1, -1); }, {x}));
  EXPECT_TRUE(
      check_gradients([](const Inputs& in) { return squeeze(unsqueeze(in[0], 1), 1); }, {x}));
}

TEST(ShapeGrad, NarrowSliceWithStep) {
  Tensor x = random_leaf({5, 6}, 3);
  EXPECT_TRUE(check_gradients([](const Inputs& in) { return narrow(in[0], 0, 1, 3); }, {x}));
  EXPECT_TRUE(check_gradients([](const Inputs& in) { return slice(in[0], 1, -5, 6, 2); }, {x}));
  // overlapping uses of the same input accumulate
  EXPECT_TRUE(check_gradients(
      [](const Inputs& in) { return add(narrow(in[0], 1, 0, 4), narrow(in[0], 1, 2, 4)); }, {x}));
}

TEST(ShapeGrad, ExpandSumsBack) {
  Tensor x = random_leaf({3, 1}, 4);
  EXPECT_TRUE(check_gradients(
      [](const Inputs& in) {
        return square(expand(in[0], {2, 3, 4}));
      },
      {x}));
}

TEST(ShapeGrad, CatStackSplitChunkPad) {
  Tensor a = random_leaf({2, 3}, 5), b = random_leaf({2, 2}, 6);
  EXPECT_TRUE(check_gradients(
      [](const Inputs& in) {
        return cat({in[0], in[1], in[0]}, 1);
      },
      {a, b}));
  EXPECT_TRUE(check_gradients(
      [](const Inputs& in) {
        return stack({in[0], mul(in[0], in[0])}, 2);
      },
      {a}));
  EXPECT_TRUE(check_gradients(
      [](const Inputs& in) {
        std::vector<Tensor> parts = split(in[0], {1, 2}, 1);
        return mul(parts[0], sum_to_first(parts[1]));
      },
      {a}));
  EXPECT_TRUE(check_gradients(
      [](const Inputs& in) { return chunk(transpose(in[0], 0, 1), 2, 0)[0]; }, {a}));
  EXPECT_TRUE(check_gradients([](const Inputs& in) { return pad(in[0], {1, 2, 0, 1}, 0.5); }, {a}));
}

TEST(ShapeGrad, UnbindIsOneNodeAndPartialGradientsWork) {
  Tensor x = random_leaf({3, 2, 4}, 8);
  EXPECT_TRUE(check_gradients(
      [](const Inputs& in) {
        std::vector<Tensor> p = unbind(permute(in[0], {1, 0, 2}), 1);
        return add(mul(p[0], p[2]), p[1]);
      },
      {x}));
  // Only one slice used: the others get zero gradient.
  EXPECT_TRUE(check_gradients([](const Inputs& in) { return exp(unbind(in[0], 0)[1]); }, {x}));
  std::vector<Tensor> parts = unbind(x, 2);
  ASSERT_EQ(parts.size(), 4u);
  EXPECT_EQ(parts[3].storage(), x.storage());
  EXPECT_EQ(parts[0].grad_fn(), parts[3].grad_fn());
}

// The packed-qkv pattern (nn::SelfAttention): a projection's output reshaped, permuted and
// unbound into q, k, v views. The unbind's gradient comes back in the projection's memory order,
// so the gradient reaching the projection is contiguous without a reordering copy; its values
// equal those of stacking the pieces (gradcheck above covers the same path in f64).
TEST(ShapeGrad, UnbindOfAPermutedBlockReturnsItsGradientInMemoryOrder) {
  const int64_t B = 2, N = 5, H = 3, D = 4;
  Tensor proj = random_leaf({B, N, 3 * H * D}, 12);
  Tensor heads = permute(reshape(proj, {B, N, 3, H, D}), {2, 0, 3, 1, 4});  // [3, B, H, N, D]
  std::vector<Tensor> qkv = unbind(heads, 0);
  Tensor loss = add(add(sum(mul(qkv[0], 2.0)), sum(mul(qkv[1], qkv[1]))), sum(exp(qkv[2])));
  Tensor g_heads;
  heads.grad_fn()->add_post_hook(
      [&](const std::vector<Tensor>&, const std::vector<Tensor>& grad_outputs) {
        g_heads = grad_outputs[0];
      });
  loss.backward();
  ASSERT_TRUE(g_heads.defined());
  EXPECT_EQ(g_heads.strides(), heads.strides()) << "the gradient is laid out as heads is";
  // Against the derivative written out: d/dq = 2, d/dk = 2k, d/dv = exp(v).
  std::vector<Tensor> want_parts = {full_like(qkv[0], 2.0), mul(qkv[1].detach(), 2.0),
                                    exp(qkv[2].detach())};
  Tensor want = permute(stack(want_parts, 0), {1, 3, 0, 2, 4});  // back to [B, N, 3, H, D]
  EXPECT_LT(max_abs_diff(proj.grad(), reshape(contiguous(want), {B, N, 3 * H * D})), 1e-12);
}

TEST(ShapeGrad, DTypeConversionRoundTrip) {
  Tensor x = random_leaf({3}, 7);
  Tensor y = to(to(x, DType::f32), DType::f64);
  ASSERT_TRUE(y.requires_grad());
  sum_to_first(y).backward(ones({1}, DType::f64));
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{1, 1, 1}));
}

}  // namespace
}  // namespace hd
