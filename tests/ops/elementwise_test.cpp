#include "ops/elementwise.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <string>
#include <vector>

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

// The strided loop's layouts (rows of 64 of 256, rows of 16 of a head view, an NCHW tensor read
// as NHWC with rows longer than the kernel's 256-value block, a per-channel scale and a
// per-pixel value broadcast over short rows, every operand and the output strided) give the
// bits the same maps give on contiguous copies, in f32 and bf16: the map is per element, so
// how the loop walks memory must not change a value.
TEST(Elementwise, StridedAndShortRowsGiveTheBitsOfContiguousCopies) {
  for (DType dt : {DType::f32, DType::bf16}) {
    auto input = [&](const Shape& s, uint64_t seed) {
      return to(random_leaf(s, seed, -2.0, 2.0).detach(), dt);
    };
    struct Case {
      std::string name;
      Tensor a, b;
    };
    std::vector<Case> cases;
    cases.push_back(
        {"rows of 64 of 256", narrow(input({2, 37, 256}, 1), 2, 64, 64), input({2, 37, 64}, 2)});
    cases.push_back({"rows of 16 of a head view", permute(input({2, 29, 4, 16}, 3), {0, 2, 1, 3}),
                     input({2, 4, 29, 16}, 4)});
    cases.push_back({"NCHW read as NHWC", input({2, 9, 7, 300}, 5),
                     permute(input({2, 300, 9, 7}, 6), {0, 2, 3, 1})});
    cases.push_back({"per-channel scale", input({2, 9, 7, 32}, 7), input({32}, 8)});
    cases.push_back({"per-pixel value", expand(input({2, 9, 7, 1}, 9), {2, 9, 7, 32}),
                     input({2, 9, 7, 32}, 10)});
    cases.push_back({"both transposed", transpose(input({300, 40}, 11), 0, 1),
                     transpose(input({300, 40}, 12), 0, 1)});
    cases.push_back({"large and strided", narrow(input({3, 40000}, 13), 1, 5, 39990),
                     transpose(input({39990, 3}, 14), 0, 1)});
    for (const Case& c : cases) {
      Tensor ac = contiguous(c.a), bc = contiguous(c.b);
      auto expect_same = [&](const char* op, const Tensor& got, const Tensor& want) {
        ASSERT_EQ(got.shape(), want.shape());
        const std::vector<double> g = got.to_vector<double>(), w = want.to_vector<double>();
        for (size_t i = 0; i < g.size(); ++i) {
          ASSERT_EQ(std::bit_cast<uint64_t>(g[i]), std::bit_cast<uint64_t>(w[i]))
              << op << ", " << c.name << ", " << dtype_name(dt) << ", element " << i;
        }
      };
      expect_same("add", add(c.a, c.b), add(ac, bc));
      expect_same("mul", mul(c.b, c.a), mul(bc, ac));
      expect_same("div", div(c.a, c.b), div(ac, bc));
      expect_same("gelu", gelu(c.a), gelu(ac));
      expect_same("exp", exp(c.b), exp(bc));
      // A strided output: add_ into a transposed copy of a.
      Tensor out = transpose(contiguous(transpose(expand(ac, add(ac, bc).shape()), 0, -1)), 0, -1);
      Tensor out_c = contiguous(out);
      add_(out, c.b);
      add_(out_c, bc);
      expect_same("add_ into a strided output", out, out_c);
    }
  }
}

}  // namespace
}  // namespace hd
