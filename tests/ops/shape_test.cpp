// Gradients of every view and layout op against finite differences (f64).
#include <gtest/gtest.h>

#include "ops/elementwise.h"
#include "ops/factory.h"
#include "ops/reduce.h"
#include "ops/shape.h"
#include "tests/testing/gradcheck.h"

namespace hd {
namespace {

using testing::check_gradients;
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

TEST(ShapeGrad, DTypeConversionRoundTrip) {
  Tensor x = random_leaf({3}, 7);
  Tensor y = to(to(x, DType::f32), DType::f64);
  ASSERT_TRUE(y.requires_grad());
  sum_to_first(y).backward(ones({1}, DType::f64));
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{1, 1, 1}));
}

}  // namespace
}  // namespace hd
