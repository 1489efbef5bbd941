#include "ops/norm.h"

#include <gtest/gtest.h>

#include <cmath>
#include <utility>
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

// The textbook formulas written with differentiable ops: an independent reference for both
// values and (through autograd) gradients of the fused kernels.
Tensor layer_norm_ref(const Tensor& x, const Tensor& w, const Tensor& b, double eps) {
  Tensor mu = mean(x, {-1}, true);
  Tensor var = mean(square(sub(x, mu)), {-1}, true);
  Tensor y = div(sub(x, mu), sqrt(add(var, eps)));
  if (w.defined()) y = mul(y, w);
  if (b.defined()) y = add(y, b);
  return y;
}

Tensor rms_norm_ref(const Tensor& x, const Tensor& w, double eps) {
  Tensor y = div(x, sqrt(add(mean(square(x), {-1}, true), eps)));
  return w.defined() ? mul(y, w) : y;
}

TEST(LayerNorm, ValuesMatchFormula) {
  Tensor x = random_leaf({2, 3, 37}, 1, -3, 5).detach();  // 37: lane body + tail
  Tensor w = random_leaf({37}, 2).detach(), b = random_leaf({37}, 3).detach();
  EXPECT_LT(max_abs_diff(layer_norm(x, w, b, 1e-5), layer_norm_ref(x, w, b, 1e-5)), 1e-12);
  EXPECT_LT(max_abs_diff(layer_norm(x, Tensor(), Tensor(), 1e-6),
                         layer_norm_ref(x, Tensor(), Tensor(), 1e-6)),
            1e-12);
  EXPECT_LT(max_abs_diff(layer_norm(x, Tensor(), b), layer_norm_ref(x, Tensor(), b, 1e-5)), 1e-12);
  Tensor xf = to(x, DType::f32), wf = to(w, DType::f32), bf = to(b, DType::f32);
  EXPECT_LT(
      max_abs_diff(to(layer_norm(xf, wf, bf, 1e-5), DType::f64), layer_norm_ref(x, w, b, 1e-5)),
      5e-6);
}

TEST(LayerNorm, EpsMatters) {
  // A nearly constant row: var ~ 1e-8, so eps = 1e-5 vs 1e-6 changes the output a lot.
  Tensor x = from_vector<double>({1.0, 1.0001, 0.9999, 1.0}, {1, 4});
  Tensor a = layer_norm(x, Tensor(), Tensor(), 1e-5), b = layer_norm(x, Tensor(), Tensor(), 1e-6);
  EXPECT_LT(max_abs_diff(a, layer_norm_ref(x, Tensor(), Tensor(), 1e-5)), 1e-12);
  EXPECT_LT(max_abs_diff(b, layer_norm_ref(x, Tensor(), Tensor(), 1e-6)), 1e-12);
  EXPECT_GT(max_abs_diff(a, b), 1e-2);
}

TEST(RmsNorm, ValuesMatchFormula) {
  Tensor x = random_leaf({5, 19}, 4, -2, 3).detach();
  Tensor w = random_leaf({19}, 5).detach();
  EXPECT_LT(max_abs_diff(rms_norm(x, w), rms_norm_ref(x, w, 1e-6)), 1e-12);
  EXPECT_LT(max_abs_diff(rms_norm(x, Tensor(), 1e-3), rms_norm_ref(x, Tensor(), 1e-3)), 1e-12);
}

TEST(LayerNorm, GradcheckAffine) {
  Tensor x = random_leaf({3, 2, 7}, 10, -2, 2), w = random_leaf({7}, 11), b = random_leaf({7}, 12);
  EXPECT_TRUE(check_gradients(
      [](const std::vector<Tensor>& in) { return layer_norm(in[0], in[1], in[2], 1e-5); },
      {x, w, b}));
}

TEST(LayerNorm, GradcheckNoAffine) {
  Tensor x = random_leaf({4, 9}, 13, -2, 2);
  EXPECT_TRUE(check_gradients(
      [](const std::vector<Tensor>& in) { return layer_norm(in[0], Tensor(), Tensor(), 1e-6); },
      {x}));
}

TEST(LayerNorm, GradcheckNonContiguousInputs) {
  // x read through a transpose, weight through a strided slice, bias absent.
  Tensor x = random_leaf({6, 4}, 14, -2, 2), w = random_leaf({12}, 15);
  EXPECT_TRUE(check_gradients(
      [](const std::vector<Tensor>& in) {
        return layer_norm(transpose(in[0], 0, 1), slice(in[1], 0, 0, 12, 2), Tensor());
      },
      {x, w}));
}

TEST(RmsNorm, Gradcheck) {
  Tensor x = random_leaf({3, 11}, 16, -2, 2), w = random_leaf({11}, 17);
  EXPECT_TRUE(check_gradients(
      [](const std::vector<Tensor>& in) { return rms_norm(in[0], in[1], 1e-6); }, {x, w}));
  Tensor x2 = random_leaf({5, 3}, 18, -2, 2);
  EXPECT_TRUE(check_gradients(
      [](const std::vector<Tensor>& in) {
        return rms_norm(permute(in[0], {1, 0}), Tensor());
      },
      {x2}));
}

TEST(LayerNorm, ManyRowsGradientsMatchComposite) {
  // 1000 rows = 15 full 64-row blocks + a partial one: the block partials must add up to the
  // composite's column sums, and two runs must agree bit for bit.
  Tensor x = random_leaf({10, 100, 24}, 20, -3, 3);
  Tensor w = random_leaf({24}, 21), b = random_leaf({24}, 22);
  Tensor gy = random_leaf({10, 100, 24}, 23).detach();
  auto grads = [&](bool fused) {
    x.zero_grad();
    w.zero_grad();
    b.zero_grad();
    Tensor y = fused ? layer_norm(x, w, b, 1e-5) : layer_norm_ref(x, w, b, 1e-5);
    y.backward(gy);
    return std::vector<Tensor>{x.grad(), w.grad(), b.grad()};
  };
  std::vector<Tensor> fused = grads(true), ref = grads(false), again = grads(true);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_LT(max_abs_diff(fused[i], ref[i]), 1e-11) << "gradient " << i;
    EXPECT_EQ(fused[i].to_vector<double>(), again[i].to_vector<double>()) << "gradient " << i;
  }
}

TEST(LayerNorm, F32BackwardOpMatchesF64) {
  Tensor x = random_leaf({130, 40}, 30, -3, 3).detach(), w = random_leaf({40}, 31).detach();
  Tensor gy = random_leaf({130, 40}, 32).detach();
  Tensor xf = to(x, DType::f32), wf = to(w, DType::f32), gf = to(gy, DType::f32);
  Tensor mean_f = mean(xf, {-1}), mean_d = mean(x, {-1});
  Tensor rstd_d = rsqrt(add(mean(square(sub(x, unsqueeze(mean_d, 1))), {-1}), 1e-5));
  NormGrads d = layer_norm_backward(gy, x, mean_d, rstd_d, w, true, true);
  NormGrads f = layer_norm_backward(gf, xf, mean_f, to(rstd_d, DType::f32), wf, true, true);
  EXPECT_LT(max_abs_diff(to(f.gx, DType::f64), d.gx), 1e-4);
  EXPECT_LT(max_abs_diff(to(f.gw, DType::f64), d.gw), 1e-4);
  EXPECT_LT(max_abs_diff(to(f.gb, DType::f64), d.gb), 1e-4);
  NormGrads no_params = layer_norm_backward(gy, x, mean_d, rstd_d, w, false, false);
  EXPECT_FALSE(no_params.gw.defined());
  EXPECT_FALSE(no_params.gb.defined());
}

// [Note: short rows] (ops/cpu/norm.cpp): rows of 16-128 values take their statistics sixteen
// rows at a time, with the adds of the row-by-row fold: every row of a many-row norm (groups of
// sixteen, then a tail) has the bits of the same row normalised alone, forward and backward,
// for layer and RMS norm, f32 and bf16; at 48 and 144 values (not grouped) too.
TEST(LayerNorm, RowGroupsGiveTheBitsOfSingleRows) {
  for (DType dt : {DType::f32, DType::bf16}) {
    for (int64_t C : {16, 32, 48, 64, 128, 144}) {
      for (bool center : {true, false}) {
        const int64_t rows = 16 * 3 + 7;
        Tensor x = to(random_leaf({rows, C}, 31, -3.0, 5.0).detach(), dt);
        Tensor w = to(random_leaf({C}, 32, 0.5, 1.5).detach(), dt);
        Tensor b = to(random_leaf({C}, 33).detach(), dt);
        Tensor gy = to(random_leaf({rows, C}, 34).detach(), dt);
        auto norm = [&](const Tensor& in) {
          return center ? layer_norm(in, w, b, 1e-5) : rms_norm(in, w, 1e-6);
        };
        // y and dL/dx of a leaf copy of `rows_of_x` under upstream gradient `g`.
        auto run = [&](const Tensor& rows_of_x, const Tensor& g) {
          Tensor leaf = contiguous(rows_of_x).detach().requires_grad_(true);
          Tensor y = norm(leaf);
          y.backward(g);
          return std::pair{y.detach(), leaf.grad()};
        };
        auto [y_all, gx_all] = run(x, gy);
        for (int64_t r = 0; r < rows; ++r) {
          auto [y_one, gx_one] = run(narrow(x, 0, r, 1), narrow(gy, 0, r, 1));
          const std::vector<double> a = narrow(y_all, 0, r, 1).to_vector<double>(),
                                    e = y_one.to_vector<double>(),
                                    ga = narrow(gx_all, 0, r, 1).to_vector<double>(),
                                    ge = gx_one.to_vector<double>();
          for (int64_t j = 0; j < C; ++j) {
            ASSERT_EQ(a[size_t(j)], e[size_t(j)])
                << dtype_name(dt) << " C " << C << (center ? " layer" : " rms") << " row " << r;
            ASSERT_EQ(ga[size_t(j)], ge[size_t(j)])
                << "gradient, " << dtype_name(dt) << " C " << C << " row " << r;
          }
        }
      }
    }
  }
}

using testing::expect_error;

TEST(LayerNorm, Errors) {
  expect_error(
      [] {
        layer_norm(zeros({2, 4}), zeros({5}), Tensor());
      },
      "layer_norm: weight of shape [5] does not match the last dim of input [2, 4]");
  expect_error(
      [] {
        layer_norm(zeros({2, 4}), ones({4}), zeros({3}));
      },
      "layer_norm: bias of shape [3]");
  expect_error([] { rms_norm(zeros({2, 4}, DType::i32), Tensor()); }, "rms_norm: expects a f32");
  expect_error([] { rms_norm(zeros({2, 4}), ones({4}, DType::f64)); }, "rms_norm: dtype mismatch");
  expect_error([] { layer_norm(zeros({2, 0}), Tensor(), Tensor()); }, "layer_norm: needs an input");
}

}  // namespace
}  // namespace hd
