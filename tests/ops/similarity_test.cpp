#include "ops/similarity.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

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

TEST(L2Normalize, Values) {
  Tensor x = from_vector<float>({3, 4, 0, 0, 1e-14f, 0}, {3, 2});
  std::vector<float> y = l2_normalize(x).to_vector<float>();
  EXPECT_FLOAT_EQ(y[0], 0.6f);
  EXPECT_FLOAT_EQ(y[1], 0.8f);
  EXPECT_EQ(y[2], 0.0f);            // zero vector stays zero (denominator clamped to eps)
  EXPECT_NEAR(y[4], 1e-2f, 1e-7f);  // ||x|| < eps: divided by eps = 1e-12
  std::vector<float> y0 = l2_normalize(x, 0).to_vector<float>();
  EXPECT_NEAR(y0[0], 1.0f, 1e-6f);
  EXPECT_NEAR(y0[1], 1.0f, 1e-6f);
}

TEST(L2Normalize, ZeroVectorHasFiniteGradient) {
  Tensor x = zeros({2, 3}, DType::f64).requires_grad_();
  sum(l2_normalize(x)).backward();
  for (double g : x.grad().to_vector<double>()) EXPECT_TRUE(std::isfinite(g));
}

TEST(L2Normalize, Gradcheck) {
  Tensor x = random_leaf({3, 5}, 1);
  EXPECT_TRUE(
      check_gradients([](const std::vector<Tensor>& in) { return l2_normalize(in[0]); }, {x}));
  EXPECT_TRUE(
      check_gradients([](const std::vector<Tensor>& in) { return l2_normalize(in[0], 0); }, {x}));
  Tensor y = random_leaf({4, 3, 2}, 2);
  EXPECT_TRUE(check_gradients(
      [](const std::vector<Tensor>& in) {
        return l2_normalize(permute(in[0], {2, 0, 1}), 1);
      },
      {y}));
}

TEST(CosineSimilarity, ValuesAndBroadcast) {
  Tensor a = random_leaf({3, 1, 4}, 3).detach(), b = random_leaf({5, 4}, 4).detach();
  Tensor c = cosine_similarity(a, b);
  ASSERT_EQ(c.shape(), (Shape{3, 5}));
  std::vector<double> va = a.to_vector<double>(), vb = b.to_vector<double>();
  std::vector<double> vc = c.to_vector<double>();
  for (int i = 0; i < 3; ++i) {
    for (int j = 0; j < 5; ++j) {
      double dot = 0, na = 0, nb = 0;
      for (int k = 0; k < 4; ++k) {
        dot += va[i * 4 + k] * vb[j * 4 + k];
        na += va[i * 4 + k] * va[i * 4 + k];
        nb += vb[j * 4 + k] * vb[j * 4 + k];
      }
      EXPECT_NEAR(vc[i * 5 + j], dot / std::sqrt(na * nb), 1e-12);
    }
  }
  // dim 0 on [4, 2] columns; zero vector gives 0, not NaN.
  Tensor z = cosine_similarity(zeros({4, 2}), ones({4, 2}), 0);
  EXPECT_EQ(z.to_vector<float>(), (std::vector<float>{0, 0}));
}

TEST(CosineSimilarity, Gradcheck) {
  Tensor a = random_leaf({3, 4}, 5), b = random_leaf({4}, 6);
  EXPECT_TRUE(check_gradients(
      [](const std::vector<Tensor>& in) { return cosine_similarity(in[0], in[1]); }, {a, b}));
  Tensor c = random_leaf({4, 3}, 7), d = random_leaf({4, 3}, 8);
  EXPECT_TRUE(check_gradients(
      [](const std::vector<Tensor>& in) {
        return cosine_similarity(transpose(in[0], 0, 1), transpose(in[1], 0, 1), 1);
      },
      {c, d}));
}

// [Note: fused cosine similarity]: the kernel against the composite it replaced, written out
// here (PyTorch 1.13's formula), values and gradients, in f64 (1e-12) and f32, on the PS3 shape
// (a grid against one prompt per image, both broadcast ways), with long rows (C = 70: lane
// blocks and a tail), an all-zero row (clamped: zero cosine, finite gradients) and a gradient
// check with both operands broadcast; bf16 within bf16 rounding of the f32 kernel.
Tensor cosine_composite(const Tensor& a, const Tensor& b, double eps) {
  Shape shape = broadcast_shapes(a.shape(), b.shape(), "test");
  Tensor ae = expand(a, shape), be = expand(b, shape);
  Tensor w12 = sum(mul(ae, be), {-1});
  Tensor w1 = sum(square(ae), {-1}), w2 = sum(square(be), {-1});
  return div(w12, sqrt(clamp_min(mul(w1, w2), eps * eps)));
}

TEST(CosineSimilarity, FusedKernelEqualsTheComposite) {
  struct Case {
    Shape a, b;
  };
  for (const Case& c : {Case{{2, 5, 4, 32}, {2, 1, 1, 32}}, Case{{2, 1, 1, 70}, {2, 3, 4, 70}},
                        Case{{7, 16}, {7, 16}}}) {
    for (DType dt : {DType::f64, DType::f32}) {
      Tensor a = to(random_leaf(c.a, 11).detach(), dt), b = to(random_leaf(c.b, 12).detach(), dt);
      // An all-zero row of a (clamped norm).
      Tensor row = select(reshape(a, {-1, a.size(-1)}), 0, 0);
      zero_(row);
      Tensor g = to(random_leaf(broadcast_shapes(c.a, c.b), 13).detach(), dt);
      g = squeeze(narrow(g, -1, 0, 1), -1);  // the output's shape
      auto run = [&](bool fused) {
        Tensor la = a.detach().requires_grad_(true), lb = b.detach().requires_grad_(true);
        Tensor out = fused ? cosine_similarity(la, lb) : cosine_composite(la, lb, 1e-8);
        out.backward(g);
        return std::vector<Tensor>{out.detach(), la.grad(), lb.grad()};
      };
      const std::vector<Tensor> f = run(true), r = run(false);
      const double tol = dt == DType::f64 ? 1e-12 : 2e-5;
      for (size_t i = 0; i < f.size(); ++i) {
        ASSERT_EQ(f[i].shape(), r[i].shape()) << i;
        const std::vector<double> x = f[i].to_vector<double>(), y = r[i].to_vector<double>();
        for (size_t k = 0; k < x.size(); ++k) {
          ASSERT_TRUE(std::isfinite(x[k])) << "tensor " << i << " element " << k;
          ASSERT_NEAR(x[k], y[k], tol * (1 + std::fabs(y[k])))
              << dtype_name(dt) << " tensor " << i << " element " << k << " of a " << c.a.size();
        }
      }
      EXPECT_EQ(f[0].to_vector<double>()[0], 0.0) << "a zero row has cosine 0";
    }
  }
  // Both operands broadcast, gradients against finite differences (f64).
  Tensor x = random_leaf({3, 1, 20}, 14), y = random_leaf({1, 4, 20}, 15);
  EXPECT_TRUE(check_gradients(
      [](const std::vector<Tensor>& in) { return cosine_similarity(in[0], in[1]); }, {x, y}));
  // bf16: the f32 kernel's result rounded, within bf16 resolution.
  Tensor a32 = random_leaf({2, 6, 6, 32}, 16).detach(),
         b32 = random_leaf({2, 1, 1, 32}, 17).detach();
  const std::vector<double> want = cosine_similarity(a32, b32).to_vector<double>();
  const std::vector<double> got =
      cosine_similarity(to(a32, DType::bf16), to(b32, DType::bf16)).to_vector<double>();
  for (size_t k = 0; k < want.size(); ++k) ASSERT_NEAR(got[k], want[k], 2e-2) << k;
}

using testing::expect_error;

TEST(Similarity, Errors) {
  expect_error(
      [] {
        cosine_similarity(zeros({2, 3}), zeros({2, 4}));
      },
      "cosine_similarity: shapes [2, 3] and [2, 4] cannot be broadcast");
  expect_error(
      [] {
        cosine_similarity(zeros({2, 3}), zeros({2, 3}), 2);
      },
      "cosine_similarity: dim 2 out of range");
  expect_error([] { l2_normalize(zeros({2, 3}), -3); }, "l2_normalize: dim -3 out of range");
  expect_error([] { l2_normalize(zeros({2}, DType::i64)); }, "l2_normalize: expects a floating");
}

}  // namespace
}  // namespace hd
