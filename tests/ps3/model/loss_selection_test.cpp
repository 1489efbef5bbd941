// Selection BCE (§2.3): local rows only, mean over elements then over scales, PyTorch's log
// clamp, the zero-weighted term when no row is local, the row weight, and bad inputs.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "ops/factory.h"
#include "ps3/selection_loss.h"
#include "tests/testing/errors.h"
#include "tests/testing/gradcheck.h"

namespace hd::ps3 {
namespace {

// mean over rows in `rows` of -[g log p + (1-g) log(1-p)], logs clamped at -100.
double bce(const Tensor& p, const Tensor& g, const std::vector<int64_t>& rows) {
  std::vector<double> pv = p.to_vector<double>(), gv = g.to_vector<double>();
  const int64_t per = p.numel() / p.size(0);
  double s = 0;
  for (int64_t r : rows) {
    for (int64_t k = 0; k < per; ++k) {
      double pi = pv[size_t(r * per + k)], gi = gv[size_t(r * per + k)];
      s -= gi * std::max(std::log(pi), -100.0) + (1 - gi) * std::max(std::log(1 - pi), -100.0);
    }
  }
  return s / double(rows.size() * per);
}

TEST(SelectionLoss, LocalRowsOnlyMeanOverScales) {
  Tensor p0 = testing::random_leaf({3, 2, 2}, 1, 0.05, 0.95);
  Tensor p1 = testing::random_leaf({3, 4, 4}, 2, 0.05, 0.95);
  std::vector<double> g0v(12), g1v(48);
  for (size_t i = 0; i < g0v.size(); ++i) g0v[i] = (i % 3 == 0) ? 1 : 0;
  for (size_t i = 0; i < g1v.size(); ++i) g1v[i] = (i % 5 == 1) ? 1 : 0;
  Tensor g0 = from_vector<double>(g0v, {3, 2, 2}), g1 = from_vector<double>(g1v, {3, 4, 4});
  std::vector<bool> local{true, false, true};
  double want = (bce(p0, g0, {0, 2}) + bce(p1, g1, {0, 2})) / 2;
  EXPECT_NEAR(selection_bce({p0, p1}, {g0, g1}, local).item<double>(), want, 1e-12);
  EXPECT_NEAR(selection_bce({p0, p1}, {g0, g1}, local, 0.25).item<double>(), 0.25 * want, 1e-12);
  // Global row 1 gets no gradient; local rows do (finite differences, f64).
  auto f = [&](const std::vector<Tensor>& in) {
    return selection_bce({in[0], in[1]}, {g0, g1}, local);
  };
  EXPECT_TRUE(testing::check_gradients(f, {p0, p1}));
  for (double v : p0.grad().to_vector<double>()) EXPECT_TRUE(std::isfinite(v));
  std::vector<double> gp1 = p1.grad().to_vector<double>();
  for (int k = 16; k < 32; ++k) EXPECT_EQ(gp1[size_t(k)], 0.0) << "global row element " << k;
}

// Balanced: per row, half the mean over the box cells plus half the mean over the rest (the
// plain mean for a row without box cells), then the mean over rows and scales.
double balanced_bce(const Tensor& p, const Tensor& g, const std::vector<int64_t>& rows) {
  std::vector<double> pv = p.to_vector<double>(), gv = g.to_vector<double>();
  const int64_t per = p.numel() / p.size(0);
  double total = 0;
  for (int64_t r : rows) {
    double in = 0, out = 0, n_in = 0, n_out = 0;
    for (int64_t k = 0; k < per; ++k) {
      double pi = pv[size_t(r * per + k)], gi = gv[size_t(r * per + k)];
      if (gi > 0.5)
        in -= std::log(pi), ++n_in;
      else
        out -= std::log(1 - pi), ++n_out;
    }
    total += n_in > 0 ? 0.5 * in / n_in + 0.5 * out / n_out : out / n_out;
  }
  return total / double(rows.size());
}

TEST(SelectionLoss, BalancedWeighsBoxAndBackgroundHalfAndHalf) {
  Tensor p0 = testing::random_leaf({3, 2, 2}, 11, 0.05, 0.95);
  Tensor p1 = testing::random_leaf({3, 4, 4}, 12, 0.05, 0.95);
  // Row 0: one box cell of 4 (of 16); row 1: none (plain mean); row 2: global.
  std::vector<double> g0v(12, 0.0), g1v(48, 0.0);
  g0v[0] = 1, g1v[5] = 1, g1v[6] = 1;
  Tensor g0 = from_vector<double>(g0v, {3, 2, 2}), g1 = from_vector<double>(g1v, {3, 4, 4});
  std::vector<bool> local{true, true, false};
  const double want = (balanced_bce(p0, g0, {0, 1}) + balanced_bce(p1, g1, {0, 1})) / 2;
  EXPECT_NEAR(selection_bce({p0, p1}, {g0, g1}, local, 1.0, SelectionLoss::balanced).item<double>(),
              want, 1e-12);
  // The plain mean differs (the box cells count 1/4 and 1/8 there, 1/2 here).
  EXPECT_GT(std::abs(selection_bce({p0, p1}, {g0, g1}, local).item<double>() - want), 1e-3);
  // A flat map's balanced loss is lowest at p = 0.5 whatever the box size (the plain mean's
  // optimum is the box share): the reason it does not collapse (selection_loss.h).
  auto flat = [&](double v) {
    Tensor p = from_vector<double>(std::vector<double>(16, v), {1, 4, 4});
    Tensor g = from_vector<double>({1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, {1, 4, 4});
    return selection_bce({p}, {g}, {true}, 1.0, SelectionLoss::balanced).item<double>();
  };
  EXPECT_LT(flat(0.5), flat(0.4));
  EXPECT_LT(flat(0.5), flat(0.6));
  EXPECT_LT(flat(0.5), flat(1.0 / 16));
  auto f = [&](const std::vector<Tensor>& in) {
    return selection_bce({in[0], in[1]}, {g0, g1}, local, 1.0, SelectionLoss::balanced);
  };
  EXPECT_TRUE(testing::check_gradients(f, {p0, p1}));
}

// balanced_rank adds, per local row with box cells, -log(softmax mass of the box) over the
// logits z = log(p / (1 - p)); rows without box cells add nothing to that term.
double rank_term(const Tensor& p, const Tensor& g, const std::vector<int64_t>& rows) {
  std::vector<double> pv = p.to_vector<double>(), gv = g.to_vector<double>();
  const int64_t per = p.numel() / p.size(0);
  double total = 0;
  int64_t counted = 0;
  for (int64_t r : rows) {
    double all = 0, box = 0;
    for (int64_t k = 0; k < per; ++k) {
      double pi = pv[size_t(r * per + k)], e = pi / (1 - pi);  // exp(logit)
      all += e;
      if (gv[size_t(r * per + k)] > 0.5) box += e;
    }
    if (box > 0) total += std::log(all / box), ++counted;
  }
  return counted ? total / double(counted) : 0.0;
}

TEST(SelectionLoss, BalancedRankAddsTheSoftmaxMassOfTheBox) {
  Tensor p0 = testing::random_leaf({3, 2, 2}, 21, 0.05, 0.95);
  Tensor p1 = testing::random_leaf({3, 4, 4}, 22, 0.05, 0.95);
  std::vector<double> g0v(12, 0.0), g1v(48, 0.0);
  g0v[0] = 1, g1v[5] = 1, g1v[6] = 1;  // row 0 has box cells, row 1 none, row 2 global
  Tensor g0 = from_vector<double>(g0v, {3, 2, 2}), g1 = from_vector<double>(g1v, {3, 4, 4});
  std::vector<bool> local{true, true, false};
  const double want = (balanced_bce(p0, g0, {0, 1}) + rank_term(p0, g0, {0, 1}) +
                       balanced_bce(p1, g1, {0, 1}) + rank_term(p1, g1, {0, 1})) /
                      2;
  EXPECT_NEAR(
      selection_bce({p0, p1}, {g0, g1}, local, 1.0, SelectionLoss::balanced_rank).item<double>(),
      want, 1e-9);
  // The term depends on the ranking of box vs background, not on which background cell is which;
  // a background cell above the box costs more than the box above it.
  auto loss_with = [&](double box, double hard, double easy) {
    Tensor p = from_vector<double>({box, hard, easy, 0.5}, {1, 2, 2});
    Tensor g = from_vector<double>({1, 0, 0, 0}, {1, 2, 2});
    return selection_bce({p}, {g}, {true}, 1.0, SelectionLoss::balanced_rank).item<double>();
  };
  EXPECT_NEAR(loss_with(0.6, 0.9, 0.1), loss_with(0.6, 0.1, 0.9), 1e-12);
  EXPECT_LT(loss_with(0.9, 0.2, 0.2), loss_with(0.2, 0.9, 0.2));
  auto f = [&](const std::vector<Tensor>& in) {
    return selection_bce({in[0], in[1]}, {g0, g1}, local, 1.0, SelectionLoss::balanced_rank);
  };
  EXPECT_TRUE(testing::check_gradients(f, {p0, p1}));
}

TEST(SelectionLoss, ClampsLogsLikePyTorch) {
  // p = 0 with g = 1 and p = 1 with g = 0 each cost 100 (log clamped at -100), not inf.
  Tensor p = from_vector<double>({0.0, 1.0, 0.5, 0.5}, {1, 2, 2});
  Tensor g = from_vector<double>({1.0, 0.0, 1.0, 0.0}, {1, 2, 2});
  EXPECT_NEAR(selection_bce({p}, {g}, {true}).item<double>(), (200 + 2 * std::log(2.0)) / 4, 1e-12);
}

TEST(SelectionLoss, NoLocalRowsGivesZeroThatStillReachesTheProbabilities) {
  Tensor p = testing::random_leaf({2, 3, 3}, 3, 0.1, 0.9);
  Tensor g = zeros({2, 3, 3}, DType::f64);
  Tensor loss = selection_bce({p}, {g}, {false, false});
  EXPECT_EQ(loss.item<double>(), 0.0);
  loss.backward();
  ASSERT_TRUE(p.grad().defined());  // the parameters behind p take part in the backward
  for (double v : p.grad().to_vector<double>()) EXPECT_EQ(v, 0.0);
}

TEST(SelectionLoss, RejectsMismatchedMaps) {
  Tensor p = zeros({2, 3, 3}, DType::f64);
  testing::expect_error(
      [&] {
        selection_bce({p}, {zeros({2, 4, 4}, DType::f64)}, {true, true});
      },
      "scale 0");
  testing::expect_error([&] { selection_bce({p}, {}, {true, true}); }, "ground-truth maps");
  testing::expect_error([&] { selection_bce({p}, {p}, {true}); }, "[B = 1, H, W]");
}

}  // namespace
}  // namespace hd::ps3
