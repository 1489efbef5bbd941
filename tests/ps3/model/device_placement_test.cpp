// Issue 18: PS3's pre-training step on another device than the host, tested without a GPU.
// The micro model is moved to cpu:1 ([Note: a second host device], autograd/device.h): host
// memory and host kernels, but a device of its own for every same-device check. The batch stays
// on the host (cpu:0), as the loader makes it. So every tensor the model creates on the host
// instead of its own device, and every input it does not move, is an error here, as it would
// be on a GPU; and the result must equal the host run bit for bit (same kernels). The same
// comparison runs on cuda:0 when a GPU is present (within float tolerance).
#include <gtest/gtest.h>

#include <cmath>

#include "ops/elementwise.h"
#include "ops/reduce.h"
#include "ops/shape.h"
#include "ps3/pretrain.h"
#include "tests/ps3/model/micro.h"
#ifdef HD_HAVE_CUDA
#include "ops/cuda/runtime.h"
#endif

namespace hd::ps3 {
namespace {

using testing::micro_batch;
using testing::micro_config;

struct StepResult {
  double loss = 0, contrastive = 0, bce_prior = 0, bce_posterior = 0;
  std::map<std::string, Tensor> grads;  // on the host
};

StepResult step_on(Device device, const PretrainOptions& options) {
  PS3CLIP model(micro_config());
  model.initialize(11);
  model.to_(device, DType::f32);
  data::Batch batch = micro_batch(0, 4);  // host tensors, as the loader makes them
  // Every local row's salient regions (prior_target / posterior_target all_regions): its own
  // box and caption, and a second region with another row's caption.
  auto row_tokens = [&](int64_t b) { return testing::row_tokens(batch, b); };
  batch.salient_boxes.assign(4, {});
  batch.salient_tokens.assign(4, {});
  for (int64_t b : {0, 1, 3}) {
    const data::Box& own = batch.boxes[size_t(b)][0];
    batch.salient_boxes[size_t(b)] = {own, data::Box{4, 4, 40, 30}};
    batch.salient_tokens[size_t(b)] = {row_tokens(b), row_tokens((b + 1) % 4)};
  }
  PretrainResult r = pretrain_forward(model, batch, options, nullptr);
  EXPECT_EQ(r.loss.device(), device);
  r.loss.backward();
  StepResult out{r.loss.item<double>(), r.contrastive, r.bce_prior, r.bce_posterior, {}};
  for (auto& [name, p] : model.named_parameters()) {
    EXPECT_EQ(p.device(), device) << name;
    if (p.grad().defined()) {
      EXPECT_EQ(p.grad().device(), device) << name;
      out.grads[name] = to(p.grad(), Device::cpu());
    }
  }
  return out;
}

void expect_same_step(const StepResult& got, const StepResult& want, double tol) {
  EXPECT_NEAR(got.loss, want.loss, tol * std::abs(want.loss));
  EXPECT_NEAR(got.contrastive, want.contrastive, tol * std::abs(want.contrastive) + 1e-12);
  EXPECT_NEAR(got.bce_prior, want.bce_prior, tol * std::abs(want.bce_prior) + 1e-12);
  EXPECT_NEAR(got.bce_posterior, want.bce_posterior, tol * std::abs(want.bce_posterior) + 1e-12);
  ASSERT_EQ(got.grads.size(), want.grads.size());
  for (auto& [name, w] : want.grads) {
    const Tensor& g = got.grads.at(name);
    ASSERT_EQ(g.shape(), w.shape()) << name;
    const double scale = std::sqrt(sum(mul(w, w)).item<double>()) + 1e-12;
    const Tensor d = sub(g, w);
    EXPECT_LE(std::sqrt(sum(mul(d, d)).item<double>()), tol * scale) << name;
  }
}

PretrainOptions all_parts() {
  PretrainOptions o;  // the reference recipe: GT forcing, in-box pooling
  o.selection_loss = SelectionLoss::balanced_rank;
  o.prior_all_regions = true;
  o.posterior_all_regions = true;
  return o;
}

TEST(DevicePlacement, PretrainStepOnASecondHostDeviceEqualsTheHostRun) {
  for (const PretrainOptions& o : {PretrainOptions{}, all_parts()}) {
    const StepResult host = step_on(Device::cpu(), o);
    const StepResult other = step_on(Device{DeviceType::cpu, 1}, o);
    EXPECT_GT(host.grads.size(), 20u);
    expect_same_step(other, host, 0.0);
  }
}

TEST(DevicePlacement, PretrainStepOnTheGpuMatchesTheHost) {
#ifdef HD_HAVE_CUDA
  if (!cuda::available()) GTEST_SKIP() << "no CUDA device: " << cuda::unavailable_reason();
  for (const PretrainOptions& o : {PretrainOptions{}, all_parts()}) {
    const StepResult host = step_on(Device::cpu(), o);
    const StepResult gpu = step_on(Device::cuda(0), o);
    expect_same_step(gpu, host, 1e-4);
  }
#else
  GTEST_SKIP() << "no CUDA device: this build has HD_CUDA=OFF";
#endif
}

}  // namespace
}  // namespace hd::ps3
