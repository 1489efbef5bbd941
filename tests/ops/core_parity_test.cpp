// The core ops and AdamW against PyTorch fixtures (tests/fixtures/make_core.py).
#include <gtest/gtest.h>

#include <functional>

#include "autograd/module.h"
#include "autograd/optimizer.h"
#include "ops/elementwise.h"
#include "ops/linalg.h"
#include "ops/reduce.h"
#include "ops/shape.h"
#include "tests/testing/fixtures.h"

namespace hd {
namespace {

using testing::expect_close;
using testing::Fixture;

const Fixture& core() {
  static Fixture f = Fixture::load("core.bin");
  return f;
}

// Runs fn on the fixture inputs, compares the output and, after backward with the fixture's
// upstream gradient, every input gradient.
void check_case(const std::string& name, int num_inputs,
                const std::function<Tensor(const std::vector<Tensor>&)>& fn, double tol = 1e-5) {
  const Fixture& f = core();
  std::vector<Tensor> inputs;
  for (int i = 0; i < num_inputs; ++i) {
    Tensor x = clone(f.get(name + ".in" + std::to_string(i)));
    x.requires_grad_(true);
    inputs.push_back(x);
  }
  Tensor out = fn(inputs);
  expect_close(out, f.get(name + ".out"), tol, tol, name + " output");
  out.backward(f.get(name + ".gout"));
  for (int i = 0; i < num_inputs; ++i) {
    expect_close(inputs[size_t(i)].grad(), f.get(name + ".grad" + std::to_string(i)), tol, tol,
                 name + " grad of input " + std::to_string(i));
  }
}

TEST(CoreParity, Activations) {
  check_case("gelu", 1, [](auto& in) { return gelu(in[0]); });
  check_case("gelu_tanh", 1, [](auto& in) { return gelu(in[0], GeluApprox::tanh); });
  check_case("silu", 1, [](auto& in) { return silu(in[0]); });
  check_case("sigmoid", 1, [](auto& in) { return sigmoid(in[0]); });
  check_case("softplus", 1, [](auto& in) { return softplus(in[0]); });
  check_case("exp", 1, [](auto& in) { return exp(in[0]); });
  check_case("tanh", 1, [](auto& in) { return tanh(in[0]); });
}

TEST(CoreParity, Matmul) {
  check_case("matmul", 2, [](auto& in) { return matmul(in[0], in[1]); });
  check_case("matmul_t", 2, [](auto& in) { return matmul(in[0], transpose(in[1], -1, -2)); });
  check_case("linear", 3, [](auto& in) { return linear(in[0], in[1], in[2]); });
}

TEST(CoreParity, Reductions) {
  check_case("sum12", 1, [](auto& in) { return sum(in[0], {1, 2}); });
  check_case("mean0", 1, [](auto& in) { return mean(in[0], {0}, true); });
  check_case("max1", 1, [](auto& in) { return max(in[0], 1).values; });
  check_case("logsumexp2", 1, [](auto& in) { return logsumexp(in[0], 2); });
}

TEST(CoreParity, ThreeAdamWStepsMatchPyTorch) {
  const Fixture& f = core();
  Tensor p = clone(f.get("adamw.p0")).requires_grad_(),
         b = clone(f.get("adamw.b0")).requires_grad_();
  AdamW opt({{"decay", {"p"}, {p}, 0.1}, {"no_decay", {"b"}, {b}, 0.0}}, {1e-2, 0.9, 0.95, 1e-8});
  const double lrs[] = {1e-2, 5e-3, 2e-2};
  for (int step = 0; step < 3; ++step) {
    opt.set_lr(lrs[step]);
    p.set_grad(clone(f.get("adamw.grad_p" + std::to_string(step))));
    b.set_grad(clone(f.get("adamw.grad_b" + std::to_string(step))));
    opt.step();
    expect_close(p, f.get("adamw.p" + std::to_string(step + 1)), 1e-6, 1e-5, "adamw p");
    expect_close(b, f.get("adamw.b" + std::to_string(step + 1)), 1e-6, 1e-5, "adamw bias");
  }
  expect_close(opt.exp_avg(0, 0), f.get("adamw.exp_avg_p"), 1e-7, 1e-5, "exp_avg");
  expect_close(opt.exp_avg_sq(0, 0), f.get("adamw.exp_avg_sq_p"), 1e-7, 1e-5, "exp_avg_sq");
}

}  // namespace
}  // namespace hd
