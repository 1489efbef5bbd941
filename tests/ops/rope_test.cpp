#include "ops/rope.h"

#include <gtest/gtest.h>

#include <cmath>

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

TEST(Rope, TablesFollowHfConvention) {
  RopeTables t = rope_tables(5, 8, 100.0, DType::f64);
  ASSERT_EQ(t.cos.shape(), (Shape{5, 8}));
  std::vector<double> c = t.cos.to_vector<double>(), s = t.sin.to_vector<double>();
  for (int64_t p = 0; p < 5; ++p) {
    for (int64_t i = 0; i < 8; ++i) {
      double angle = double(p) * std::pow(100.0, -2.0 * double(i % 4) / 8.0);
      EXPECT_NEAR(c[size_t(p * 8 + i)], std::cos(angle), 1e-15) << p << "," << i;
      EXPECT_NEAR(s[size_t(p * 8 + i)], std::sin(angle), 1e-15) << p << "," << i;
    }
  }
  EXPECT_EQ(rope_tables(3, 4).cos.dtype(), DType::f32);
}

// x * cos + rotate_half(x) * sin, element by element, with rotate_half(x) = [-x2, x1].
TEST(Rope, ValuesMatchFormula) {
  Tensor x = random_leaf({2, 3, 4, 6}, 1).detach();
  RopeTables t = rope_tables(4, 6, 10000.0, DType::f64);
  Tensor y = apply_rope(x, t);
  std::vector<double> xv = x.to_vector<double>(), yv = y.to_vector<double>();
  std::vector<double> c = t.cos.to_vector<double>(), s = t.sin.to_vector<double>();
  for (size_t row = 0; row < xv.size() / 6; ++row) {
    size_t p = row % 4;
    for (size_t i = 0; i < 6; ++i) {
      double rot = i < 3 ? -xv[row * 6 + i + 3] : xv[row * 6 + i - 3];
      double want = xv[row * 6 + i] * c[p * 6 + i] + rot * s[p * 6 + i];
      EXPECT_NEAR(yv[row * 6 + i], want, 1e-14);
    }
  }
}

// A rotation: norms of each (i, i + Dh/2) pair are kept, position 0 is the identity.
TEST(Rope, PreservesNormAndPositionZero) {
  Tensor x = random_leaf({1, 7, 8}, 2).detach();
  Tensor y = apply_rope(x, rope_tables(7, 8, 10000.0, DType::f64));
  EXPECT_LT(max_abs_diff(sum(square(y), {-1}), sum(square(x), {-1})), 1e-12);
  EXPECT_LT(max_abs_diff(select(y, 1, 0), select(x, 1, 0)), 1e-15);
  EXPECT_GT(max_abs_diff(select(y, 1, 3), select(x, 1, 3)), 1e-3);
}

TEST(Rope, LongerTablesServeShorterSequences) {
  Tensor x = random_leaf({2, 5, 4}, 3).detach();
  Tensor a = apply_rope(x, rope_tables(5, 4, 10000.0, DType::f64));
  Tensor b = apply_rope(x, rope_tables(50, 4, 10000.0, DType::f64));
  EXPECT_EQ(max_abs_diff(a, b), 0.0);
}

TEST(Rope, Gradcheck) {
  RopeTables t = rope_tables(5, 6, 10000.0, DType::f64);
  EXPECT_TRUE(check_gradients([&](const std::vector<Tensor>& x) { return apply_rope(x[0], t); },
                              {random_leaf({2, 3, 5, 6}, 4)}));
  // Non-contiguous input: heads-major view of a [B, N, H, Dh] tensor.
  EXPECT_TRUE(check_gradients(
      [&](const std::vector<Tensor>& x) { return apply_rope(transpose(x[0], 1, 2), t); },
      {random_leaf({2, 5, 3, 6}, 5)}));
}

TEST(Rope, ErrorsNameShapes) {
  RopeTables t = rope_tables(4, 6);
  auto expect_error = [](auto&& fn, const std::string& needle) {
    try {
      fn();
      ADD_FAILURE() << "expected an error containing " << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_error([&] { apply_rope(zeros({2, 5, 6}), t); }, "[2, 5, 6]");  // too many positions
  expect_error([&] { apply_rope(zeros({2, 4, 8}), t); }, "[2, 4, 8]");  // head dim differs
  expect_error([&] { apply_rope(zeros({2, 4, 6}, DType::f64), t); }, "apply_rope");
  expect_error([&] { rope_tables(4, 5); }, "even");
}

}  // namespace
}  // namespace hd
