#include "ops/softmax.h"

#include <gtest/gtest.h>

#include <cmath>

#include "autograd/node.h"
#include "ops/elementwise.h"
#include "ops/factory.h"
#include "ops/reduce.h"
#include "ops/shape.h"
#include "tests/testing/errors.h"
#include "tests/testing/gradcheck.h"

namespace hd {
namespace {

using testing::check_gradients;
using testing::max_abs_diff;
using testing::random_leaf;

// softmax along the last dim of a row-major [rows, n] buffer, in double, straight from the
// definition.
std::vector<double> reference_softmax(const std::vector<double>& x, int64_t n, bool log) {
  std::vector<double> y(x.size());
  for (size_t r = 0; r < x.size() / size_t(n); ++r) {
    double m = -INFINITY, s = 0;
    for (int64_t i = 0; i < n; ++i) m = std::max(m, x[r * n + i]);
    for (int64_t i = 0; i < n; ++i) s += std::exp(x[r * n + i] - m);
    for (int64_t i = 0; i < n; ++i)
      y[r * n + i] = log ? x[r * n + i] - m - std::log(s) : std::exp(x[r * n + i] - m) / s;
  }
  return y;
}

TEST(Softmax, LastDimMatchesDefinitionF32WithTails) {
  // n = 37 exercises the 8-lane body and the scalar tail; 300 rows take the parallel path.
  Generator gen(1, "softmax-test");
  Tensor x = uniform({300, 37}, -6, 6, gen, DType::f32);
  std::vector<double> xd = x.to_vector<double>();
  for (bool log : {false, true}) {
    std::vector<double> want = reference_softmax(xd, 37, log);
    std::vector<float> got = (log ? log_softmax(x, -1) : softmax(x, 1)).to_vector<float>();
    double worst = 0;
    for (size_t i = 0; i < got.size(); ++i) worst = std::max(worst, std::abs(got[i] - want[i]));
    EXPECT_LT(worst, 2e-6) << (log ? "log_softmax" : "softmax");
  }
}

TEST(Softmax, LargeLogitsStayFinite) {
  Tensor x = from_vector<float>({1000.f, 1001.f, 1002.f, -1000.f}, {1, 4});
  std::vector<float> y = softmax(x, -1).to_vector<float>();
  EXPECT_NEAR(y[0], 0.09003057f, 1e-6f);
  EXPECT_NEAR(y[2], 0.66524096f, 1e-6f);
  EXPECT_EQ(y[3], 0.0f);
  std::vector<float> ly = log_softmax(x, -1).to_vector<float>();
  EXPECT_NEAR(ly[2], -0.40760596f, 1e-5f);
  EXPECT_NEAR(ly[3], -2002.40760596f, 1e-2f);
}

TEST(Softmax, NonLastDimMatchesLastDimPath) {
  // The strided kernel (running max/sum per column) against the row kernel on a transposed
  // copy; inner = 300 spans two column blocks.
  Generator gen(2, "softmax-test");
  Tensor x = uniform({3, 5, 300}, -4, 4, gen, DType::f32);
  for (bool log : {false, true}) {
    Tensor a = log ? log_softmax(x, 1) : softmax(x, 1);
    Tensor xt = contiguous(transpose(x, 1, 2));
    Tensor b = transpose(log ? log_softmax(xt, 2) : softmax(xt, 2), 1, 2);
    EXPECT_LT(max_abs_diff(a, contiguous(b)), 1e-6);
    Tensor c = log ? log_softmax(x, 0) : softmax(x, -3);
    Tensor xt0 = contiguous(permute(x, {1, 2, 0}));
    Tensor d = permute(log ? log_softmax(xt0, -1) : softmax(xt0, -1), {2, 0, 1});
    EXPECT_LT(max_abs_diff(c, contiguous(d)), 1e-6);
  }
}

TEST(Softmax, F32AgreesWithF64) {
  Tensor x = random_leaf({4, 64}, 3, -5, 5).detach();
  EXPECT_LT(max_abs_diff(to(softmax(to(x, DType::f32), 1), DType::f64), softmax(x, 1)), 1e-7);
}

TEST(Softmax, BackwardOpsMatchTheirFormulas) {
  Tensor x = random_leaf({3, 4, 5}, 4).detach();
  Tensor gy = random_leaf({3, 4, 5}, 5).detach();
  for (int64_t dim : {1, 2}) {
    Tensor y = softmax(x, dim);
    Tensor want = mul(y, sub(gy, sum(mul(gy, y), {dim}, true)));
    EXPECT_LT(max_abs_diff(softmax_backward(y, gy, dim), want), 1e-14);
    Tensor ly = log_softmax(x, dim);
    Tensor lwant = sub(gy, mul(exp(ly), sum(gy, {dim}, true)));
    EXPECT_LT(max_abs_diff(log_softmax_backward(ly, gy, dim), lwant), 1e-14);
  }
}

struct SoftmaxCase {
  const char* name;
  bool log;
  int64_t dim;
};
void PrintTo(const SoftmaxCase& c, std::ostream* os) {
  *os << c.name;
}

class SoftmaxGrad : public ::testing::TestWithParam<SoftmaxCase> {};

Tensor apply(const SoftmaxCase& c, const Tensor& x) {
  return c.log ? log_softmax(x, c.dim) : softmax(x, c.dim);
}

TEST_P(SoftmaxGrad, Contiguous) {
  const SoftmaxCase& c = GetParam();
  Tensor x = random_leaf({3, 4, 5}, 11, -2, 2);
  EXPECT_TRUE(check_gradients([&](const std::vector<Tensor>& in) { return apply(c, in[0]); }, {x}));
}

TEST_P(SoftmaxGrad, PermutedInput) {
  const SoftmaxCase& c = GetParam();
  Tensor x = random_leaf({5, 3, 4}, 12, -2, 2);
  EXPECT_TRUE(check_gradients(
      [&](const std::vector<Tensor>& in) {
        return apply(c, permute(in[0], {1, 2, 0}));
      },
      {x}));
}

TEST_P(SoftmaxGrad, StridedSliceInput) {
  const SoftmaxCase& c = GetParam();
  Tensor x = random_leaf({3, 4, 11}, 13, -2, 2);
  EXPECT_TRUE(check_gradients(
      [&](const std::vector<Tensor>& in) { return apply(c, slice(in[0], 2, 1, 11, 2)); }, {x}));
}

INSTANTIATE_TEST_SUITE_P(Ops, SoftmaxGrad,
                         ::testing::Values(SoftmaxCase{"softmax_last", false, -1},
                                           SoftmaxCase{"softmax_mid", false, 1},
                                           SoftmaxCase{"softmax_first", false, 0},
                                           SoftmaxCase{"log_softmax_last", true, 2},
                                           SoftmaxCase{"log_softmax_mid", true, -2},
                                           SoftmaxCase{"log_softmax_first", true, 0}),
                         [](const ::testing::TestParamInfo<SoftmaxCase>& info) {
                           return std::string(info.param.name);
                         });

TEST(Softmax, GradientThroughComposite) {
  // softmax feeding further ops and reused twice: gradients accumulate correctly.
  Tensor x = random_leaf({4, 6}, 14);
  EXPECT_TRUE(check_gradients(
      [](const std::vector<Tensor>& in) {
        Tensor p = softmax(in[0], 1);
        return add(mul(p, log_softmax(in[0], 0)), square(p));
      },
      {x}));
}

using testing::expect_error;

TEST(Softmax, ErrorsNameTheOp) {
  expect_error([] { softmax(zeros({2, 3}), 2); }, "softmax: dim 2 out of range");
  expect_error([] { log_softmax(zeros({2, 3}, DType::i64), 1); }, "log_softmax: expects a f32");
  expect_error(
      [] {
        softmax_backward(zeros({2, 3}), zeros({3, 2}), 1);
      },
      "softmax_backward: output [2, 3] and gradient [3, 2]");
}

}  // namespace
}  // namespace hd
