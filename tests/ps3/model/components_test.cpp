// The stage-3 pieces against their dense definitions: selected-patch embedding vs the conv over
// the whole image, selective position embedding vs the dense antialiased bicubic resample +
// residual, the MAP head's in-box mask vs pooling the subset, and gradients (f64 finite
// differences) of the selective position embedding and the MAP head.
#include <gtest/gtest.h>

#include "ops/conv.h"
#include "ops/elementwise.h"
#include "ops/factory.h"
#include "ops/index.h"
#include "ops/nn/attention_pool.h"
#include "ops/resample.h"
#include "ops/shape.h"
#include "ps3/highres_tokens.h"
#include "tests/ps3/model/model_test_util.h"
#include "tests/testing/errors.h"
#include "tests/testing/gradcheck.h"

namespace hd::ps3 {
namespace {

using hd::testing::check_gradients;
using hd::testing::expect_error;
using hd::testing::max_abs_diff;
using hd::testing::random_leaf;

TEST(HighResTokens, SelectedPatchEmbeddingEqualsConvGathered) {
  Generator gen(1, "img");
  const int64_t C = 3, p = 14, g = 5, W = 6;
  Tensor img = uniform({1, C, g * p, g * p}, -1, 1, gen, DType::f64);
  Tensor w = uniform({W, C, p, p}, -0.1, 0.1, gen, DType::f64);
  Tensor b = uniform({W}, -0.1, 0.1, gen, DType::f64);
  std::vector<int64_t> idx = {0, 3, 7, 12, 24};
  Tensor dense = reshape(conv2d(img, w, b, p), {W, g * g});  // [W, g*g]
  Tensor expect = transpose(index_select(dense, 1, from_vector<int64_t>(idx, {5})), 0, 1);
  ps3::testing::MicroImages m;
  m.by_scale = {img};
  m.scales = {g * p};
  Tensor got = embed_selected_patches(m.patches(0, g * p, idx), w, b);
  EXPECT_EQ(got.shape(), Shape({5, W}));
  EXPECT_LT(max_abs_diff(got, expect), 1e-12);
}

// Dense reference: interpolate the G x G table to g x g (bicubic, antialias) + residual, gather.
Tensor dense_pos(const Tensor& pos, const Tensor& residual, int64_t g,
                 const std::vector<int64_t>& idx) {
  const int64_t G = 27, W = pos.size(2);
  Tensor table = permute(reshape(pos, {G, G, W}), {2, 0, 1});                       // [W, G, G]
  Tensor up = interpolate(table, g, g, ResampleMode::bicubic, /*antialias=*/true);  // [W, g, g]
  Tensor rows = transpose(reshape(up, {W, g * g}), 0, 1);                           // [g*g, W]
  rows = add(rows, reshape(residual, {g * g, W}));
  return index_select(rows, 0, from_vector<int64_t>(idx, {int64_t(idx.size())}));
}

TEST(HighResTokens, SelectivePosEmbedEqualsDenseResample) {
  Generator gen(2, "pos");
  const int64_t W = 5;
  Tensor pos = uniform({1, 729, W}, -1, 1, gen, DType::f64);
  // Upsampling (54, 108), a non-integer ratio (40) and the 4K grid (270), and a downsample (20).
  for (int64_t g : {54, 108, 40, 270, 20}) {
    Tensor residual = uniform({1, g * g, W}, -1, 1, gen, DType::f64);
    std::vector<int64_t> idx = {0, g - 1, g, g * g / 2 + 3, g * g - g, g * g - 1};
    Tensor got = highres_position_embedding(pos, residual, g,
                                            from_vector<int64_t>(idx, {int64_t(idx.size())}));
    EXPECT_LT(max_abs_diff(got, dense_pos(pos, residual, g, idx)), 1e-12) << "grid " << g;
  }
  // f32 as the model runs it.
  Tensor pos32 = uniform({1, 729, W}, -1, 1, gen);
  Tensor res32 = uniform({1, 54 * 54, W}, -1, 1, gen);
  std::vector<int64_t> idx = {5, 100, 2000};
  EXPECT_LT(
      max_abs_diff(highres_position_embedding(pos32, res32, 54, from_vector<int64_t>(idx, {3})),
                   dense_pos(pos32, res32, 54, idx)),
      1e-5);
  expect_error([&] { selective_pos_embed(pos, 54, from_vector<int64_t>({54 * 54}, {1})); },
               "outside the 54 x 54 grid");
  expect_error(
      [&] {
        highres_position_embedding(pos, zeros({1, 10, W}, DType::f64), 54,
                                   from_vector<int64_t>({1}, {1}));
      },
      "residual must be [1, 2916");
}

TEST(HighResTokens, SelectivePosEmbedGradient) {
  // Small table (3 x 3) to a 7 x 7 grid; gradient flows to the table and the residual.
  Tensor pos = random_leaf({1, 9, 2}, 3);
  Tensor residual = random_leaf({1, 49, 2}, 4);
  Tensor idx = from_vector<int64_t>({0, 8, 24, 30, 48, 8}, {6});  // a repeat accumulates
  check_gradients(
      [&](const std::vector<Tensor>& x) { return highres_position_embedding(x[0], x[1], 7, idx); },
      {pos, residual});
}

TEST(AttentionPool, InBoxMaskEqualsPoolingTheSubset) {
  const int64_t B = 2, N = 7, C = 8;
  nn::AttentionPool head(C, 2, 16);
  head.initialize(5);
  Generator gen(6, "tokens");
  Tensor x = uniform({B, N, C}, -1, 1, gen);
  // Row 0: keys {1, 4, 5}; row 1: no key -> pools over everything.
  std::vector<bool> m = {false, true,  false, false, true,  true,  false,
                         false, false, false, false, false, false, false};
  Tensor pooled = head.forward(x, from_vector(m, {B, N}));
  Tensor subset = index_select(narrow(x, 0, 0, 1), 1, from_vector<int64_t>({1, 4, 5}, {3}));
  EXPECT_LT(max_abs_diff(narrow(pooled, 0, 0, 1), head.forward(subset)), 1e-6);
  EXPECT_LT(max_abs_diff(narrow(pooled, 0, 1, 1), head.forward(narrow(x, 0, 1, 1))), 1e-6);
  // And the mask changes the result (it is not ignored).
  EXPECT_GT(max_abs_diff(narrow(pooled, 0, 0, 1), head.forward(narrow(x, 0, 0, 1))), 1e-4);
  expect_error(
      [&] {
        head.forward(x, from_vector(std::vector<bool>(3, true), {1, 3}));
      },
      "key_mask must be [2, 7]");
}

TEST(AttentionPool, GradientF64) {
  nn::AttentionPool head(4, 2, 6);
  head.initialize(9);
  ps3::testing::convert_to_f64(head);
  std::vector<Tensor> inputs = {random_leaf({2, 5, 4}, 10)};
  for (auto& [name, t] : head.named_parameters()) inputs.push_back(t);
  std::vector<bool> m = {true, false, true, true, false, false, false, false, false, false};
  Tensor mask = from_vector(m, {2, 5});
  check_gradients([&](const std::vector<Tensor>& x) { return head.forward(x[0], mask); }, inputs,
                  {.eps = 1e-6, .atol = 1e-7, .rtol = 1e-5});
}

}  // namespace
}  // namespace hd::ps3
