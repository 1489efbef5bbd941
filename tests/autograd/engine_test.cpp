#include "autograd/engine.h"

#include <gtest/gtest.h>

#include <cmath>

#include "autograd/allocator.h"
#include "autograd/node.h"
#include "ops/elementwise.h"
#include "ops/factory.h"
#include "ops/linalg.h"
#include "ops/reduce.h"
#include "ops/shape.h"

namespace hd {
namespace {

std::vector<double> values(const Tensor& t) {
  return t.to_vector<double>();
}

TEST(Engine, ScalarBackwardAndAccumulationAcrossCalls) {
  Tensor x = from_vector<double>({1, 2, 3}, {3}).requires_grad_();
  sum(mul(x, x)).backward();
  EXPECT_EQ(values(x.grad()), (std::vector<double>{2, 4, 6}));
  sum(mul(x, 3.0)).backward();  // accumulates into .grad
  EXPECT_EQ(values(x.grad()), (std::vector<double>{5, 7, 9}));
}

// AccumulateGrad adopts a first gradient that nothing else can reach instead of copying it; a
// gradient that also reaches another leaf, a caller's hook or a view must still be copied.
TEST(Engine, FirstGradientIsAdoptedOnlyWhenNothingElseHoldsIt) {
  // One tensor, add's gradient, reaches both leaves: each leaf owns its own copy.
  Tensor a = from_vector<double>({1, 2}, {2}).requires_grad_();
  Tensor b = from_vector<double>({3, 4}, {2}).requires_grad_();
  add(a, b).backward(from_vector<double>({5, 6}, {2}));
  ASSERT_NE(a.grad().storage(), b.grad().storage());
  Tensor ga = a.grad();
  mul_(ga, 2.0);
  EXPECT_EQ(values(a.grad()), (std::vector<double>{10, 12}));
  EXPECT_EQ(values(b.grad()), (std::vector<double>{5, 6}));
  // A gradient the caller passed in (and still holds) is copied.
  Tensor x = from_vector<double>({1, 2}, {2}).requires_grad_();
  Tensor given = from_vector<double>({7, 8}, {2});
  mul(x, 1.0).backward(given);
  Tensor gx = x.grad();
  mul_(gx, 3.0);
  EXPECT_EQ(values(given), (std::vector<double>{7, 8}));
  // Seen by a hook: copied, so the hook's tensor keeps its values.
  Tensor y = from_vector<double>({1, 2}, {2}).requires_grad_();
  Tensor seen;
  y.register_grad_hook([&](const Tensor& g) {
    seen = g;
    return Tensor();
  });
  sum(mul(y, 4.0)).backward();
  Tensor gy = y.grad();
  mul_(gy, 0.5);
  EXPECT_EQ(values(seen), (std::vector<double>{4, 4}));
  EXPECT_EQ(values(y.grad()), (std::vector<double>{2, 2}));
  // A fresh, unshared gradient is adopted: the leaf holds the very buffer the product made
  // (allocator count: one buffer for mul's gradient, none for a copy of it).
  Tensor z = from_vector<double>(std::vector<double>(4096, 1.0), {4096}).requires_grad_();
  Tensor w = from_vector<double>(std::vector<double>(4096, 2.0), {4096});
  Tensor loss = sum(mul(z, w));
  const int64_t before = allocator_for(Device::cpu()).stats().allocations;
  loss.backward();
  const int64_t made = allocator_for(Device::cpu()).stats().allocations - before;
  EXPECT_EQ(values(z.grad())[4095], 2.0);
  // sum's backward expands (a view, or one buffer), mul's backward makes one product: at most
  // two buffers; copying the gradient into .grad would be a third.
  EXPECT_LE(made, 2);
}

TEST(Engine, BackwardWithGivenGradientForNonScalar) {
  Tensor x = from_vector<double>({1, 2}, {2}).requires_grad_();
  Tensor y = mul(x, 5.0);
  EXPECT_THROW(y.backward(), Error);  // non-scalar without gradient
  y.backward(from_vector<double>({1, 10}, {2}));
  EXPECT_EQ(values(x.grad()), (std::vector<double>{5, 50}));
}

TEST(Engine, DiamondGraphSumsBothPaths) {
  Tensor x = from_vector<double>({2}, {1}).requires_grad_();
  Tensor a = mul(x, 3.0), b = exp(x);
  sum(add(a, mul(a, b))).backward();  // d/dx [3x + 3x e^x] = 3 + 3 e^x + 3x e^x
  double e2 = std::exp(2.0);
  EXPECT_NEAR(values(x.grad())[0], 3 + 3 * e2 + 6 * e2, 1e-9);
}

TEST(Engine, GraphIsFreedWithoutRetainGraph) {
  Tensor x = from_vector<double>({1, 2}, {2}).requires_grad_();
  Tensor loss = sum(exp(x));
  loss.backward();
  try {
    loss.backward();
    FAIL() << "second backward must throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("second time"), std::string::npos) << e.what();
  }
}

TEST(Engine, RetainGraphAllowsSecondBackward) {
  Tensor x = from_vector<double>({1, 2}, {2}).requires_grad_();
  Tensor loss = sum(exp(x));
  loss.backward(Tensor(), /*retain_graph=*/true);
  loss.backward();
  EXPECT_NEAR(values(x.grad())[1], 2 * std::exp(2.0), 1e-12);
}

TEST(Engine, SavedTensorsAreReleasedAfterBackward) {
  Tensor x = from_vector<double>({1, 2}, {2}).requires_grad_();
  Tensor y = exp(x);  // saves its output
  std::weak_ptr<Storage> saved_storage = y.storage();
  Tensor loss = sum(y);
  y = Tensor();
  EXPECT_FALSE(saved_storage.expired());  // still referenced by expBackward
  loss.backward();
  EXPECT_TRUE(saved_storage.expired());  // freed as backward ran
}

TEST(Engine, VersionCounterCatchesInPlaceModificationOfSavedTensor) {
  Tensor x = from_vector<double>({1, 2}, {2}).requires_grad_();
  Tensor c = from_vector<double>({3, 4}, {2});
  Tensor loss = sum(mul(x, c));  // saves c for x's gradient
  mul_(c, 2.0);
  try {
    loss.backward();
    FAIL() << "expected the version-counter error";
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("modified in place"), std::string::npos) << msg;
    EXPECT_NE(msg.find("mulBackward"), std::string::npos) << msg;
  }
}

TEST(Engine, ViewsShareTheVersionCounter) {
  Tensor x = from_vector<double>({1, 2, 3, 4}, {4}).requires_grad_();
  Tensor base = from_vector<double>({1, 1, 1, 1}, {4});
  Tensor loss = sum(mul(x, base));
  Tensor view = narrow(base, 0, 1, 2);
  fill_(view, 5.0);  // writes through a view of the saved tensor
  EXPECT_THROW(loss.backward(), Error);
}

TEST(Engine, NoGradBuildsNoGraph) {
  Tensor x = from_vector<double>({1}, {1}).requires_grad_();
  Tensor y;
  {
    NoGradGuard guard;
    y = mul(x, 2.0);
    EXPECT_FALSE(GradMode::enabled());
  }
  EXPECT_TRUE(GradMode::enabled());
  EXPECT_FALSE(y.requires_grad());
  EXPECT_EQ(y.grad_fn(), nullptr);
  EXPECT_THROW(y.backward(), Error);
}

TEST(Engine, DetachStopsGradients) {
  Tensor x = from_vector<double>({3}, {1}).requires_grad_();
  Tensor y = mul(x, x.detach());  // d/dx = x (only one factor tracked)
  sum(y).backward();
  EXPECT_EQ(values(x.grad()), (std::vector<double>{3}));
  EXPECT_FALSE(x.detach().requires_grad());
}

TEST(Engine, HooksRunInDocumentedOrder) {
  Tensor w1 = from_vector<double>({1, 2}, {2}).requires_grad_();
  Tensor w2 = from_vector<double>({3, 4}, {2}).requires_grad_();
  std::vector<std::string> log;
  Tensor h = mul(w1, 2.0);       // layer 1
  Tensor out = sum(mul(h, w2));  // layer 2 (created later: runs first in backward)
  h.grad_fn()->add_pre_hook([&](std::vector<Tensor>&) { log.push_back("pre:layer1"); });
  h.grad_fn()->add_post_hook(
      [&](std::vector<Tensor>&, const std::vector<Tensor>&) { log.push_back("post:layer1"); });
  w1.register_grad_hook([&](const Tensor& g) {
    log.push_back("grad:w1");
    return mul(g, 10.0);  // replaces the incoming gradient
  });
  w1.register_post_accumulate_hook([&](Tensor& leaf) {
    log.push_back("acc:w1");
    EXPECT_EQ(values(leaf.grad()), (std::vector<double>{60, 80}));
  });
  w2.register_post_accumulate_hook([&](Tensor&) { log.push_back("acc:w2"); });
  out.backward();
  std::vector<std::string> expected{"acc:w2", "pre:layer1", "post:layer1", "grad:w1", "acc:w1"};
  EXPECT_EQ(log, expected);
  EXPECT_EQ(values(w1.grad()), (std::vector<double>{60, 80}));
}

TEST(Engine, PostHookCanRewriteInputGradients) {
  Tensor x = from_vector<double>({1, 1}, {2}).requires_grad_();
  Tensor y = mul(x, 4.0);
  y.grad_fn()->add_post_hook([](std::vector<Tensor>& grad_inputs, const std::vector<Tensor>&) {
    grad_inputs[0] = mul(grad_inputs[0], 0.5);
  });
  sum(y).backward();
  EXPECT_EQ(values(x.grad()), (std::vector<double>{2, 2}));
}

TEST(Engine, InputsThatNeedNoGradGetNone) {
  Tensor x = from_vector<double>({1, 2}, {2}).requires_grad_();
  Tensor c = from_vector<double>({5, 6}, {2});
  sum(matmul(unsqueeze(x, 0), unsqueeze(c, 1))).backward();
  EXPECT_FALSE(c.grad().defined());
  EXPECT_EQ(values(x.grad()), (std::vector<double>{5, 6}));
}

TEST(Engine, MultiOutputSplitMaterialisesMissingGradients) {
  Tensor x = from_vector<double>({1, 2, 3, 4}, {4}).requires_grad_();
  std::vector<Tensor> parts = split(mul(x, 1.0), {1, 3}, 0);
  sum(parts[1]).backward();  // parts[0] gets no gradient
  EXPECT_EQ(values(x.grad()), (std::vector<double>{0, 1, 1, 1}));
}

TEST(Engine, RequiresGradOnlyOnFloatLeaves) {
  Tensor i = zeros({2}, DType::i64);
  EXPECT_THROW(i.requires_grad_(), Error);
  Tensor x = zeros({2}).requires_grad_();
  Tensor y = mul(x, 2.0);
  EXPECT_THROW(y.requires_grad_(false), Error);
}

}  // namespace
}  // namespace hd
