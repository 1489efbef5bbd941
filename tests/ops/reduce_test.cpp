#include "ops/reduce.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "ops/elementwise.h"
#include "ops/factory.h"
#include "ops/shape.h"
#include "tests/testing/gradcheck.h"

namespace hd {
namespace {

using testing::check_gradients;
using testing::random_leaf;
using Inputs = std::vector<Tensor>;

TEST(Reduce, Values) {
  Tensor x = from_vector<float>({1, 5, 3, 4, 2, 6}, {2, 3});
  EXPECT_EQ(sum(x, {1}).to_vector<float>(), (std::vector<float>{9, 12}));
  EXPECT_EQ(sum(x, {0}, true).shape(), (Shape{1, 3}));
  EXPECT_EQ(mean(x).item<float>(), 3.5f);
  ValuesIndices m = max(x, 1);
  EXPECT_EQ(m.values.to_vector<float>(), (std::vector<float>{5, 6}));
  EXPECT_EQ(m.indices.to_vector<int64_t>(), (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(min(x, 0).indices.to_vector<int64_t>(), (std::vector<int64_t>{0, 1, 0}));
  EXPECT_EQ(argmax(x, 0).to_vector<int64_t>(), (std::vector<int64_t>{1, 0, 1}));
  EXPECT_EQ(amax(x).item<float>(), 6.f);
  EXPECT_NEAR(logsumexp(x, 1).to_vector<float>()[0],
              std::log(std::exp(1.f) + std::exp(5.f) + std::exp(3.f)), 1e-5);
  EXPECT_EQ(sum(gt(x, 2.5)).item<int64_t>(), 4);  // bool sums to i64
}

TEST(Reduce, LongSumIsAccurateAndThreadIndependent) {
  // 1e6 values of 0.1f: a naive f32 running sum drifts by ~1%; we accumulate in f64 in fixed
  // blocks, so the result is exact to f32 rounding.
  Tensor x = full({1000000}, 0.1);
  EXPECT_NEAR(sum(x).item<float>(), 100000.0f * 1.0000000015f, 1.0f);
}

// Column sums over many rows with few columns (a bias gradient: [5832, 192] summed over rows)
// are cut into fixed 1024-row slices so both threads work; f32 and bf16 (accumulated in f32)
// against an f64 sum written out here (not through the kernel under test), including a ragged
// last slice and column block.
TEST(Reduce, ManyRowColumnSumsMatchTheF64Sum) {
  for (const Shape& shape : {Shape{5832, 192}, Shape{2, 3001, 300}}) {
    const int64_t outer = shape.size() == 3 ? shape[0] : 1;
    const int64_t rows = shape[shape.size() - 2], cols = shape.back();
    for (DType dt : {DType::f32, DType::bf16}) {
      Generator g(7, "reduce_columns");
      Tensor x = to(uniform(shape, -1, 1, g), dt);
      const std::vector<double> values = to(x, DType::f64).to_vector<double>();
      const std::vector<double> got = to(sum(x, {-2}), DType::f64).to_vector<double>();
      int64_t bad = 0;
      for (int64_t o = 0; o < outer; ++o) {
        for (int64_t c = 0; c < cols; ++c) {
          double want = 0;
          for (int64_t r = 0; r < rows; ++r) want += values[size_t((o * rows + r) * cols + c)];
          // f32: accumulation error; bf16: the answer's own rounding (2^-9 relative) dominates.
          const double bound = std::abs(want) * (dt == DType::f32 ? 1e-6 : 1.0 / 256) + 1e-5;
          bad += std::abs(got[size_t(o * cols + c)] - want) > bound;
        }
      }
      EXPECT_EQ(bad, 0) << shape.size() << "-D case, " << dtype_name(dt);
    }
  }
}

TEST(Reduce, LogSumExpIsStableAndHandlesInfinity) {
  Tensor x = from_vector<float>({1000, 1000, -INFINITY, -INFINITY}, {2, 2});
  std::vector<float> r = logsumexp(x, 1).to_vector<float>();
  EXPECT_NEAR(r[0], 1000 + std::log(2.0), 1e-3);
  EXPECT_TRUE(std::isinf(r[1]) && r[1] < 0);
}

TEST(ReduceGrad, SumMeanOverDims) {
  Tensor x = random_leaf({2, 3, 4}, 1);
  EXPECT_TRUE(check_gradients([](const Inputs& in) { return sum(in[0], {0, 2}); }, {x}));
  EXPECT_TRUE(check_gradients([](const Inputs& in) { return mean(in[0], {1}, true); }, {x}));
  EXPECT_TRUE(check_gradients(
      [](const Inputs& in) {
        return sum(permute(in[0], {2, 0, 1}), {-1});
      },
      {x}));
  EXPECT_TRUE(check_gradients([](const Inputs& in) { return reshape(mean(in[0]), {1}); }, {x}));
}

TEST(ReduceGrad, MaxMinLogSumExp) {
  Tensor x = random_leaf({3, 5}, 2);
  EXPECT_TRUE(check_gradients([](const Inputs& in) { return max(in[0], 1).values; }, {x}));
  EXPECT_TRUE(check_gradients(
      [](const Inputs& in) { return min(transpose(in[0], 0, 1), 1, true).values; }, {x}));
  EXPECT_TRUE(check_gradients([](const Inputs& in) { return logsumexp(in[0], 0); }, {x}));
  EXPECT_TRUE(check_gradients([](const Inputs& in) { return reshape(amax(in[0]), {1}); }, {x}));
}

TEST(Reduce, BadDimsNameTheOp) {
  Tensor x = zeros({2, 3});
  EXPECT_THROW(sum(x, {2}), Error);
  EXPECT_THROW(sum(x, {1, -1}), Error);
  EXPECT_THROW(max(zeros({2, 0}), 1), Error);
}

}  // namespace
}  // namespace hd
