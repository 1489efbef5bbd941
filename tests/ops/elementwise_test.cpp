#include "ops/elementwise.h"

#include <gtest/gtest.h>

#include <cmath>

#include "autograd/node.h"
#include "ops/cpu/vec_math.h"
#include "ops/factory.h"
#include "ops/reduce.h"
#include "ops/shape.h"
#include "tests/testing/gradcheck.h"

namespace hd {
namespace {

using testing::check_gradients;
using testing::random_leaf;

TEST(Elementwise, BroadcastAddValues) {
  Tensor a = from_vector<float>({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor b = from_vector<float>({10, 20, 30}, {3});
  EXPECT_EQ(add(a, b).to_vector<float>(), (std::vector<float>{11, 22, 33, 14, 25, 36}));
  Tensor c = from_vector<float>({100, 200}, {2, 1});
  EXPECT_EQ(add(a, c).to_vector<float>(), (std::vector<float>{101, 102, 103, 204, 205, 206}));
}

TEST(Elementwise, BroadcastMismatchNamesShapes) {
  Tensor a = zeros({2, 3}), b = zeros({4});
  try {
    add(a, b);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("add: shapes [2, 3] and [4]"), std::string::npos)
        << e.what();
  }
}

TEST(Elementwise, DTypeMismatchIsAnError) {
  EXPECT_THROW(add(zeros({2}), zeros({2}, DType::f64)), Error);
}

TEST(Elementwise, ComparisonsAndWhere) {
  Tensor a = from_vector<float>({1, 5, 3}, {3});
  Tensor b = from_vector<float>({2, 2, 3}, {3});
  EXPECT_EQ(gt(a, b).to_vector<uint8_t>(), (std::vector<uint8_t>{0, 1, 0}));
  EXPECT_EQ(le(a, 3.0).to_vector<uint8_t>(), (std::vector<uint8_t>{1, 0, 1}));
  EXPECT_EQ(where(eq(a, b), a, mul(b, 10.0)).to_vector<float>(), (std::vector<float>{20, 20, 3}));
}

TEST(Elementwise, VectorisedExpAndErfMatchLibm) {
  double worst_exp = 0, worst_erf = 0;
  for (float x = -80.f; x < 80.f; x += 0.01337f) {
    worst_exp = std::max(worst_exp, std::abs(double(cpu::vexp(x)) / std::exp(double(x)) - 1.0));
  }
  for (float x = -6.f; x < 6.f; x += 0.001f) {
    worst_erf = std::max(worst_erf, std::abs(double(cpu::verf(x)) - std::erf(double(x))));
  }
  EXPECT_LT(worst_exp, 5e-7);  // a few f32 ulp
  EXPECT_LT(worst_erf, 5e-7);  // ~5 ulp near erf = 1
  EXPECT_EQ(cpu::vexp(-INFINITY), 0.0f);
  EXPECT_TRUE(std::isinf(cpu::vexp(100.0f)));
  EXPECT_TRUE(std::isnan(cpu::vexp(NAN)));
}

// Every differentiable elementwise op against finite differences, on broadcast and on
// non-contiguous (permuted, strided-slice) inputs.
struct UnaryCase {
  const char* name;
  Tensor (*fn)(const Tensor&);
  double lo, hi;
};

Tensor gelu_erf_fn(const Tensor& x) {
  return gelu(x);
}
Tensor gelu_tanh_fn(const Tensor& x) {
  return gelu(x, GeluApprox::tanh);
}
Tensor pow3_fn(const Tensor& x) {
  return pow(x, 3.0);
}
Tensor clamp_fn(const Tensor& x) {
  return clamp(x, -0.5, 0.4);
}
Tensor scalar_mix_fn(const Tensor& x) {
  return rsub(div(add(mul(x, 3.0), 1.0), 2.0), 0.25);
}

void PrintTo(const UnaryCase& c, std::ostream* os) {
  *os << c.name;
}

class UnaryGrad : public ::testing::TestWithParam<UnaryCase> {};

TEST_P(UnaryGrad, MatchesFiniteDifferencesOnPermutedInput) {
  const UnaryCase& c = GetParam();
  Tensor x = random_leaf({3, 4}, 7, c.lo, c.hi);
  EXPECT_TRUE(check_gradients(
      [&](const std::vector<Tensor>& in) { return c.fn(transpose(in[0], 0, 1)); }, {x}));
}

TEST_P(UnaryGrad, MatchesFiniteDifferencesOnStridedSlice) {
  const UnaryCase& c = GetParam();
  Tensor x = random_leaf({4, 6}, 9, c.lo, c.hi);
  EXPECT_TRUE(check_gradients(
      [&](const std::vector<Tensor>& in) { return c.fn(slice(in[0], 1, 1, 6, 2)); }, {x}));
}

INSTANTIATE_TEST_SUITE_P(
    Ops, UnaryGrad,
    ::testing::Values(UnaryCase{"neg", neg, -1, 1}, UnaryCase{"exp", exp, -1, 1},
                      UnaryCase{"log", log, 0.5, 2}, UnaryCase{"sqrt", sqrt, 0.5, 2},
                      UnaryCase{"rsqrt", rsqrt, 0.5, 2}, UnaryCase{"tanh", tanh, -2, 2},
                      UnaryCase{"sigmoid", sigmoid, -3, 3}, UnaryCase{"relu", relu, -1, 1},
                      UnaryCase{"gelu", gelu_erf_fn, -3, 3},
                      UnaryCase{"gelu_tanh", gelu_tanh_fn, -3, 3}, UnaryCase{"silu", silu, -3, 3},
                      UnaryCase{"abs", abs, -1, 1}, UnaryCase{"softplus", softplus, -3, 3},
                      UnaryCase{"log_sigmoid", log_sigmoid, -3, 3},
                      UnaryCase{"log1p", log1p, -0.5, 2}, UnaryCase{"square", square, -1, 1},
                      UnaryCase{"reciprocal", reciprocal, 0.5, 2}, UnaryCase{"sin", sin, -3, 3},
                      UnaryCase{"cos", cos, -3, 3}, UnaryCase{"pow3", pow3_fn, -1, 1},
                      UnaryCase{"clamp", clamp_fn, -1, 1},
                      UnaryCase{"scalar_mix", scalar_mix_fn, -1, 1}),
    [](const ::testing::TestParamInfo<UnaryCase>& info) { return std::string(info.param.name); });

struct BinaryCase {
  const char* name;
  Tensor (*fn)(const Tensor&, const Tensor&);
  double lo, hi;
};
void PrintTo(const BinaryCase& c, std::ostream* os) {
  *os << c.name;
}
Tensor pow_tt(const Tensor& a, const Tensor& b) {
  return pow(a, b);
}

class BinaryGrad : public ::testing::TestWithParam<BinaryCase> {};

TEST_P(BinaryGrad, MatchesFiniteDifferencesWithBroadcast) {
  const BinaryCase& c = GetParam();
  Tensor a = random_leaf({2, 3, 4}, 11, c.lo, c.hi);
  Tensor b = random_leaf({3, 1}, 12, c.lo, c.hi);
  EXPECT_TRUE(
      check_gradients([&](const std::vector<Tensor>& in) { return c.fn(in[0], in[1]); }, {a, b}));
}

TEST_P(BinaryGrad, MatchesFiniteDifferencesWithPermutedOperands) {
  const BinaryCase& c = GetParam();
  Tensor a = random_leaf({4, 3}, 13, c.lo, c.hi);
  Tensor b = random_leaf({3, 4}, 14, c.lo, c.hi);
  EXPECT_TRUE(check_gradients(
      [&](const std::vector<Tensor>& in) { return c.fn(transpose(in[0], 0, 1), in[1]); }, {a, b}));
}

INSTANTIATE_TEST_SUITE_P(
    Ops, BinaryGrad,
    ::testing::Values(BinaryCase{"add", add, -1, 1}, BinaryCase{"sub", sub, -1, 1},
                      BinaryCase{"mul", mul, -1, 1}, BinaryCase{"div", div, 0.5, 2},
                      BinaryCase{"pow", pow_tt, 0.5, 2}, BinaryCase{"maximum", maximum, -1, 1},
                      BinaryCase{"minimum", minimum, -1, 1}),
    [](const ::testing::TestParamInfo<BinaryCase>& info) { return std::string(info.param.name); });

TEST(Elementwise, WhereGradientRoutesByCondition) {
  Tensor a = random_leaf({3, 4}, 21), b = random_leaf({4}, 22);
  Tensor cond = gt(random_leaf({3, 4}, 23), 0.0);
  EXPECT_TRUE(check_gradients(
      [&](const std::vector<Tensor>& in) { return where(cond, in[0], in[1]); }, {a, b}));
}

TEST(Elementwise, InPlaceOnRequiresGradIsRefused) {
  Tensor w = zeros({3}).requires_grad_();
  EXPECT_THROW(add_(w, ones({3})), Error);
  NoGradGuard no_grad;
  add_(w, ones({3}));
  EXPECT_EQ(w.to_vector<float>(), (std::vector<float>{1, 1, 1}));
}

TEST(Elementwise, HalfPrecisionRoundTrips) {
  Tensor x = from_vector<float>({1.0f, -2.5f, 65504.f, 1e-8f, 3.14159f}, {5});
  std::vector<float> h = to(to(x, DType::f16), DType::f32).to_vector<float>();
  EXPECT_EQ(h[0], 1.0f);
  EXPECT_EQ(h[1], -2.5f);
  EXPECT_EQ(h[2], 65504.f);
  EXPECT_NEAR(h[3], 1e-8f, 6e-8f);  // subnormal in f16
  EXPECT_NEAR(h[4], 3.14159f, 2e-3f);
  std::vector<float> b = to(to(x, DType::bf16), DType::f32).to_vector<float>();
  EXPECT_EQ(b[0], 1.0f);
  EXPECT_EQ(b[1], -2.5f);
  EXPECT_NEAR(b[4], 3.14159f, 2e-2f);
}

// full / fill_ in every dtype: contiguous rows go through memset (zero bits) or fill_n, views
// with a stride through the element loop; -0.0 is not zero bits and must keep its sign.
TEST(Elementwise, FillWritesEveryElementInEveryLayout) {
  for (DType dt : {DType::f32, DType::f64, DType::bf16, DType::f16, DType::i32, DType::i64}) {
    for (double v : {0.0, -0.0, 2.5}) {
      Tensor t = full({3, 70001}, v, dt);  // long enough to be split over the pool
      for (double x : t.to_vector<double>()) {
        ASSERT_EQ(x, std::trunc(v) == v || is_floating(dt) ? v : std::trunc(v)) << dtype_name(dt);
        ASSERT_EQ(std::signbit(x), std::signbit(v) && is_floating(dt))
            << dtype_name(dt) << " " << v;
      }
    }
    Tensor base = full({4, 6}, 1.0, dt);
    Tensor column = select(base, 1, 2);  // stride 6
    fill_(column, 0.0);
    const std::vector<double> got = base.to_vector<double>();
    for (int64_t i = 0; i < 24; ++i)
      ASSERT_EQ(got[size_t(i)], i % 6 == 2 ? 0.0 : 1.0) << dtype_name(dt);
  }
}

}  // namespace
}  // namespace hd
