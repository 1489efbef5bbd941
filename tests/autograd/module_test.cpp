#include "autograd/module.h"

#include <gtest/gtest.h>

#include "autograd/optimizer.h"
#include "ops/elementwise.h"
#include "ops/factory.h"
#include "ops/linalg.h"
#include "ops/reduce.h"

namespace hd {
namespace {

struct Leaf : Module {
  Tensor weight, bias;
  Leaf() {
    weight = register_parameter("weight", {4, 3}, Init::normal(0, 0.02));
    bias = register_parameter("bias", {4}, Init::zeros());
  }
};

struct Block : Module {
  std::shared_ptr<Leaf> qkv = register_module("qkv", std::make_shared<Leaf>());
  Tensor scale = register_parameter("scale", {4}, Init::ones());
};

struct Net : Module {
  std::shared_ptr<ModuleList<Block>> blocks =
      register_module("blocks", std::make_shared<ModuleList<Block>>());
  Tensor logit_scale = register_parameter("logit_scale", {}, Init::constant(2.3));
  Net() {
    for (int i = 0; i < 3; ++i) blocks->push_back(std::make_shared<Block>());
  }
};

TEST(Module, HierarchicalNamesInRegistrationOrder) {
  Net net;
  std::vector<std::string> names;
  for (auto& [name, t] : net.named_parameters()) names.push_back(name);
  ASSERT_EQ(names.size(), 10u);
  EXPECT_EQ(names[0], "logit_scale");
  EXPECT_EQ(names[1], "blocks.0.scale");
  EXPECT_EQ(names[2], "blocks.0.qkv.weight");
  EXPECT_EQ(names[9], "blocks.2.qkv.bias");
  EXPECT_EQ(net.parameter("blocks.1.qkv.weight").shape(), (Shape{4, 3}));
  EXPECT_EQ(net.parameter("blocks.1.qkv.weight").name(), "blocks.1.qkv.weight");
  try {
    net.parameter("blocks.9.qkv.weight");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("available: logit_scale"), std::string::npos);
  }
  EXPECT_EQ(net.num_parameters(), 1 + 3 * (4 + 12 + 4));
  std::vector<std::string> modules;
  for (auto& [name, m] : net.named_modules()) modules.push_back(name);
  EXPECT_EQ(modules[1], "blocks");
  EXPECT_EQ(modules[3], "blocks.0.qkv");
}

TEST(Module, InitialisationIsKeyedByNameAndSeed) {
  Net a, b;
  a.initialize(5);
  b.initialize(5);
  for (auto& [name, t] : a.named_parameters()) {
    EXPECT_EQ(t.to_vector<float>(), b.parameter(name).to_vector<float>()) << name;
  }
  // Same rule, different name -> different values; constant rules respected.
  EXPECT_NE(a.parameter("blocks.0.qkv.weight").to_vector<float>(),
            a.parameter("blocks.1.qkv.weight").to_vector<float>());
  EXPECT_FLOAT_EQ(a.logit_scale.item<float>(), 2.3f);
  EXPECT_EQ(a.parameter("blocks.2.scale").to_vector<float>(), (std::vector<float>{1, 1, 1, 1}));
  Net c;
  c.initialize(6);
  EXPECT_NE(a.parameter("blocks.0.qkv.weight").to_vector<float>(),
            c.parameter("blocks.0.qkv.weight").to_vector<float>());
}

TEST(Module, TrainEvalPropagates) {
  Net net;
  net.eval();
  EXPECT_FALSE(net.blocks->is_training());
  EXPECT_FALSE((*net.blocks)[1].qkv->is_training());
  net.train();
  EXPECT_TRUE((*net.blocks)[2].is_training());
}

// to_ converts in place: the handles held before (module fields, optimizer groups) see the new
// dtype and values, and a stale gradient is dropped.
TEST(Module, ToConvertsParametersInPlace) {
  Net net;
  net.initialize(5);
  const std::vector<float> before = net.parameter("blocks.1.qkv.weight").to_vector<float>();
  Tensor held = net.logit_scale;  // e.g. what an optimizer keeps
  held.set_grad(ones({}));
  net.to_(Device::cpu(), DType::f64);
  EXPECT_EQ(held.dtype(), DType::f64);
  EXPECT_TRUE(held.is_same(net.parameter("logit_scale")));
  EXPECT_FALSE(held.grad().defined());
  EXPECT_TRUE(held.requires_grad());
  EXPECT_DOUBLE_EQ(held.item<double>(), double(2.3f));
  const std::vector<double> after = net.parameter("blocks.1.qkv.weight").to_vector<double>();
  ASSERT_EQ(after.size(), before.size());
  for (size_t i = 0; i < after.size(); ++i) EXPECT_EQ(after[i], double(before[i])) << i;
  net.to_(Device::cpu(), DType::f32);
  EXPECT_EQ(net.parameter("blocks.1.qkv.weight").to_vector<float>(), before);
}

TEST(Module, DuplicateNamesAreRejected) {
  struct Bad : Module {
    Bad() {
      register_parameter("w", {1}, Init::zeros());
      register_parameter("w", {1}, Init::zeros());
    }
  };
  EXPECT_THROW(Bad(), Error);
}

TEST(Optimizer, GroupsAreChosenByRuleNotIndex) {
  Net net;
  std::vector<ParamGroup> groups = param_groups(net, 0.05);
  ASSERT_EQ(groups.size(), 2u);
  EXPECT_EQ(groups[0].label, "decay");
  EXPECT_EQ(groups[0].names, (std::vector<std::string>{"blocks.0.qkv.weight", "blocks.1.qkv.weight",
                                                       "blocks.2.qkv.weight"}));
  EXPECT_DOUBLE_EQ(groups[0].weight_decay, 0.05);
  EXPECT_EQ(groups[1].names.size(), 7u);  // logit_scale, scales and biases
  EXPECT_DOUBLE_EQ(groups[1].weight_decay, 0.0);
}

TEST(Optimizer, SplitGroupsGetTheirOwnLearningRate) {
  Net net;
  auto selected = [](const std::string& name) { return name.rfind("blocks.1.", 0) == 0; };
  std::vector<ParamGroup> groups =
      split_param_groups(param_groups(net, 0.05), selected, "sel", 4.0);
  std::vector<std::string> labels;
  for (const auto& g : groups) labels.push_back(g.label);
  EXPECT_EQ(labels, (std::vector<std::string>{"decay", "no_decay", "sel_decay", "sel_no_decay"}));
  EXPECT_EQ(groups[2].names, (std::vector<std::string>{"blocks.1.qkv.weight"}));
  EXPECT_DOUBLE_EQ(groups[2].weight_decay, 0.05);  // decay kept, only the rate differs
  EXPECT_DOUBLE_EQ(groups[2].lr_scale, 4.0);
  EXPECT_DOUBLE_EQ(groups[0].lr_scale, 1.0);
  for (const auto& g : groups)
    for (const auto& n : g.names) EXPECT_EQ(selected(n), g.label.rfind("sel_", 0) == 0) << n;

  // AdamW's first step moves every coordinate by ~lr (m / sqrt(v) = sign(g)): x4 in the split
  // group.
  Tensor a = zeros({1}).requires_grad_(), b = zeros({1}).requires_grad_();
  AdamW opt(split_param_groups(
                {{"all", {"a", "b"}, {a, b}, 0.0}}, [](const std::string& n) { return n == "b"; },
                "fast", 4.0),
            {.lr = 1e-2});
  a.set_grad(from_vector<float>({1}, {1}));
  b.set_grad(from_vector<float>({1}, {1}));
  opt.step();
  EXPECT_NEAR(a.to_vector<float>()[0], -1e-2, 1e-6);
  EXPECT_NEAR(b.to_vector<float>()[0], -4e-2, 1e-6);
}

TEST(Optimizer, WarmupCosineSchedule) {
  WarmupCosine s{1e-3, 10, 110};
  EXPECT_DOUBLE_EQ(s.at(0), 1e-4);
  EXPECT_DOUBLE_EQ(s.at(9), 1e-3);
  EXPECT_DOUBLE_EQ(s.at(10), 1e-3);
  EXPECT_NEAR(s.at(60), 5e-4, 1e-12);
  EXPECT_NEAR(s.at(110), 0.0, 1e-15);
  EXPECT_NEAR(s.at(500), 0.0, 1e-15);  // clamped after the end
  WarmupCosine m{1.0, 0, 4, 0.5};
  EXPECT_NEAR(m.at(2), 0.75, 1e-12);
}

TEST(Optimizer, ClipGradNormScalesToMaxNorm) {
  Tensor a = zeros({2}).requires_grad_(), b = zeros({1}).requires_grad_();
  a.set_grad(from_vector<float>({3, 0}, {2}));
  b.set_grad(from_vector<float>({4}, {1}));
  double norm = clip_grad_norm({a, b}, 1.0);
  EXPECT_NEAR(norm, 5.0, 1e-9);
  EXPECT_NEAR(a.grad().to_vector<float>()[0], 0.6, 1e-6);
  EXPECT_NEAR(b.grad().to_vector<float>()[0], 0.8, 1e-6);
  // Below the threshold nothing changes.
  double n2 = clip_grad_norm({a, b}, 10.0);
  EXPECT_NEAR(n2, 1.0, 1e-6);
  EXPECT_NEAR(b.grad().to_vector<float>()[0], 0.8, 1e-6);
}

TEST(Optimizer, AdamWMinimisesAQuadratic) {
  Tensor x = from_vector<float>({3, -2}, {2}).requires_grad_();
  AdamW opt({{"all", {"x"}, {x}, 0.0}}, {0.1});
  for (int i = 0; i < 300; ++i) {
    opt.zero_grad();
    sum(square(sub(x, from_vector<float>({1, 1}, {2})))).backward();
    opt.step();
  }
  EXPECT_NEAR(x.to_vector<float>()[0], 1.0, 1e-2);
  EXPECT_NEAR(x.to_vector<float>()[1], 1.0, 1e-2);
  EXPECT_EQ(opt.step_count(), 300);
}

}  // namespace
}  // namespace hd
