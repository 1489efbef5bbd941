// The trainer of the checkpoint tests: the tiny transformer under FSDP + AdamW + WarmupCosine,
// with a sampler (a Philox permutation per epoch) and a Philox noise stream whose positions live
// in a TrainerState, so a checkpoint holds everything the next step depends on.
#pragma once
#include <cmath>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "autograd/optimizer.h"
#include "autograd/random.h"
#include "ops/shape.h"
#include "parallel/checkpoint/train_state.h"
#include "parallel/fsdp.h"
#include "tests/parallel/mpi_main.h"
#include "tests/parallel/tiny_model.h"

namespace hd::parallel::testing {
using ckpt::ShardRef;
using ckpt::TrainerState;

constexpr int64_t kBatch = 12, kTokens = 4, kDataset = 24;  // 2 batches per epoch
constexpr double kEps = 1e-6;  // see fsdp_test.cpp: the key bias has an analytically zero grad

// The trainer under test: its whole position is TrainerState + the checkpoint entries. The model
// has a [1, kTokens, 15] position table, so N -> M resume also covers a parameter (and its
// moments) sharded along dim 1.
struct Trainer {
  TinyTransformer model{2, kTokens};
  FSDP fsdp;
  std::vector<FSDPUnit*> blocks;
  FSDPUnit* root;
  std::unique_ptr<AdamW> opt;
  WarmupCosine schedule{1e-2, 3, 10, 1e-3};
  TrainerState st;

  Trainer() : fsdp((model.initialize(7), model), world_ptr()) {
    for (size_t i = 0; i < model.blocks->size(); ++i)
      blocks.push_back(&fsdp.fully_shard((*model.blocks)[i]));
    root = &fsdp.fully_shard(model);
    opt = std::make_unique<AdamW>(fsdp.param_groups(0.1), AdamWOptions{1e-3, 0.9, 0.999, kEps});
    st.stage = "test_pretrain";
    st.sampler_seed = 11;
    st.rng_seed = 5;
  }
  std::vector<ShardRef> shards() { return ckpt::training_shards(fsdp, *opt); }

  // Global batch at the sampler position: a Philox permutation of the dataset per epoch, and
  // target noise drawn from the trainer's stream (so a lost RNG offset changes the losses).
  std::pair<Tensor, Tensor> next_batch() {
    std::vector<int64_t> perm(kDataset);
    for (int64_t i = 0; i < kDataset; ++i) perm[i] = i;
    Generator g(st.sampler_seed, uint64_t(st.sampler_epoch));
    for (int64_t i = kDataset - 1; i > 0; --i) std::swap(perm[i], perm[g.block(i)[0] % (i + 1)]);
    Tensor x = Tensor::empty({kBatch, kTokens, 3}), y = Tensor::empty({kBatch, kTokens, 3});
    Generator noise(st.rng_seed, "target_noise");
    noise.offset = st.rng_offset;
    const uint64_t first = noise.advance(uint64_t(x.numel()));
    for (int64_t b = 0; b < kBatch; ++b) {
      const int64_t sample = perm[st.sampler_batch * kBatch + b];
      for (int64_t j = 0; j < kTokens * 3; ++j) {
        const int64_t i = b * kTokens * 3 + j;
        x.data<float>()[i] = float(std::sin(0.37 * double(j) + 1.3 * double(sample)));
        y.data<float>()[i] = float(std::cos(0.11 * double(j) - 0.7 * double(sample))) +
                             0.1f * uniform01_f32(noise.block(first + uint64_t(i))[0]);
      }
    }
    st.rng_offset = noise.offset;
    if (++st.sampler_batch * kBatch >= kDataset) st.sampler_batch = 0, ++st.sampler_epoch;
    return {x, y};
  }

  double step() {
    auto [x, y] = next_batch();
    opt->set_lr(schedule.at(st.step));
    const int64_t n = kBatch / world().world_size(), begin = world().rank() * n;
    Tensor xs = contiguous(narrow(x, 0, begin, n)), ys = contiguous(narrow(y, 0, begin, n));
    Tensor out = root->forward(xs, [&](const Tensor& in) {
      return tiny_forward(model, in, [&](size_t i, const Tensor& h) {
        return blocks[i]->forward(
            h, [&, i](const Tensor& hh) { return (*model.blocks)[i].forward(hh); });
      });
    });
    Tensor loss = mse(out, ys);
    loss.backward();
    fsdp.finish_backward();
    fsdp.clip_grad_norm(0.5);
    opt->step();
    opt->zero_grad();
    ++st.step;
    st.optimizer_step = opt->step_count();
    st.counters["samples_seen"] += double(kBatch);
    Tensor l = Tensor::empty({1}, DType::f64);
    l.data<double>()[0] = loss.item<float>();
    world().all_reduce(l, ReduceOp::avg).wait();
    return l.data<double>()[0];
  }
};

// Every entry (parameters and moments) gathered to full tensors on every rank.
inline std::map<std::string, std::vector<float>> gather_full(const std::vector<ShardRef>& shards) {
  std::map<std::string, std::vector<float>> out;
  const int n = world().world_size();
  for (const ShardRef& s : shards) {
    Tensor all = Tensor::empty({s.info.padded_length * n});
    world().all_gather(s.shard, all).wait();  // flat element ranges
    std::vector<float> full(size_t(s.info.global_numel()));
    for (int r = 0; r < n; ++r)
      copy_rows_in(s.info, r, all.data<float>() + r * s.info.padded_length, full.data());
    out[s.info.name] = std::move(full);
  }
  return out;
}

}  // namespace hd::parallel::testing
