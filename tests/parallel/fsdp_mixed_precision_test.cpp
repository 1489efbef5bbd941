// FSDP's mixed-precision policy (parallel/fsdp.h, [Note: mixed precision]) on the CPU, whose bf16
// kernels compute in f32 and round on store as a GPU does.
//
// The exact check: when every rank trains on the same batch, FSDP with param_dtype bf16 must be
// the single-process MasterWeights run (autograd/mixed_precision.h) in disguise: the same rounded
// weights, the same bf16 gradients, averaged over identical copies, the same AdamW on fp32
// masters. At 1 and 2 ranks that average is exact, so losses and parameters agree bit for bit;
// at 3 and 4 ranks the ring's running sum 3g can round, so they agree within 1e-6. Then the
// data-parallel run (each rank its own rows) tracks fp32 training, and the bytes on the wire are
// the ZeRO-3 formula with the policy's element sizes. Run at 1-4 ranks.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>

#include "autograd/mixed_precision.h"
#include "autograd/optimizer.h"
#include "ops/elementwise.h"
#include "ops/nn/layers.h"
#include "ops/reduce.h"
#include "ops/shape.h"
#include "parallel/fsdp.h"
#include "tests/parallel/mpi_main.h"

namespace hd::parallel {
namespace {

using testing::world;

constexpr int64_t kBatch = 24;
constexpr double kLr = 1e-2, kDecay = 0.1;

// Uneven dim-0 sizes (15, 7, 3 rows) so shards carry padding at 2-4 ranks.
struct Net : Module {
  std::shared_ptr<nn::Linear> fc1 = register_module("fc1", std::make_shared<nn::Linear>(3, 15));
  std::shared_ptr<nn::Linear> fc2 = register_module("fc2", std::make_shared<nn::Linear>(15, 7));
  std::shared_ptr<nn::Linear> head = register_module("head", std::make_shared<nn::Linear>(7, 3));
};

// Fresh inputs every step, targets a fixed smooth function of them (learnable).
std::pair<Tensor, Tensor> batch(int step) {
  Tensor x = Tensor::empty({kBatch, 3}), y = Tensor::empty({kBatch, 3});
  float* xs = x.data<float>();
  for (int64_t i = 0; i < x.numel(); ++i) xs[i] = float(std::sin(0.37 * double(i) + 1.3 * step));
  for (int64_t b = 0; b < kBatch; ++b) {
    const float* r = xs + 3 * b;
    for (int j = 0; j < 3; ++j) {
      y.data<float>()[3 * b + j] = 0.5f * std::sin(r[0] + 2 * r[1] - r[2] + float(j));
    }
  }
  return {x, y};
}

// The loss reduces in f32 whatever the compute dtype.
Tensor mse(const Tensor& pred, const Tensor& target) {
  return mean(square(sub(to(pred, DType::f32), target)));
}

Tensor rows(const Tensor& t, int64_t begin, int64_t n) {
  return contiguous(narrow(t, 0, begin, n));
}

struct ShardedNet {
  Net model;
  FSDP fsdp;
  FSDPUnit *fc1, *fc2, *root;
  std::unique_ptr<AdamW> opt;
  ShardedNet(MixedPrecisionPolicy mp, bool reshard = true)
      : fsdp((model.initialize(11), model), testing::world_ptr()) {
    fc1 = &fsdp.fully_shard(*model.fc1, {reshard, mp});
    fc2 = &fsdp.fully_shard(*model.fc2, {reshard, mp});
    root = &fsdp.fully_shard(model, {reshard, mp});
    opt = std::make_unique<AdamW>(fsdp.param_groups(kDecay), AdamWOptions{.lr = kLr});
  }
  Tensor forward(const Tensor& x) {
    return root->forward(x, [&](const Tensor& in) {
      Tensor h = fc1->forward(in, [&](const Tensor& a) { return gelu(model.fc1->forward(a)); });
      h = fc2->forward(h, [&](const Tensor& a) { return gelu(model.fc2->forward(a)); });
      return model.head->forward(h);
    });
  }
  // One step on rows [begin, begin + n) of the step's batch; returns this rank's loss.
  float step(int s, int64_t begin, int64_t n) {
    auto [x, y] = batch(s);
    Tensor loss = mse(forward(rows(x, begin, n)), rows(y, begin, n));
    loss.backward();
    fsdp.finish_backward();
    opt->step();
    opt->zero_grad();
    return loss.item<float>();
  }
};

TEST(FSDPMixedPrecision, Bf16ComputeOnTheSameBatchIsMasterWeights) {
  Net ref;
  ref.initialize(11);
  MasterWeights mw(ref, DType::bf16);
  AdamW ref_opt(mw.param_groups(kDecay), AdamWOptions{.lr = kLr});

  ShardedNet fs({.param_dtype = DType::bf16, .reduce_dtype = DType::f32});
  EXPECT_EQ(fs.model.fc1->weight.dtype(), DType::bf16) << "the module holds the compute copy";
  const bool exact = world().world_size() <= 2;
  std::vector<float> losses;
  for (int s = 0; s < 10; ++s) {
    auto [x, y] = batch(s);
    Tensor ref_loss = mse(
        ref.head->forward(gelu(ref.fc2->forward(gelu(ref.fc1->forward(to(x, DType::bf16)))))), y);
    ref_loss.backward();
    mw.grads_to_masters();
    ref_opt.step();
    ref_opt.zero_grad();
    mw.masters_to_params();

    const float got = fs.step(s, 0, kBatch);
    losses.push_back(got);
    if (exact) {
      ASSERT_EQ(got, ref_loss.item<float>()) << "loss at step " << s;
    } else {
      ASSERT_NEAR(got, ref_loss.item<float>(), 1e-6) << "loss at step " << s;
    }
    const std::map<std::string, Tensor> full = fs.fsdp.full_parameters();
    std::vector<std::string> names;
    for (auto& [name, t] : ref.named_parameters()) names.push_back(name);
    for (size_t i = 0; i < names.size(); ++i) {
      const std::vector<float> want = mw.masters()[i].to_vector<float>();
      const std::vector<float> have = full.at(names[i]).to_vector<float>();
      ASSERT_EQ(have.size(), want.size()) << names[i];
      for (size_t j = 0; j < want.size(); ++j) {
        if (exact) {
          ASSERT_EQ(have[j], want[j]) << names[i] << "[" << j << "] step " << s;
        } else {
          ASSERT_NEAR(have[j], want[j], 1e-6) << names[i] << "[" << j << "] step " << s;
        }
      }
    }
  }
  EXPECT_LT(losses.back(), 0.7f * losses.front()) << "it learns";
}

TEST(FSDPMixedPrecision, UnshardedParametersLiveInParamDtype) {
  ShardedNet fs({.param_dtype = DType::bf16, .reduce_dtype = DType::f32});
  auto [x, y] = batch(0);
  size_t bytes_inside = 0;
  DType input_dtype = DType::f32;
  Tensor out = fs.root->forward(x, [&](const Tensor& in) {
    input_dtype = in.dtype();
    return fs.fc1->forward(in, [&](const Tensor& a) {
      bytes_inside = fs.model.fc1->weight.storage()->nbytes();
      return fs.model.fc1->forward(a);
    });
  });
  EXPECT_EQ(input_dtype, DType::bf16) << "a floating input is cast when it enters the unit";
  EXPECT_EQ(out.dtype(), DType::bf16);
  EXPECT_EQ(bytes_inside, size_t(15 * 3 * 2)) << "fc1.weight unsharded in bf16";
  EXPECT_EQ(fs.model.fc1->weight.storage()->nbytes(), 0u) << "resharded after forward";
  sum(to(out, DType::f32)).backward();
  fs.fsdp.finish_backward();
  for (const Tensor& shard : fs.fsdp.shards()) {
    if (shard.name().rfind("fc1.", 0) != 0) continue;  // only fc1 ran
    ASSERT_TRUE(shard.grad().defined()) << shard.name();
    EXPECT_EQ(shard.grad().dtype(), DType::f32) << shard.name() << ": masters' gradients are fp32";
  }
}

TEST(FSDPMixedPrecision, DataParallelBf16TracksFp32Training) {
  const int64_t N = world().world_size(), per_rank = kBatch / N, begin = world().rank() * per_rank;
  for (DType reduce : {DType::f32, DType::bf16}) {
    ShardedNet fp32({});
    ShardedNet bf16({.param_dtype = DType::bf16, .reduce_dtype = reduce});
    float first = 0, last = 0, last32 = 0;
    for (int s = 0; s < 10; ++s) {
      const float a = fp32.step(s, begin, per_rank), b = bf16.step(s, begin, per_rank);
      last32 = a;
      // bf16 keeps 8 significant bits: the rounded weights and activations move the loss by
      // about 2^-8 relative; 10 steps of AdamW on the masters keep the runs within a few of that.
      EXPECT_NEAR(b, a, 0.03 * a + 1e-3) << "step " << s << " reduce " << dtype_name(reduce);
      if (s == 0) first = b;
      last = b;
    }
    if (world().rank() == 0) {
      std::printf("N=%d reduce %s: rank-0 loss bf16 %.5f -> %.5f, fp32 -> %.5f\n", int(N),
                  dtype_name(reduce), first, last, last32);
    }
    EXPECT_LT(last, 0.8f * first) << "reduce " << dtype_name(reduce);
  }
}

int64_t padded_numel(const FSDP& f) {
  int64_t total = 0;
  for (const ShardInfo& s : f.shard_infos()) total += s.padded_length;
  return total;
}

TEST(FSDPMixedPrecision, BytesPerStepUseThePolicyDtypes) {
  const int N = world().world_size();
  for (DType reduce : {DType::f32, DType::bf16}) {
    for (bool reshard : {true, false}) {
      ShardedNet fs({.param_dtype = DType::bf16, .reduce_dtype = reduce}, reshard);
      fs.step(0, 0, kBatch);  // records the forward order
      world().barrier().wait();
      world().reset_stats();
      fs.step(1, 0, kBatch);
      CollectiveStats s = world().stats();
      const double psi = double(padded_numel(fs.fsdp)) * N, share = double(N - 1) / N;
      EXPECT_DOUBLE_EQ(s[Collective::all_gather].bus_bytes, (reshard ? 2 : 1) * psi * 2 * share)
          << "bf16 all-gathers, reshard " << reshard;
      EXPECT_DOUBLE_EQ(s[Collective::reduce_scatter].bus_bytes,
                       psi * double(dtype_size(reduce)) * share)
          << "reduce-scatter in " << dtype_name(reduce);
    }
  }
}

TEST(FSDPMixedPrecision, RejectsANonFloatPolicy) {
  Net model;
  model.initialize(1);
  FSDP fsdp(model, testing::world_ptr());
  try {
    fsdp.fully_shard(*model.fc1, {true, {.param_dtype = DType::bf16, .reduce_dtype = DType::i32}});
    FAIL() << "an i32 reduce dtype was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("mixed_precision.reduce_dtype is i32"), std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace hd::parallel
