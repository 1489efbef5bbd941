// Activation checkpointing (autograd/checkpoint.h): the recomputed backward must give the
// gradients of the plain run (f64 against finite differences; a ViT's every parameter against
// the plain ViT) while keeping less memory alive, and it must stay out of the way under no_grad.
#include <gtest/gtest.h>

#include <cmath>

#include "autograd/allocator.h"
#include "autograd/checkpoint.h"
#include "autograd/node.h"
#include "ops/elementwise.h"
#include "ops/factory.h"
#include "ops/linalg.h"
#include "ops/loss.h"
#include "ops/nn/unit_runner.h"
#include "ops/nn/vit.h"
#include "ops/reduce.h"
#include "tests/testing/gradcheck.h"

namespace hd {
namespace {

// A small two-matmul body in f64: y = tanh(x W1) W2, loss = sum(y^2 * c).
struct Body {
  Tensor w1, w2;
  Tensor operator()(const Tensor& x) const { return matmul(tanh(matmul(x, w1)), w2); }
};

Tensor param(const std::vector<int64_t>& shape, uint64_t seed) {
  Generator gen(seed, "checkpoint-test");
  Tensor t = normal(shape, 0.0, 0.5, gen, DType::f64);
  t.requires_grad_(true);
  return t;
}

double loss_value(const Body& body, const Tensor& x, const Tensor& c) {
  NoGradGuard no_grad;
  return sum(mul(square(body(x)), c)).item<double>();
}

TEST(ActivationCheckpointing, F64GradientsMatchFiniteDifferences) {
  Body body{param({4, 5}, 1), param({5, 3}, 2)};
  Tensor x = param({2, 4}, 3), c = param({2, 3}, 4).detach();
  Tensor loss = sum(mul(square(checkpoint(body, x)), c));
  loss.backward();
  ASSERT_TRUE(x.grad().defined());
  ASSERT_TRUE(body.w1.grad().defined());
  ASSERT_TRUE(body.w2.grad().defined());
  const double eps = 1e-6;
  for (Tensor* t : {&x, &body.w1, &body.w2}) {
    std::vector<double> analytic = t->grad().to_vector<double>();
    std::vector<double> values = t->detach().to_vector<double>();
    for (size_t i = 0; i < values.size(); ++i) {
      auto at = [&](double v) {
        std::vector<double> moved = values;
        moved[i] = v;
        Tensor probe = from_vector(moved, t->shape());
        Body b = body;
        Tensor in = x;
        if (t == &x) in = probe;
        if (t == &body.w1) b.w1 = probe;
        if (t == &body.w2) b.w2 = probe;
        return loss_value(b, in, c);
      };
      double numeric = (at(values[i] + eps) - at(values[i] - eps)) / (2 * eps);
      EXPECT_NEAR(analytic[i], numeric, 1e-7 * std::max(1.0, std::abs(numeric))) << i;
    }
  }
}

TEST(ActivationCheckpointing, SideInputsGetTheirGradients) {
  // nn::recomputed with a side tensor (as PS3's high-res blocks read the low-res KV cache): the
  // side input, the main input and the parameter all get finite-difference gradients, also
  // when the checkpointed block runs twice on one graph (one recompute per run).
  Tensor w = param({4, 4}, 11), x = param({3, 4}, 12), side = param({3, 4}, 13);
  nn::UnitBodyWithSide block = [w](const Tensor& in, const std::vector<Tensor>& s) {
    return tanh(add(matmul(in, w), mul(s[0], in)));
  };
  auto f = [&](const std::vector<Tensor>& v) {
    nn::UnitBody body = nn::recomputed(true, {v[1]}, block);
    return body(body(v[0]));
  };
  EXPECT_TRUE(hd::testing::check_gradients(f, {x, side, w}));
  // And it equals the plain body's gradients exactly (the same ops, in the same order).
  auto grads_of = [&](bool recompute) {
    for (Tensor* t : {&x, &side, &w}) t->zero_grad();
    nn::UnitBody body = nn::recomputed(recompute, {side}, block);
    sum(body(body(x))).backward();
    return std::vector<std::vector<double>>{x.grad().to_vector<double>(),
                                            side.grad().to_vector<double>(),
                                            w.grad().to_vector<double>()};
  };
  EXPECT_EQ(grads_of(true), grads_of(false));
}

TEST(ActivationCheckpointing, ParametersGetGradientsWhenTheInputNeedsNone) {
  Body body{param({4, 5}, 1), param({5, 3}, 2)};
  Tensor x = param({2, 4}, 3).detach();  // e.g. the image batch
  Tensor plain_loss = sum(square(body(x)));
  plain_loss.backward();
  std::vector<double> expected = body.w1.grad().to_vector<double>();
  body.w1.zero_grad();
  body.w2.zero_grad();
  sum(square(checkpoint(body, x))).backward();
  ASSERT_TRUE(body.w1.grad().defined());
  EXPECT_EQ(body.w1.grad().to_vector<double>(), expected);
}

TEST(ActivationCheckpointing, UnderNoGradItIsThePlainBody) {
  Body body{param({4, 5}, 1), param({5, 3}, 2)};
  Tensor x = param({2, 4}, 3);
  NoGradGuard no_grad;
  Tensor y = checkpoint(body, x);
  EXPECT_FALSE(y.requires_grad());
  EXPECT_EQ(y.to_vector<double>(), body(x).to_vector<double>());
}

TEST(ActivationCheckpointing, AnInputChangedInPlaceBeforeBackwardIsAnError) {
  Body body{param({4, 5}, 1), param({5, 3}, 2)};
  Tensor x0 = param({2, 4}, 3);
  Tensor x = mul(x0, 1.0);  // not a leaf, so it may be written in place
  Tensor loss = sum(square(checkpoint(body, x)));
  {
    NoGradGuard no_grad;
    fill_(x, 0.5);
  }
  EXPECT_THROW(loss.backward(), Error);
}

// The tiny ViT, trained for a few AdamW steps with and without checkpointing from the same
// initial weights: same losses and, at each step, every parameter's gradient equal to the plain
// run's; and the memory alive at the peak of a step is lower.
struct StepResult {
  std::vector<float> losses;
  std::vector<std::vector<float>> grads;  // last step, every parameter
  int64_t peak_bytes = 0;                 // allocator peak above the step's starting point
};

StepResult train_vit(bool activation_checkpointing) {
  nn::ViTConfig c{.image_size = 112,
                  .patch = 14,
                  .channels = 3,
                  .width = 48,
                  .depth = 4,
                  .heads = 2,
                  .mlp_hidden = 192,
                  .activation_checkpointing = activation_checkpointing};
  nn::VisionTransformer vit(c);
  vit.initialize(5);
  Generator gen(9, "checkpoint-vit-data");
  Tensor images = normal({4, 3, 112, 112}, 0.0, 1.0, gen);
  Tensor target = normal({4, c.width}, 0.0, 1.0, gen);
  StepResult r;
  for (int step = 0; step < 3; ++step) {
    vit.zero_grad();
    Allocator& alloc = allocator_for(Device::cpu());
    alloc.reset_peak();
    const int64_t start = alloc.stats().current_bytes;
    Tensor loss = mean(square(sub(mean(vit.forward(images), {1}), target)));
    loss.backward();
    r.peak_bytes = std::max(r.peak_bytes, alloc.stats().peak_bytes - start);
    r.losses.push_back(loss.item<float>());
    r.grads.clear();
    for (Tensor p : vit.parameters()) {
      r.grads.push_back(p.grad().to_vector<float>());
      NoGradGuard no_grad;
      copy_(p, sub(p, mul(p.grad(), 0.05)));  // a plain SGD step: the next step differs
    }
  }
  return r;
}

TEST(ActivationCheckpointing, ViTTrainsLikeThePlainRunWithLessMemory) {
  StepResult plain = train_vit(false), recomputed = train_vit(true);
  EXPECT_EQ(recomputed.losses, plain.losses);
  ASSERT_EQ(recomputed.grads.size(), plain.grads.size());
  for (size_t i = 0; i < plain.grads.size(); ++i) {
    ASSERT_EQ(recomputed.grads[i].size(), plain.grads[i].size());
    for (size_t j = 0; j < plain.grads[i].size(); ++j)
      ASSERT_NEAR(recomputed.grads[i][j], plain.grads[i][j],
                  1e-6f * std::max(1.0f, std::abs(plain.grads[i][j])))
          << "parameter " << i << " element " << j;
  }
  // 4 blocks: the plain run keeps every block's activations until its backward, the
  // checkpointed one the 4 block inputs plus one block's activations at a time.
  EXPECT_LT(double(recomputed.peak_bytes), 0.6 * double(plain.peak_bytes))
      << "plain " << plain.peak_bytes << " B, checkpointed " << recomputed.peak_bytes << " B";
}

}  // namespace
}  // namespace hd
