// MasterWeights (autograd/mixed_precision.h): bf16 compute with fp32 masters, on the CPU (which
// computes bf16 GEMMs and elementwise ops in f32 and stores bf16; the GPU path is the same code
// with cuBLAS bf16 GEMMs). The checks: small updates survive only through the masters; the
// compute copy is always the rounded master; gradients accumulate into the masters across
// micro-batches; a bf16 regression trains like its fp32 twin.
#include <gtest/gtest.h>

#include <cmath>

#include "autograd/mixed_precision.h"
#include "autograd/node.h"
#include "autograd/optimizer.h"
#include "autograd/random.h"
#include "ops/elementwise.h"
#include "ops/factory.h"
#include "ops/nn/layers.h"
#include "ops/reduce.h"
#include "ops/shape.h"

namespace hd {
namespace {

struct Vector : Module {
  Tensor w = register_parameter("w", {8}, Init::ones());
};

struct Mlp : Module {
  std::shared_ptr<nn::Linear> fc1 = register_module("fc1", std::make_shared<nn::Linear>(4, 16));
  std::shared_ptr<nn::Linear> fc2 = register_module("fc2", std::make_shared<nn::Linear>(16, 1));
  Tensor forward(const Tensor& x) const { return fc2->forward(gelu(fc1->forward(x))); }
};

// Loss in f32 whatever the compute dtype (the reduction should not run in bf16).
Tensor mse(const Tensor& pred, const Tensor& target) {
  return mean(square(sub(to(pred, DType::f32), target)));
}

TEST(MasterWeights, SmallUpdatesSurviveOnlyThroughTheMasters) {
  // Near 1.0 bf16 steps by 2^-7: an update of 1e-3 applied to the bf16 weight is lost...
  Tensor w16 = to(ones({8}), DType::bf16);
  EXPECT_EQ(to(add(w16, 1e-3), DType::bf16).to_vector<float>(), w16.to_vector<float>());
  // ...while 20 AdamW steps of ~1e-3 on the fp32 masters move the bf16 copy.
  Vector m;
  m.initialize(1);
  MasterWeights mw(m, DType::bf16);
  EXPECT_EQ(m.w.dtype(), DType::bf16);
  AdamW opt(mw.param_groups(0.0), {.lr = 1e-3});
  for (int step = 0; step < 20; ++step) {
    Tensor loss = sum(mul(to(m.w, DType::f32), -1.0));  // pushes every weight up at rate lr
    loss.backward();
    mw.grads_to_masters();
    EXPECT_FALSE(m.w.grad().defined()) << "the bf16 gradient is dropped";
    opt.step();
    opt.zero_grad();
    mw.masters_to_params();
  }
  const float master = mw.masters()[0].to_vector<float>()[0];
  EXPECT_NEAR(master, 1.02f, 1e-3f);
  // The compute copy is the master rounded to bf16: 1.02 lies past the midpoint 1 + 2.5 * 2^-7,
  // so 1 + 3 * 2^-7.
  EXPECT_EQ(m.w.to_vector<float>(), std::vector<float>(8, 1.0234375f));
  EXPECT_EQ(to(to(mw.masters()[0], DType::bf16), DType::f32).to_vector<float>(),
            to(m.w, DType::f32).to_vector<float>());
}

TEST(MasterWeights, GradientsAccumulateInFp32AcrossMicroBatches) {
  Mlp m;
  m.initialize(3);
  MasterWeights mw(m, DType::bf16);
  Generator gen(4, "data");
  Tensor x1 = to(normal({6, 4}, 0.0, 1.0, gen), DType::bf16);
  Tensor x2 = to(normal({6, 4}, 0.0, 1.0, gen), DType::bf16);
  Tensor y = normal({6, 1}, 0.0, 1.0, gen);
  mse(m.forward(x1), y).backward();
  const Tensor g1 = to(m.fc1->weight.grad(), DType::f32);
  mw.grads_to_masters();
  mse(m.forward(x2), y).backward();
  const Tensor g2 = to(m.fc1->weight.grad(), DType::f32);
  mw.grads_to_masters();
  const Tensor master_grad = mw.masters()[0].grad();  // fc1.weight comes first
  ASSERT_TRUE(master_grad.defined());
  EXPECT_EQ(master_grad.dtype(), DType::f32);
  EXPECT_EQ(master_grad.to_vector<float>(), add(g1, g2).to_vector<float>());
}

TEST(MasterWeights, Bf16RegressionTrainsLikeItsFp32Twin) {
  Generator gen(5, "data");
  Tensor x = normal({64, 4}, 0.0, 1.0, gen);
  Tensor y = sum(mul(x, from_vector<float>({0.5f, -1.0f, 0.25f, 2.0f}, {1, 4})), {1}, true);
  auto train = [&](bool bf16) {
    Mlp m;
    m.initialize(7);
    std::unique_ptr<MasterWeights> mw;
    if (bf16) mw = std::make_unique<MasterWeights>(m, DType::bf16);
    AdamW opt(bf16 ? mw->param_groups(0.0) : param_groups(m, 0.0), {.lr = 1e-2});
    const Tensor input = bf16 ? to(x, DType::bf16) : x;
    std::vector<float> losses;
    for (int step = 0; step < 150; ++step) {
      Tensor loss = mse(m.forward(input), y);
      loss.backward();
      if (bf16) mw->grads_to_masters();
      opt.step();
      opt.zero_grad();
      if (bf16) mw->masters_to_params();
      losses.push_back(loss.item<float>());
    }
    return losses;
  };
  const std::vector<float> f32 = train(false), b16 = train(true);
  std::printf("loss: f32 %.4f -> %.4f, bf16 %.4f -> %.4f\n", f32.front(), f32.back(), b16.front(),
              b16.back());
  EXPECT_LT(f32.back(), 0.05f * f32.front());
  EXPECT_LT(b16.back(), 0.05f * b16.front()) << "bf16 compute with fp32 masters learns";
  EXPECT_NEAR(b16.front(), f32.front(), 0.05 * f32.front()) << "same model, same start";
}

TEST(MasterWeights, RejectsWhatItCannotMaster) {
  Vector m;
  m.initialize(1);
  EXPECT_THROW(MasterWeights(m, DType::i32), Error);
  MasterWeights once(m, DType::bf16);
  try {
    MasterWeights twice(m, DType::bf16);  // the parameters are bf16 now
    FAIL() << "a bf16 parameter was accepted as a master";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("parameter 'w' is bf16"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace hd
