#include "ops/loss.h"

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

using testing::expect_error;

// ---------------------------------------------------------------- cross-entropy

TEST(CrossEntropy, ValuesWithIgnoreIndex) {
  Tensor logits = random_leaf({4, 5}, 1, -3, 3).detach();
  Tensor target = from_vector<int64_t>({2, -100, 0, 4}, {4});
  std::vector<double> l = logits.to_vector<double>();
  std::vector<double> per(4, 0.0);
  for (int r : {0, 2, 3}) {
    int t = r == 0 ? 2 : (r == 2 ? 0 : 4);
    double s = 0;
    for (int c = 0; c < 5; ++c) s += std::exp(l[r * 5 + c]);
    per[size_t(r)] = std::log(s) - l[r * 5 + t];
  }
  std::vector<double> none =
      cross_entropy(logits, target, -100, Reduction::none).to_vector<double>();
  for (int r = 0; r < 4; ++r) EXPECT_NEAR(none[size_t(r)], per[size_t(r)], 1e-12) << r;
  double total = per[0] + per[2] + per[3];
  EXPECT_NEAR(cross_entropy(logits, target, -100, Reduction::sum).item<double>(), total, 1e-12);
  // mean divides by the 3 non-ignored rows, not 4.
  EXPECT_NEAR(cross_entropy(logits, target).item<double>(), total / 3, 1e-12);
  // A custom ignore_index inside the class range.
  Tensor t2 = from_vector<int64_t>({2, 1, 0, 4}, {4});
  EXPECT_NEAR(cross_entropy(logits, t2, 1).item<double>(), total / 3, 1e-12);
}

TEST(CrossEntropy, AllIgnoredMeanIsNanWithZeroGradient) {
  Tensor logits = random_leaf({2, 3}, 2);
  Tensor target = from_vector<int64_t>({-100, -100}, {2});
  Tensor loss = cross_entropy(logits, target);
  EXPECT_TRUE(std::isnan(loss.item<double>()));  // PyTorch: 0 / 0
  loss.backward();
  for (double g : logits.grad().to_vector<double>()) EXPECT_EQ(g, 0.0);
}

TEST(CrossEntropy, UnbatchedLogits) {
  Tensor logits = from_vector<float>({1, 2, 3}, {3});
  Tensor target = from_vector<int64_t>({2}, {});
  double want = std::log(std::exp(1.0) + std::exp(2.0) + std::exp(3.0)) - 3.0;
  EXPECT_NEAR(cross_entropy(logits, target).item<float>(), want, 1e-6);
  EXPECT_EQ(cross_entropy(logits, target, -100, Reduction::none).dim(), 0);
}

TEST(CrossEntropy, Gradcheck) {
  Tensor logits = random_leaf({5, 4}, 3, -2, 2);
  Tensor target = from_vector<int64_t>({3, -100, 0, 1, 3}, {5});
  for (Reduction r : {Reduction::mean, Reduction::sum, Reduction::none}) {
    EXPECT_TRUE(check_gradients(
        [&](const std::vector<Tensor>& in) { return cross_entropy(in[0], target, -100, r); },
        {logits}));
  }
  // Logits read through a transpose ([C, N] storage).
  Tensor lt = random_leaf({4, 5}, 4, -2, 2);
  EXPECT_TRUE(check_gradients(
      [&](const std::vector<Tensor>& in) { return cross_entropy(transpose(in[0], 0, 1), target); },
      {lt}));
}

TEST(CrossEntropy, Errors) {
  expect_error(
      [] {
        cross_entropy(zeros({2, 3}), zeros({2}));
      },
      "cross_entropy: target must hold i64 class indices, got f32[2]");
  expect_error(
      [] {
        cross_entropy(zeros({2, 3}), from_vector<int64_t>({0, 3}, {2}));
      },
      "cross_entropy: target 3 is out of range for 3 classes");
  expect_error(
      [] {
        cross_entropy(zeros({2, 3}), from_vector<int64_t>({0, 1, 2}, {3}));
      },
      "cross_entropy: target [3] does not match logits [2, 3]");
}

// ---------------------------------------------------------------- binary cross-entropy

TEST(BinaryCrossEntropy, ClampsLogsAtMinus100) {
  Tensor p = from_vector<float>({0.0f, 1.0f, 0.5f, 1e-30f}, {4});
  Tensor y = from_vector<float>({1.0f, 0.0f, 1.0f, 1.0f}, {4});
  std::vector<float> l = binary_cross_entropy(p, y, Reduction::none).to_vector<float>();
  EXPECT_EQ(l[0], 100.0f);
  EXPECT_EQ(l[1], 100.0f);
  EXPECT_NEAR(l[2], std::log(2.0f), 1e-6f);
  EXPECT_NEAR(l[3], 30 * std::log(10.0f), 1e-3f);  // log(1e-30) = -69, above the clamp
  EXPECT_NEAR(binary_cross_entropy(p, y).item<float>(), (200 + std::log(2.0) + 69.0776) / 4, 1e-3);
}

TEST(BinaryCrossEntropy, GradientUsesPyTorchEpsilon) {
  Tensor p = from_vector<double>({0.0, 1.0, 0.25}, {3}).requires_grad_();
  Tensor y = from_vector<double>({1.0, 0.0, 1.0}, {3});
  binary_cross_entropy(p, y, Reduction::sum).backward();
  std::vector<double> g = p.grad().to_vector<double>();
  EXPECT_DOUBLE_EQ(g[0], -1e12);  // (0 - 1) / max(0, 1e-12)
  EXPECT_DOUBLE_EQ(g[1], 1e12);
  EXPECT_DOUBLE_EQ(g[2], (0.25 - 1.0) / (0.25 * 0.75));
}

TEST(BinaryCrossEntropy, Gradcheck) {
  Tensor p = random_leaf({3, 4}, 5, 0.05, 0.95), y = random_leaf({3, 4}, 6, 0.0, 1.0);
  EXPECT_TRUE(check_gradients(
      [](const std::vector<Tensor>& in) { return binary_cross_entropy(in[0], in[1]); }, {p, y}));
  Tensor q = random_leaf({4, 3}, 7, 0.05, 0.95);
  Tensor t = gt(random_leaf({3, 4}, 8), 0.0);
  Tensor tf = to(t, DType::f64);
  EXPECT_TRUE(check_gradients(
      [&](const std::vector<Tensor>& in) {
        return binary_cross_entropy(transpose(in[0], 0, 1), tf, Reduction::none);
      },
      {q}));
}

TEST(BinaryCrossEntropy, Errors) {
  expect_error([] { binary_cross_entropy(full({2}, 1.5), zeros({2})); },
               "binary_cross_entropy: all elements of input should be between 0 and 1");
  expect_error([] { binary_cross_entropy(zeros({2}), zeros({3})); },
               "binary_cross_entropy: input [2] and target [3] must have the same shape");
  expect_error([] { binary_cross_entropy(zeros({2}), zeros({2}, DType::f64)); },
               "binary_cross_entropy: dtype mismatch");
}

TEST(BinaryCrossEntropyWithLogits, StableAndMatchesProbabilityForm) {
  Tensor x = from_vector<double>({-3, -0.5, 0, 2, 4}, {5});
  Tensor y = from_vector<double>({0, 1, 0.3, 1, 0}, {5});
  EXPECT_LT(max_abs_diff(binary_cross_entropy_with_logits(x, y, Reduction::none),
                         binary_cross_entropy(sigmoid(x), y, Reduction::none)),
            1e-12);
  Tensor big = from_vector<float>({200.f, -200.f}, {2});
  std::vector<float> l =
      binary_cross_entropy_with_logits(big, from_vector<float>({0, 1}, {2}), Reduction::none)
          .to_vector<float>();
  EXPECT_FLOAT_EQ(l[0], 200.f);
  EXPECT_FLOAT_EQ(l[1], 200.f);
  // At x = 0 the gradient is sigmoid(0) - y.
  Tensor z = zeros({1}, DType::f64).requires_grad_();
  binary_cross_entropy_with_logits(z, full({1}, 0.2, DType::f64)).backward();
  EXPECT_DOUBLE_EQ(z.grad().item<double>(), 0.3);
}

TEST(BinaryCrossEntropyWithLogits, Gradcheck) {
  Tensor x = random_leaf({3, 4}, 9, -4, 4), y = random_leaf({3, 4}, 10, 0, 1);
  EXPECT_TRUE(check_gradients(
      [](const std::vector<Tensor>& in) {
        return binary_cross_entropy_with_logits(in[0], in[1], Reduction::sum);
      },
      {x, y}));
}

// ---------------------------------------------------------------- DICE

TEST(DiceLoss, ValuesMatchVilaFormula) {
  Tensor p = random_leaf({2, 3, 4}, 11, 0, 1).detach();
  Tensor g = to(gt(random_leaf({2, 3, 4}, 12), 0.0), DType::f64);
  std::vector<double> vp = p.to_vector<double>(), vg = g.to_vector<double>();
  double want = 0;
  for (int b = 0; b < 2; ++b) {
    double pg = 0, sp = 0, sg = 0;
    for (int i = 0; i < 12; ++i) {
      pg += vp[b * 12 + i] / 100 * vg[b * 12 + i];
      sp += vp[b * 12 + i] / 100;
      sg += vg[b * 12 + i] / 100;
    }
    want += 1 - (2 * pg + 1e-6) / (sp + sg + 1e-6);
  }
  EXPECT_NEAR(dice_loss(p, g).item<double>(), want / 2, 1e-12);
}

TEST(DiceLoss, Gradcheck) {
  Tensor p = random_leaf({2, 5, 3}, 13, 0, 1);
  Tensor g = to(gt(random_leaf({2, 3, 5}, 14), 0.0), DType::f64);
  EXPECT_TRUE(check_gradients(
      [&](const std::vector<Tensor>& in) { return dice_loss(transpose(in[0], 1, 2), g); }, {p}));
}

// ---------------------------------------------------------------- SigLIP

double siglip_reference(const Tensor& x, const Tensor& t, double scale, double bias, bool diag) {
  std::vector<double> vx = x.to_vector<double>(), vt = t.to_vector<double>();
  int64_t b = x.size(0), m = t.size(0), d = x.size(1);
  double loss = 0;
  for (int64_t i = 0; i < b; ++i) {
    for (int64_t j = 0; j < m; ++j) {
      double dot = 0;
      for (int64_t k = 0; k < d; ++k) dot += vx[size_t(i * d + k)] * vt[size_t(j * d + k)];
      double z = std::exp(scale) * dot + bias, y = (diag && i == j) ? 1.0 : -1.0;
      loss += std::log1p(std::exp(-y * z));  // -log_sigmoid(y z)
    }
  }
  return loss / double(b);
}

TEST(SiglipLoss, ValuesIncludingRemoteNegatives) {
  Tensor x = random_leaf({3, 4}, 15).detach(), t = random_leaf({5, 4}, 16).detach();
  Tensor s = scalar_tensor(std::log(10.0), DType::f64), b = scalar_tensor(-2.0, DType::f64);
  EXPECT_NEAR(siglip_loss(x, t, s, b).item<double>(),
              siglip_reference(x, t, std::log(10.0), -2.0, true), 1e-12);
  EXPECT_NEAR(siglip_loss(x, t, s, b, false).item<double>(),
              siglip_reference(x, t, std::log(10.0), -2.0, false), 1e-12);
}

TEST(SiglipLoss, GradcheckAllInputs) {
  Tensor x = random_leaf({3, 4}, 17), t = random_leaf({4, 4}, 18);
  Tensor s = random_leaf({}, 19, 0.5, 1.5), b = random_leaf({1}, 20, -2, 0);
  EXPECT_TRUE(check_gradients(
      [](const std::vector<Tensor>& in) { return siglip_loss(in[0], in[1], in[2], in[3]); },
      {x, t, s, b}));
}

TEST(SiglipLoss, Errors) {
  Tensor s = scalar_tensor(1.0), b = scalar_tensor(0.0);
  expect_error(
      [&] {
        siglip_loss(zeros({2, 3}), zeros({2, 4}), s, b);
      },
      "siglip_loss: expects image_emb [B, D] and text_emb [M, D], got [2, 3] and [2, 4]");
  expect_error(
      [&] {
        siglip_loss(zeros({2, 3}), zeros({2, 3}), zeros({2}), b);
      },
      "siglip_loss: logit_scale and logit_bias must be scalars");
}

}  // namespace
}  // namespace hd
