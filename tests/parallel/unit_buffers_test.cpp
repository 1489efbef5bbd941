// FSDP's unit buffers (parallel/unit_buffers.h) without a process group: every rank's packing is
// run in one process and the collectives are replaced by their definitions (all-gather =
// concatenation of the ranks' buffers; reduce-scatter with sum = rank r's slice of the sum of the
// ranks' buffers), so the layout is checked against closed-form values for uneven shards
// (padding rows, ranks holding only padding), a [1, N, W] table sharded on dim 1, a 0-d
// parameter, and 16-bit wire dtypes. These functions are the one packing path for host and
// device tensors ([Note: one code path for host and device]).
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "autograd/tensor.h"
#include "ops/factory.h"
#include "ops/shape.h"
#include "parallel/unit_buffers.h"

namespace hd::parallel {
namespace {

const std::vector<Shape> kShapes = {{5, 3}, {3}, {1, 7, 2}, {}, {2, 2, 2}};

float value_of(size_t param, int64_t i) {
  return float(int64_t(param) * 16 + i % 16 + 1) *
         0.5f;  // at most 7 significant bits: exact in bf16
}

// Rank r's view of a unit holding kShapes: params with full values, shards cut from them.
std::vector<FSDPParam> unit_for_rank(int r, int world, DType param_dtype, int64_t& shard_numel) {
  std::vector<FSDPParam> params;
  shard_numel = 0;
  for (size_t k = 0; k < kShapes.size(); ++k) {
    FSDPParam p;
    p.info = make_shard_info("p" + std::to_string(k), kShapes[k], r, world);
    Tensor full = Tensor::empty(kShapes[k]);
    for (int64_t i = 0; i < full.numel(); ++i) full.data<float>()[i] = value_of(k, i);
    p.shard = zeros(p.info.shard_shape());
    copy_rows_out(p.info, r, full.data<float>(), p.shard.data<float>());
    p.param = to(full, param_dtype);  // the module's compute copy
    p.unit_offset = shard_numel;
    shard_numel += p.info.padded_length;
    params.push_back(std::move(p));
  }
  return params;
}

class UnitBuffers : public ::testing::TestWithParam<std::tuple<int, DType>> {};

TEST_P(UnitBuffers, GatherPacksEveryRankAndUnpackRebuildsEveryParameter) {
  auto [world, dt] = GetParam();
  std::vector<Tensor> packed;
  int64_t shard_numel = 0;
  for (int r = 0; r < world; ++r) {
    auto params = unit_for_rank(r, world, dt, shard_numel);
    packed.push_back(pack_shards(params, shard_numel, dt, Device::cpu()));
    ASSERT_EQ(packed.back().numel(), shard_numel);
    ASSERT_EQ(packed.back().dtype(), dt);
  }
  Tensor gathered = cat(packed, 0);  // the all-gather
  auto params = unit_for_rank(0, world, dt, shard_numel);
  std::vector<uint64_t> versions;
  for (FSDPParam& p : params) {
    versions.push_back(p.param.storage()->version());
    p.param.storage()->resize(0);  // resharded: no bytes
  }
  unpack_gathered(gathered, params, shard_numel);
  for (size_t k = 0; k < params.size(); ++k)
    EXPECT_EQ(params[k].param.storage()->version(), versions[k]) << "p" << k << ": version kept";
  for (size_t k = 0; k < params.size(); ++k) {
    Tensor got = to(params[k].param, DType::f32);
    ASSERT_EQ(got.shape(), kShapes[k]);
    for (int64_t i = 0; i < got.numel(); ++i)
      ASSERT_EQ(got.data<float>()[i], value_of(k, i)) << "p" << k << "[" << i << "] N=" << world;
  }
  // The padding of every rank's buffer is zero.
  for (int r = 0; r < world; ++r) {
    auto rp = unit_for_rank(r, world, dt, shard_numel);
    Tensor buf = to(packed[size_t(r)], DType::f32);
    for (const FSDPParam& p : rp) {
      for (int64_t i = p.info.length; i < p.info.padded_length; ++i)
        ASSERT_EQ(buf.data<float>()[p.unit_offset + i], 0.0f) << p.info.name << " rank " << r;
    }
  }
}

TEST_P(UnitBuffers, ReduceScatterOfPackedGradientsGivesEachRankItsRowsOfTheSum) {
  auto [world, dt] = GetParam();
  int64_t shard_numel = 0;
  // Rank q's full gradient of parameter k: (q + 1) * value_of(k, i); parameter 1 has none on
  // odd ranks (it received no gradient there).
  std::vector<Tensor> packed;
  for (int q = 0; q < world; ++q) {
    auto params = unit_for_rank(q, world, dt, shard_numel);
    for (size_t k = 0; k < params.size(); ++k) {
      if (k == 1 && q % 2 == 1) continue;
      Tensor g = Tensor::empty(kShapes[k]);
      for (int64_t i = 0; i < g.numel(); ++i) g.data<float>()[i] = float(q + 1) * value_of(k, i);
      params[k].param.set_grad(to(g, dt));
    }
    packed.push_back(to(pack_grads(params, shard_numel, world, dt, Device::cpu()), DType::f32));
  }
  Tensor total = zeros({shard_numel * world});
  for (const Tensor& b : packed) {
    for (int64_t i = 0; i < total.numel(); ++i) total.data<float>()[i] += b.data<float>()[i];
  }
  for (int r = 0; r < world; ++r) {
    auto params = unit_for_rank(r, world, dt, shard_numel);
    Tensor mine = to(narrow(total, 0, int64_t(r) * shard_numel, shard_numel), dt);  // its slice
    accumulate_reduced(mine, params);  // no gradient yet: set
    accumulate_reduced(mine, params);  // then added
    for (size_t k = 0; k < params.size(); ++k) {
      double ranks_sum = 0;  // sum over contributing ranks of (q + 1)
      for (int q = 0; q < world; ++q) ranks_sum += (k == 1 && q % 2 == 1) ? 0 : q + 1;
      const FSDPParam& p = params[k];
      Tensor g = p.shard.grad();
      ASSERT_TRUE(g.defined()) << p.info.name;
      ASSERT_EQ(g.shape(), p.info.shard_shape());
      for (int64_t i = 0; i < p.info.padded_length; ++i) {
        const double want = i < p.info.length ? 2 * ranks_sum * value_of(k, p.info.offset + i) : 0;
        ASSERT_NEAR(g.data<float>()[i], want, std::abs(want) * 8e-3)
            << p.info.name << " rank " << r << " of " << world << " [" << i << "]";
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(WorldsAndDtypes, UnitBuffers,
                         ::testing::Combine(::testing::Values(1, 2, 3, 4),
                                            ::testing::Values(DType::f32, DType::bf16)));

}  // namespace
}  // namespace hd::parallel
