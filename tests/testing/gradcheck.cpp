#include "tests/testing/gradcheck.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "autograd/node.h"
#include "ops/elementwise.h"
#include "ops/factory.h"
#include "ops/reduce.h"
#include "ops/shape.h"

namespace hd::testing {

Tensor random_leaf(const Shape& shape, uint64_t seed, double lo, double hi) {
  Generator gen(seed, "gradcheck-input");
  Tensor t = uniform(shape, lo, hi, gen, DType::f64);
  t.requires_grad_(true);
  return t;
}

double max_abs_diff(const Tensor& a, const Tensor& b) {
  EXPECT_EQ(a.shape(), b.shape());
  if (a.shape() != b.shape()) return INFINITY;
  std::vector<double> va = a.to_vector<double>(), vb = b.to_vector<double>();
  double m = 0;
  for (size_t i = 0; i < va.size(); ++i) {
    double d = std::abs(va[i] - vb[i]);
    if (std::isnan(d)) return INFINITY;
    m = std::max(m, d);
  }
  return m;
}

bool check_gradients(const TensorFn& f, const std::vector<Tensor>& inputs,
                     GradcheckOptions options) {
  for (const Tensor& x : inputs) {
    EXPECT_EQ(x.dtype(), DType::f64) << "gradcheck inputs must be f64";
    EXPECT_TRUE(x.is_contiguous()) << "gradcheck inputs must be contiguous leaves";
  }
  Tensor y0;
  {
    NoGradGuard no_grad;
    y0 = f(inputs);
  }
  Generator gen(1234, "gradcheck-weights");
  Tensor w = uniform(y0.shape(), 0.5, 1.5, gen, DType::f64);
  auto loss_of = [&](const std::vector<Tensor>& xs) { return sum(mul(f(xs), w)); };

  for (const Tensor& x : inputs) const_cast<Tensor&>(x).zero_grad();
  loss_of(inputs).backward();

  bool ok = true;
  for (size_t k = 0; k < inputs.size(); ++k) {
    const Tensor& x = inputs[k];
    if (!x.requires_grad()) continue;
    Tensor analytic = x.grad();
    if (!analytic.defined()) {
      ADD_FAILURE() << "input " << k << " " << x.str() << " received no gradient";
      ok = false;
      continue;
    }
    std::vector<double> ga = analytic.to_vector<double>();
    double* p = x.data<double>();
    NoGradGuard no_grad;
    int reported = 0;
    const int64_t n = x.numel();
    const int64_t checked =
        options.max_elements_per_input > 0 ? std::min(n, options.max_elements_per_input) : n;
    for (int64_t j = 0; j < checked; ++j) {
      const int64_t i = checked == n ? j : (checked == 1 ? 0 : j * (n - 1) / (checked - 1));
      double saved = p[i];
      p[i] = saved + options.eps;
      double lp = loss_of(inputs).item<double>();
      p[i] = saved - options.eps;
      double lm = loss_of(inputs).item<double>();
      p[i] = saved;
      double numeric = (lp - lm) / (2 * options.eps);
      double err = std::abs(numeric - ga[size_t(i)]);
      if (!(err <= options.atol + options.rtol * std::abs(numeric))) {
        ok = false;
        if (reported++ < 5) {
          ADD_FAILURE() << "gradient mismatch for input " << k << " " << x.str() << " at element "
                        << i << ": analytic " << ga[size_t(i)] << ", numeric " << numeric;
        }
      }
    }
  }
  return ok;
}

}  // namespace hd::testing
