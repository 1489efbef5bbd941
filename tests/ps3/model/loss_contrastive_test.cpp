// The PS3 sigmoid contrast on one process: values against the closed form written out with
// loops in double (square and with extra negatives, M > B), gradients against finite
// differences, and bad inputs. The multi-rank exchange is in contrastive_mpi_test.cpp.
#include <gtest/gtest.h>

#include <cmath>

#include "ops/factory.h"
#include "ops/loss.h"
#include "ops/shape.h"
#include "ops/similarity.h"
#include "ps3/contrastive_loss.h"
#include "tests/testing/errors.h"
#include "tests/testing/gradcheck.h"

namespace hd::ps3 {
namespace {

using testing::random_leaf;

// -sum_ij log sigmoid(y_ij (e^s <x_i, t_j> + b)) / B with y_ij = +1 only for i == j < B.
double closed_form(const Tensor& x, const Tensor& t, double s, double b) {
  std::vector<double> xv = x.to_vector<double>(), tv = t.to_vector<double>();
  const int64_t B = x.size(0), M = t.size(0), D = x.size(1);
  double total = 0;
  for (int64_t i = 0; i < B; ++i) {
    for (int64_t j = 0; j < M; ++j) {
      double dot = 0;
      for (int64_t k = 0; k < D; ++k) dot += xv[size_t(i * D + k)] * tv[size_t(j * D + k)];
      double z = std::exp(s) * dot + b, y = i == j ? 1.0 : -1.0;
      total += std::log1p(std::exp(-y * z));  // -log sigmoid(y z)
    }
  }
  return total / double(B);
}

TEST(ContrastiveLoss, SingleProcessMatchesClosedForm) {
  Tensor x = l2_normalize(random_leaf({5, 7}, 1)).detach();
  Tensor t = l2_normalize(random_leaf({5, 7}, 2)).detach();
  Tensor s = full({}, std::log(10.0), DType::f64), b = full({}, -10.0, DType::f64);
  double got = distributed_sigmoid_loss(x, t, s, b, nullptr).item<double>();
  EXPECT_NEAR(got, closed_form(x, t, std::log(10.0), -10.0), 1e-12);
  // At init (scale 10, bias -10) every negative costs about log(1 + e^(10 <x,t> - 10)) and the
  // positives dominate: the loss is near log(1 + e^10) ~ 10 per row, far above 0.
  EXPECT_GT(got, 5.0);
}

TEST(ContrastiveLoss, ExtraNegativesMatchClosedForm) {
  // M > B: texts 5..8 are another rank's, negatives for every image (what the exchange feeds in).
  Tensor x = l2_normalize(random_leaf({5, 7}, 3)).detach();
  Tensor t = l2_normalize(random_leaf({9, 7}, 4)).detach();
  Tensor s = full({}, 1.3, DType::f64), b = full({}, -2.0, DType::f64);
  EXPECT_NEAR(siglip_loss(x, t, s, b, true).item<double>(), closed_form(x, t, 1.3, -2.0), 1e-12);
}

TEST(ContrastiveLoss, GradientsMatchFiniteDifferences) {
  Tensor x = random_leaf({3, 4}, 5), t = random_leaf({3, 4}, 6);
  Tensor s = random_leaf({}, 7, 0.5, 1.5), b = random_leaf({}, 8, -2, 0);
  auto f = [](const std::vector<Tensor>& in) {
    return distributed_sigmoid_loss(l2_normalize(in[0]), l2_normalize(in[1]), in[2], in[3],
                                    nullptr);
  };
  EXPECT_TRUE(testing::check_gradients(f, {x, t, s, b}));
}

TEST(ContrastiveLoss, RejectsUnpairedRows) {
  Tensor s = full({}, 1.0, DType::f64), b = full({}, 0.0, DType::f64);
  testing::expect_error(
      [&] {
        distributed_sigmoid_loss(zeros({3, 4}, DType::f64), zeros({2, 4}, DType::f64), s, b,
                                 nullptr);
      },
      "paired [B, D] rows");
  testing::expect_error(
      [&] {
        distributed_sigmoid_loss(zeros({0, 4}, DType::f64), zeros({0, 4}, DType::f64), s, b,
                                 nullptr);
      },
      "empty batch");
}

}  // namespace
}  // namespace hd::ps3
