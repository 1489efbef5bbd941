// Selected-patch embedding and selective position embedding: see highres_tokens.h.
#include "ps3/highres_tokens.h"

#include <cmath>

#include "ops/elementwise.h"
#include "ops/factory.h"
#include "ops/index.h"
#include "ops/linalg.h"
#include "ops/reduce.h"
#include "ops/resample.h"
#include "ops/shape.h"

namespace hd::ps3 {

Tensor embed_selected_patches(const Tensor& patches, const Tensor& weight, const Tensor& bias) {
  HD_CHECK(weight.dim() == 4, "embed_selected_patches: weight must be [W, C, p, p], got ",
           weight.str());
  const int64_t W = weight.size(0), C = weight.size(1), p = weight.size(2);
  HD_CHECK(
      patches.dim() >= 3 && patches.size(-3) == C && patches.size(-2) == p && patches.size(-1) == p,
      "embed_selected_patches: patches must be [..., ", C, ", ", p, ", ", p, "], got ",
      patches.str());
  Shape lead(patches.shape().begin(), patches.shape().end() - 3);
  Shape flat = lead;
  flat.push_back(C * p * p);
  Tensor x = reshape(patches, flat);
  if (x.dtype() != weight.dtype()) x = to(x, weight.dtype());
  return linear(x, reshape(weight, {W, C * p * p}), bias);
}

Tensor selective_pos_embed(const Tensor& pos_embed, int64_t grid, const Tensor& positions) {
  HD_CHECK(pos_embed.dim() == 3 && pos_embed.size(0) == 1,
           "selective_pos_embed: pos_embed must be [1, G*G, W], got ", pos_embed.str());
  const int64_t G = int64_t(std::lround(std::sqrt(double(pos_embed.size(1)))));
  const int64_t W = pos_embed.size(2);
  HD_CHECK(G * G == pos_embed.size(1), "selective_pos_embed: pos_embed has ", pos_embed.size(1),
           " rows, not a square grid");
  HD_CHECK(grid > 0, "selective_pos_embed: grid ", grid, " is not positive");
  HD_CHECK(positions.dim() == 1 && positions.dtype() == DType::i64,
           "selective_pos_embed: positions must be i64 [n], got ", positions.str());
  const int64_t n = positions.size(0);
  if (n == 0) return zeros({0, W}, pos_embed.dtype(), pos_embed.device());
  Tensor rows = indexing::index_i64("selective_pos_embed", positions);
  std::vector<int64_t> pos = rows.to_vector<int64_t>();
  std::vector<int64_t> iy(static_cast<size_t>(n)), ix(static_cast<size_t>(n));
  for (int64_t t = 0; t < n; ++t) {
    HD_CHECK(pos[size_t(t)] >= 0 && pos[size_t(t)] < grid * grid, "selective_pos_embed: position ",
             pos[size_t(t)], " is outside the ", grid, " x ", grid, " grid");
    iy[size_t(t)] = pos[size_t(t)] / grid;
    ix[size_t(t)] = pos[size_t(t)] % grid;
  }
  Tensor R = to(resample_weights(G, grid, ResampleMode::bicubic, true, pos_embed.dtype()),
                pos_embed.device());                              // [g, G]
  Tensor Ry = index_select(R, 0, from_vector<int64_t>(iy, {n}));  // [n, G] weights over rows a
  Tensor Rx = index_select(R, 0, from_vector<int64_t>(ix, {n}));  // [n, G] weights over cols b
  // T^(b): [b, a * W] so one GEMM contracts the column axis for every token.
  Tensor Tb = reshape(permute(reshape(pos_embed, {G, G, W}), {1, 0, 2}), {G, G * W});
  Tensor U = reshape(matmul(Rx, Tb), {n, G, W});  // U[t, a] = sum_b Rx[t, b] T[a, b]
  return sum(mul(U, unsqueeze(Ry, 2)), {1});      // sum_a Ry[t, a] U[t, a]
}

Tensor highres_position_embedding(const Tensor& pos_embed, const Tensor& residual, int64_t grid,
                                  const Tensor& positions) {
  HD_CHECK(residual.dim() == 3 && residual.size(1) == grid * grid &&
               residual.size(2) == pos_embed.size(2),
           "highres_position_embedding: residual must be [1, ", grid * grid, ", ",
           pos_embed.size(2), "], got ", residual.str());
  Tensor table = reshape(residual, {grid * grid, residual.size(2)});
  return add(selective_pos_embed(pos_embed, grid, positions), index_select(table, 0, positions));
}

}  // namespace hd::ps3
