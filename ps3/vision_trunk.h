// The SigLIP ViT trunk of the PS3 vision model, run in the two ways PS3 needs:
//  * the low-res pass (stage 1, reference §1.4): all blocks over the 27 x 27 tokens, keeping
//    every block output (pre-final-norm) and every layer's K/V for the high-res stage;
//  * the high-res pass (stage 3, §1.7): the same blocks over one look-close step's tokens,
//    queries = those tokens, keys/values = [that layer's low-res K/V ; own K/V], no mask.
// Plus the pooling head: MAP(LN_final(tokens)).
//
// Every block call goes through nn::run_unit so FSDP can gather the block's parameters. In the
// low-res pass the block's K and V are returned *as part of the unit's output* (concatenated
// after the tokens along the sequence axis, then split outside): FSDPUnit::forward takes one
// tensor and returns one, and routing the cache through that output means its gradient, which
// arrives from every high-res step, passes through the unit's hooked output like any other
// gradient instead of bypassing it (the cache is not detached, §1.4).
#pragma once

#include <memory>
#include <vector>

#include "autograd/module.h"
#include "ops/nn/attention_pool.h"
#include "ops/nn/layers.h"
#include "ops/nn/unit_runner.h"
#include "ps3/config.h"

namespace hd::ps3 {

// Holds `proj` so the weight is named patch_embed.proj.weight as in timm / the HF checkpoints.
class TrunkPatchEmbed : public Module {
 public:
  TrunkPatchEmbed(int64_t channels, int64_t width, int64_t patch);
  std::shared_ptr<nn::PatchEmbed> proj;
};

struct LowResPass {
  std::vector<Tensor> hidden;             // per block: [B, G*G, W] block output (pre-final-norm)
  std::vector<nn::SelfAttention::KV> kv;  // per block: k, v [B, H, G*G, Dh] (not detached)
};

class VisionTrunk : public Module {
 public:
  explicit VisionTrunk(const VisionConfig& config);

  // images [B, C, low_res, low_res].
  LowResPass forward_low_res(const Tensor& images, const nn::UnitRunner& runner) const;
  // tokens [B, N, W] (embedded, with position) -> [B, N, W] after every block, each attending to
  // [low.kv[l] ; own]. With `hidden_out`, every block's output is appended there.
  Tensor forward_high_res(const Tensor& tokens, const LowResPass& low, const nn::UnitRunner& runner,
                          std::vector<Tensor>* hidden_out = nullptr) const;
  // MAP(LN_final(tokens)) -> [B, W]; key_mask as nn::AttentionPool.
  Tensor pool(const Tensor& tokens, const Tensor& key_mask = Tensor()) const;

  VisionConfig config;
  std::shared_ptr<TrunkPatchEmbed> patch_embed;
  Tensor pos_embed;  // [1, G*G, W]
  std::shared_ptr<ModuleList<nn::TransformerBlock>> blocks;
  std::shared_ptr<nn::LayerNorm> norm;
  std::shared_ptr<nn::AttentionPool> attn_pool;
};

}  // namespace hd::ps3
