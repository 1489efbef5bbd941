// The parity model: a small pre-LN transformer whose parameters shard unevenly on dim 0
// (15x3 embedding, 7x15 fc1, 45x15 qkv, 3x15 head), as FSDP2's parity tests choose on purpose.
// With pos_tokens > 0 it also has a learned position table "pos" of shape [1, pos_tokens, 15]
// added after the embedding: the [1, N, D] shape of PS3's pos_emb_residual, which FSDP splits
// along dim 1 (parallel/shard.h [Note: shard dim]).
#pragma once
#include <memory>

#include "autograd/module.h"
#include "ops/elementwise.h"
#include "ops/nn/layers.h"
#include "ops/reduce.h"

namespace hd::parallel::testing {

class TinyTransformer : public Module {
 public:
  explicit TinyTransformer(int depth = 2, int64_t pos_tokens = 0) {
    embed = register_module("embed", std::make_shared<nn::Linear>(3, 15));
    if (pos_tokens > 0) pos = register_parameter("pos", {1, pos_tokens, 15}, Init::normal(0, 0.5));
    blocks = register_module("blocks", std::make_shared<ModuleList<nn::TransformerBlock>>());
    for (int i = 0; i < depth; ++i)
      blocks->push_back(std::make_shared<nn::TransformerBlock>(15, 3, 7));
    norm = register_module("norm", std::make_shared<nn::LayerNorm>(15));
    head = register_module("head", std::make_shared<nn::Linear>(15, 3));
  }
  std::shared_ptr<nn::Linear> embed, head;
  std::shared_ptr<ModuleList<nn::TransformerBlock>> blocks;
  std::shared_ptr<nn::LayerNorm> norm;
  Tensor pos;  // [1, pos_tokens, 15] or undefined
};

// x [B, T, 3] -> [B, T, 3]; `block_fn(i, h)` runs block i (FSDP wraps it in its unit).
template <class BlockFn>
Tensor tiny_forward(const TinyTransformer& m, const Tensor& x, BlockFn&& block_fn) {
  Tensor h = m.embed->forward(x);
  if (m.pos.defined()) h = add(h, m.pos);
  for (size_t i = 0; i < m.blocks->size(); ++i) h = block_fn(i, h);
  return m.head->forward(m.norm->forward(h));
}

inline Tensor mse(const Tensor& y, const Tensor& target) {
  return mean(square(sub(y, target)));
}

}  // namespace hd::parallel::testing
