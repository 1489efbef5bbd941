// Resampling: per-axis weight matrices (known rows), known values (replication, 2x2 mean and
// max), gradients of every mode up and down with non-integer ratios, and errors.
#include "ops/resample.h"

#include <gtest/gtest.h>

#include <cmath>

#include "ops/elementwise.h"
#include "ops/factory.h"
#include "ops/linalg.h"
#include "ops/reduce.h"
#include "ops/shape.h"
#include "tests/testing/gradcheck.h"

namespace hd {
namespace {

using testing::check_gradients;
using testing::max_abs_diff;
using testing::random_leaf;

std::vector<double> row(const Tensor& m, int64_t i) {
  return select(m, 0, i).to_vector<double>();
}

void expect_row(const Tensor& m, int64_t i, const std::vector<double>& want) {
  std::vector<double> got = row(m, i);
  ASSERT_EQ(got.size(), want.size());
  for (size_t j = 0; j < want.size(); ++j)
    EXPECT_NEAR(got[j], want[j], 1e-12) << "row " << i << " col " << j;
}

TEST(Resample, BilinearWeightsKnownRows) {
  // 4 -> 8: src = (i + 0.5) / 2 - 0.5, clamped at 0 on the left, repeated index on the right.
  Tensor m = resample_weights(4, 8, ResampleMode::bilinear, false, DType::f64);
  Tensor x = from_vector<double>({0, 1, 2, 3}, {4, 1});
  EXPECT_EQ(matmul(m, x).to_vector<double>(),
            (std::vector<double>{0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3}));
  // Antialiased 4 -> 2: triangle stretched to support 2 around center 1: taps 0, 1, 2 with
  // weights 0.75, 0.75, 0.25 before normalisation.
  Tensor aa = resample_weights(4, 2, ResampleMode::bilinear, true, DType::f64);
  expect_row(aa, 0, {3.0 / 7, 3.0 / 7, 1.0 / 7, 0});
  expect_row(aa, 1, {0, 1.0 / 7, 3.0 / 7, 3.0 / 7});
}

TEST(Resample, BicubicWeightsKnownRows) {
  // Non-AA 2x upsampling, a = -0.75: interior rows have t = 0.25 or 0.75; row 0 has src = -0.25
  // whose taps -2 and -1 are clamped onto column 0.
  Tensor m = resample_weights(6, 12, ResampleMode::bicubic, false, DType::f64);
  double a = -0.75, t = 0.75;
  auto c1 = [&](double x) { return ((a + 2) * x - (a + 3)) * x * x + 1; };
  auto c2 = [&](double x) { return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a; };
  double w0 = c2(t + 1), w1 = c1(t), w2 = c1(1 - t), w3 = c2(2 - t);
  expect_row(m, 0, {w0 + w1 + w2, w3, 0, 0, 0, 0});
  expect_row(m, 4, {w0, w1, w2, w3, 0, 0});  // src = 1.75 -> taps 0..3
  EXPECT_NEAR(w0, -0.03515625, 1e-15);       // Keys' coefficients at t = 0.75
  EXPECT_NEAR(w1, 0.26171875, 1e-15);
  EXPECT_NEAR(w2, 0.87890625, 1e-15);
  // AA bicubic 8 -> 4 (scale 2, a = -0.5, support 4): row 0 has center 1 and taps
  // [max(int(1 - 4 + 0.5), 0), min(int(1 + 4 + 0.5), 8)) = [0, 5); the taps left of 0 are
  // dropped, the weights K((j - 0.5) / 2) renormalised.
  Tensor aa = resample_weights(8, 4, ResampleMode::bicubic, true, DType::f64);
  auto k = [](double x) {
    x = std::abs(x);
    double a5 = -0.5;
    if (x < 1) return ((a5 + 2) * x - (a5 + 3)) * x * x + 1;
    if (x < 2) return ((a5 * x - 5 * a5) * x + 8 * a5) * x - 4 * a5;
    return 0.0;
  };
  std::vector<double> w;
  double total = 0;
  for (int j = 0; j < 5; ++j) total += k((j - 0.5) / 2);
  for (int j = 0; j < 8; ++j) w.push_back(j < 5 ? k((j - 0.5) / 2) / total : 0);
  expect_row(aa, 0, w);
}

TEST(Resample, WeightRowsSumToOne) {
  for (auto [in, out] : {std::pair<int64_t, int64_t>{60, 11}, {27, 64}, {7, 5}, {5, 7}}) {
    for (auto mode : {ResampleMode::bilinear, ResampleMode::bicubic, ResampleMode::area}) {
      for (bool aa : {false, true}) {
        if (aa && mode == ResampleMode::area) continue;
        Tensor s = sum(resample_weights(in, out, mode, aa, DType::f64), {1});
        EXPECT_LT(max_abs_diff(s, ones({out}, DType::f64)), 1e-12)
            << in << "->" << out << " mode " << int(mode) << " aa " << aa;
      }
    }
  }
}

TEST(Resample, AntialiasChangesDownsamplingOnly) {
  // AA and non-AA bicubic differ when shrinking (different kernel and support) ...
  Tensor x = random_leaf({1, 1, 20, 20}, 3).detach();
  EXPECT_GT(max_abs_diff(interpolate(x, 7, 7, ResampleMode::bicubic, true),
                         interpolate(x, 7, 7, ResampleMode::bicubic, false)),
            1e-3);
  // ... and bilinear AA equals plain bilinear when enlarging.
  EXPECT_LT(max_abs_diff(interpolate(x, 31, 33, ResampleMode::bilinear, true),
                         interpolate(x, 31, 33, ResampleMode::bilinear, false)),
            1e-12);
}

TEST(Resample, NearestUpsampleIsExactReplication) {
  Tensor x = random_leaf({2, 3, 27, 27}, 4).detach();
  Tensor up = interpolate(to(x, DType::f32), 54, 54, ResampleMode::nearest);
  // Each 2x2 block of the output equals the source pixel, bit for bit.
  Tensor blocks = reshape(up, {2, 3, 27, 2, 27, 2});
  Tensor src = unsqueeze(unsqueeze(to(x, DType::f32), 3), 5);
  EXPECT_EQ(max_abs_diff(blocks, expand(src, blocks.shape())), 0.0);
  // Legacy floor rule with a non-integer ratio: 3 -> 5 takes floor(i * 3 / 5) = 0,0,1,1,2.
  Tensor v = from_vector<float>({10, 20, 30}, {1, 3});
  EXPECT_EQ(interpolate(v, 1, 5, ResampleMode::nearest).to_vector<float>(),
            (std::vector<float>{10, 10, 20, 20, 30}));
}

TEST(Resample, AreaDownsampleIsBlockMean) {
  Tensor x = random_leaf({2, 3, 54, 54}, 5).detach();
  Tensor area = adaptive_avg_pool2d(x, 27, 27);
  Tensor blocks = mean(reshape(x, {2, 3, 27, 2, 27, 2}), {3, 5});
  EXPECT_LT(max_abs_diff(area, blocks), 1e-14);
  EXPECT_LT(max_abs_diff(interpolate(x, 27, 27, ResampleMode::area), blocks), 1e-14);
}

TEST(Resample, AdaptiveMaxPoolIsBlockMax) {
  Tensor x = random_leaf({2, 3, 54, 54}, 6).detach();
  ValuesIndices r = adaptive_max_pool2d(x, 27, 27);
  Tensor blocks =
      reshape(permute(reshape(x, {2, 3, 27, 2, 27, 2}), {0, 1, 2, 4, 3, 5}), {2, 3, 27, 27, 4});
  EXPECT_EQ(max_abs_diff(r.values, max(blocks, -1).values), 0.0);
  // Indices are flat positions in the 54x54 plane: gathering x there gives the values back.
  Tensor flat = reshape(x, {2, 3, 54 * 54});
  std::vector<double> fv = flat.to_vector<double>(), vals = r.values.to_vector<double>();
  std::vector<int64_t> idx = r.indices.to_vector<int64_t>();
  for (size_t i = 0; i < idx.size(); ++i) {
    size_t plane = i / (27 * 27);
    ASSERT_EQ(fv[plane * 54 * 54 + size_t(idx[i])], vals[i]);
  }
}

TEST(Resample, AdaptiveMaxPoolTiesPickFirst) {
  Tensor x = from_vector<float>({1, 3, 3, 2, 3, 0, 0, 3}, {1, 2, 4});
  ValuesIndices r = adaptive_max_pool2d(x, 1, 2);
  EXPECT_EQ(r.indices.to_vector<int64_t>(), (std::vector<int64_t>{1, 2}));
}

struct Mode {
  const char* name;
  ResampleMode mode;
  bool antialias;
};
void PrintTo(const Mode& m, std::ostream* os) {
  *os << m.name;
}

class ResampleGrad : public ::testing::TestWithParam<Mode> {};

TEST_P(ResampleGrad, UpAndDownNonIntegerRatios) {
  const Mode& m = GetParam();
  // 7x5 -> 10x3 (H up by 10/7, W down by 3/5) and 7x5 -> 3x11.
  for (auto [oh, ow] : {std::pair<int64_t, int64_t>{10, 3}, {3, 11}}) {
    SCOPED_TRACE(std::to_string(oh) + "x" + std::to_string(ow));
    Tensor x = random_leaf({2, 2, 7, 5}, 7);
    check_gradients(
        [&](const std::vector<Tensor>& in) {
          return interpolate(in[0], oh, ow, m.mode, m.antialias);
        },
        {x});
    // Non-contiguous: stored [2, 7, 5, 2] and permuted to channels-first inside.
    Tensor xp = random_leaf({2, 7, 5, 2}, 8);
    check_gradients(
        [&](const std::vector<Tensor>& in) {
          return interpolate(permute(in[0], {0, 3, 1, 2}), oh, ow, m.mode, m.antialias);
        },
        {xp});
  }
}

INSTANTIATE_TEST_SUITE_P(Modes, ResampleGrad,
                         ::testing::Values(Mode{"nearest", ResampleMode::nearest, false},
                                           Mode{"bilinear", ResampleMode::bilinear, false},
                                           Mode{"bilinear_aa", ResampleMode::bilinear, true},
                                           Mode{"bicubic", ResampleMode::bicubic, false},
                                           Mode{"bicubic_aa", ResampleMode::bicubic, true},
                                           Mode{"area", ResampleMode::area, false}),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(Resample, AdaptiveMaxPoolGradient) {
  // 7x10 -> 3x4 has overlapping windows: an element that is the max of two windows gets both
  // gradients. Random values have no ties, so finite differences are well defined.
  Tensor x = random_leaf({2, 7, 10}, 9);
  check_gradients(
      [](const std::vector<Tensor>& in) { return adaptive_max_pool2d(in[0], 3, 4).values; }, {x});
  Tensor xs = random_leaf({2, 7, 20}, 10);  // strided slice of every other column
  check_gradients(
      [](const std::vector<Tensor>& in) {
        return adaptive_max_pool2d(slice(in[0], 2, 0, 20, 2), 4, 3).values;
      },
      {xs});
}

TEST(Resample, Errors) {
  auto message = [](const std::function<void()>& f) {
    try {
      f();
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message([] {
              interpolate(zeros({4}), 2, 2, ResampleMode::bilinear);
            }).find("interpolate: input must be [..., H, W]"),
            std::string::npos);
  EXPECT_NE(message([] {
              interpolate(zeros({1, 4, 4}), 2, 2, ResampleMode::area, true);
            }).find("antialias is only supported for bilinear and bicubic"),
            std::string::npos);
  EXPECT_NE(message([] {
              adaptive_max_pool2d(zeros({1, 4, 4}), 0, 2);
            }).find("adaptive_max_pool2d: output size 0x2"),
            std::string::npos);
}

}  // namespace
}  // namespace hd
