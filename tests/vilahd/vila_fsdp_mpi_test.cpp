// Sharded VILA-HD training equals unsharded training on the whole batch (parallelize.h).
//
// Every rank trains the micro VILA-HD with shard_vila (units: every LLM layer and PS3 block, then
// the root) on its samples of a global batch of 4, and an unsharded reference in-process on both
// samples at once; after each of 2 AdamW steps the mean of the ranks' losses equals the
// reference loss, and afterwards every full parameter equals the reference's. The samples hold
// the same number of label tokens and one boxed image each, so the mean of per-rank losses is
// the whole batch's loss. Top-down mode: the LLM layers run twice per step (the no-grad prompt
// pass, then the real forward) and the PS3 blocks four times. Run at 1, 2 and 4 ranks; again with
// every LLM layer and PS3 block recomputed in backward (train.activation_checkpointing), where
// each unit must still reduce-scatter once per step (fsdp.h, [Note: recomputed units]).
#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "autograd/optimizer.h"
#include "parallel/fsdp.h"
#include "tests/parallel/mpi_main.h"
#include "tests/vilahd/vila_test_util.h"
#include "vilahd/parallelize.h"

namespace hd::vilahd {
namespace {

using parallel::testing::world;
using parallel::testing::world_ptr;
using namespace hd::vilahd::testing;

constexpr uint64_t kSeed = 9;
const AdamWOptions kAdam{2e-3, 0.9, 0.95, 1e-4};

VilaSample global_sample(const VilaHdConfig& c, int step, int index) {
  VilaSample s;
  s.input_ids = {5 + index, kImageToken, 8, 9 + index, 10, 11 + step, 12};
  s.prompt_position = 3;
  s.labels = {-100, -100, -100, -100, 10, 11 + step, 12};
  s.images.push_back(micro_image(c, uint64_t(100 + 10 * step + index), true));
  return s;
}

std::vector<ParamGroup> groups(const Module& m) {
  return param_groups(m, 1e-4);
}

void check_parity(bool recompute) {
  const int n = world().world_size(), rank = world().rank();
  constexpr int kGlobal = 4;
  if (kGlobal % n != 0)
    GTEST_SKIP() << "the global batch of " << kGlobal << " does not split over " << n << " ranks";
  const VilaHdConfig c = micro_vila_config();
  auto ref = micro_vila(c, kSeed);
  AdamW ref_opt(groups(*ref), kAdam);
  auto model = micro_vila(c, kSeed);
  model->set_activation_checkpointing(recompute, recompute);
  auto fsdp = shard_vila(*model, world_ptr());
  AdamW opt(fsdp->param_groups(1e-4), kAdam);
  for (int step = 0; step < 2; ++step) {
    std::vector<VilaSample> all;
    for (int i = 0; i < kGlobal; ++i) all.push_back(global_sample(c, step, i));
    VilaOutputs r = ref->forward(all);
    r.loss.backward();
    ref_opt.step();
    ref_opt.zero_grad();

    std::vector<VilaSample> mine;
    for (int i = rank * (kGlobal / n); i < (rank + 1) * (kGlobal / n); ++i)
      mine.push_back(all[size_t(i)]);
    const int64_t scatters = world().stats()[parallel::Collective::reduce_scatter].calls;
    VilaOutputs o = model->forward(mine);
    o.loss.backward();
    fsdp->finish_backward();
    EXPECT_EQ(world().stats()[parallel::Collective::reduce_scatter].calls - scatters,
              int64_t(fsdp->units().size()))
        << "step " << step << ": one reduce-scatter per unit";
    opt.step();
    opt.zero_grad();
    Tensor sum = Tensor::empty({1}, DType::f64);
    sum.data<double>()[0] = o.loss.item<double>();
    world().all_reduce(sum, parallel::ReduceOp::sum).wait();
    const double want = r.loss.item<double>(), got = sum.data<double>()[0] / n;
    ASSERT_TRUE(std::isfinite(want));
    EXPECT_NEAR(got, want, 1e-5 * std::max(1.0, std::abs(want))) << "step " << step;
  }
  std::map<std::string, Tensor> full = fsdp->full_parameters();
  int compared = 0;
  double moved = 0;
  auto init = micro_vila(c, kSeed);
  std::map<std::string, Tensor> init_params;
  for (auto& [name, p] : init->named_parameters()) init_params[name] = p;
  for (auto& [name, p] : ref->named_parameters()) {
    ASSERT_TRUE(full.count(name)) << name;
    std::vector<float> a = p.to_vector<float>(), b = full.at(name).to_vector<float>();
    std::vector<float> i0 = init_params.at(name).to_vector<float>();
    double worst = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      worst = std::max(worst, double(std::abs(a[i] - b[i])));
      moved = std::max(moved, double(std::abs(a[i] - i0[i])));
    }
    EXPECT_LT(worst, 1e-5) << name;
    ++compared;
  }
  EXPECT_EQ(compared, int(full.size()));
  EXPECT_GT(moved, 1e-3);
  model->set_unit_runner({});
}

TEST(VilaSharded, MatchesWholeBatchTraining) {
  check_parity(false);
}

TEST(VilaSharded, MatchesWholeBatchTrainingWithRecomputedLayers) {
  check_parity(true);
}

}  // namespace
}  // namespace hd::vilahd
