#include "ops/similarity.h"

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
