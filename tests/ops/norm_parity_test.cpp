// PyTorch parity for softmax, normalisation, similarity and losses: inputs, outputs and input
// gradients (for a fixed random upstream gradient) from tests/fixtures/make_norm.py (torch 1.13,
// f32). Tolerances are for f32: ~1e-5 relative, plus a small absolute floor for values near 0.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>

#include "autograd/node.h"
#include "ops/factory.h"
#include "ops/loss.h"
#include "ops/norm.h"
#include "ops/shape.h"
#include "ops/similarity.h"
#include "ops/softmax.h"
#include "tests/testing/fixtures.h"

namespace hd {
namespace {

using testing::expect_close;
using testing::Fixture;

const Fixture& fixture() {
  static const Fixture f = Fixture::load("norm.bin");
  return f;
}

struct Tol {
  double atol = 1e-6, rtol = 1e-5;
};

// Runs fn on fresh leaves made from the case's inputs, compares the output, runs backward with
// the stored upstream gradient and compares every input gradient the fixture has.
void run_case(const std::string& name, const std::vector<std::string>& inputs,
              const std::function<Tensor(const std::vector<Tensor>&)>& fn, Tol tol = {}) {
  SCOPED_TRACE(name);
  const Fixture& fx = fixture();
  std::vector<Tensor> leaves;
  for (const std::string& in : inputs) {
    Tensor t = clone(fx.get(name + "." + in));
    if (is_floating(t.dtype())) t.requires_grad_();
    leaves.push_back(t);
  }
  Tensor y = fn(leaves);
  expect_close(y, fx.get(name + ".y"), tol.atol, tol.rtol, name + ".y");
  y.backward(fx.get(name + ".gy"));
  int compared = 0;
  for (size_t i = 0; i < inputs.size(); ++i) {
    std::string gname = name + ".g" + inputs[i];
    if (!fx.has(gname)) continue;
    ASSERT_TRUE(leaves[i].grad().defined()) << gname << " received no gradient";
    expect_close(leaves[i].grad(), fx.get(gname), tol.atol, tol.rtol, gname);
    ++compared;
  }
  EXPECT_GT(compared, 0) << name << ": fixture has no gradients to compare";
}

TEST(NormParity, Softmax) {
  for (const char* tag : {"last", "mid"}) {
    int64_t dim = std::string(tag) == "last" ? -1 : 1;
    run_case(std::string("softmax_") + tag, {"x"},
             [&](const std::vector<Tensor>& in) { return softmax(in[0], dim); });
    run_case(std::string("log_softmax_") + tag, {"x"},
             [&](const std::vector<Tensor>& in) { return log_softmax(in[0], dim); });
  }
}

TEST(NormParity, LayerNorm) {
  run_case("layer_norm_eps6", {"x", "weight", "bias"},
           [](const std::vector<Tensor>& in) { return layer_norm(in[0], in[1], in[2], 1e-6); },
           {1e-5, 1e-5});
  run_case("layer_norm_eps5", {"x", "weight", "bias"},
           [](const std::vector<Tensor>& in) { return layer_norm(in[0], in[1], in[2], 1e-5); },
           {1e-5, 1e-5});
  run_case(
      "layer_norm_plain", {"x"},
      [](const std::vector<Tensor>& in) { return layer_norm(in[0], Tensor(), Tensor(), 1e-5); },
      {1e-5, 1e-5});
}

TEST(NormParity, RmsNorm) {
  run_case("rms_norm", {"x", "weight"},
           [](const std::vector<Tensor>& in) { return rms_norm(in[0], in[1], 1e-6); },
           {1e-5, 1e-5});
}

TEST(NormParity, L2NormalizeAndCosine) {
  run_case("l2_normalize", {"x"},
           [](const std::vector<Tensor>& in) { return l2_normalize(in[0], -1); });
  run_case("l2_normalize_dim0", {"x"},
           [](const std::vector<Tensor>& in) { return l2_normalize(in[0], 0); });
  run_case("cosine_similarity", {"a", "b"},
           [](const std::vector<Tensor>& in) { return cosine_similarity(in[0], in[1]); });
  run_case("cosine_similarity_bcast", {"a", "b"},
           [](const std::vector<Tensor>& in) { return cosine_similarity(in[0], in[1]); });
}

TEST(NormParity, CrossEntropyWithIgnoreIndex) {
  run_case("cross_entropy", {"logits", "target"},
           [](const std::vector<Tensor>& in) { return cross_entropy(in[0], in[1], -100); });
  run_case("cross_entropy_sum", {"logits", "target"}, [](const std::vector<Tensor>& in) {
    return cross_entropy(in[0], in[1], -100, Reduction::sum);
  });
}

TEST(NormParity, BinaryCrossEntropy) {
  // Exact 0/1 probabilities: the -100 clamp (forward), the 1e-12 floor (gradient ~1e12) and
  // PyTorch's unclamped target gradient (+-inf) are all in the fixture.
  run_case("bce", {"probs", "target"},
           [](const std::vector<Tensor>& in) { return binary_cross_entropy(in[0], in[1]); });
  run_case("bce_with_logits", {"logits", "target"}, [](const std::vector<Tensor>& in) {
    return binary_cross_entropy_with_logits(in[0], in[1]);
  });
}

TEST(NormParity, Dice) {
  run_case("dice", {"probs", "target"},
           [](const std::vector<Tensor>& in) { return dice_loss(in[0], in[1]); });
}

TEST(NormParity, Siglip) {
  run_case("siglip", {"image", "text", "logit_scale", "logit_bias"},
           [](const std::vector<Tensor>& in) { return siglip_loss(in[0], in[1], in[2], in[3]); },
           {1e-5, 1e-5});
}

}  // namespace
}  // namespace hd
