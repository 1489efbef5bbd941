// VisionTrunk: see vision_trunk.h.
#include "ps3/vision_trunk.h"

#include "ops/elementwise.h"
#include "ops/shape.h"

namespace hd::ps3 {

TrunkPatchEmbed::TrunkPatchEmbed(int64_t channels, int64_t width, int64_t patch) {
  proj = register_module("proj", std::make_shared<nn::PatchEmbed>(channels, width, patch));
}

VisionTrunk::VisionTrunk(const VisionConfig& c) : config(c) {
  patch_embed = register_module("patch_embed",
                                std::make_shared<TrunkPatchEmbed>(c.channels, c.width, c.patch));
  pos_embed = register_parameter("pos_embed", {1, c.low_grid() * c.low_grid(), c.width},
                                 Init::trunc_normal(0.02));
  blocks = register_module("blocks", std::make_shared<ModuleList<nn::TransformerBlock>>());
  for (int64_t i = 0; i < c.depth; ++i) {
    blocks->push_back(
        std::make_shared<nn::TransformerBlock>(c.width, c.heads, c.mlp_hidden, c.ln_eps));
  }
  norm = register_module("norm", std::make_shared<nn::LayerNorm>(c.width, c.ln_eps));
  attn_pool = register_module(
      "attn_pool", std::make_shared<nn::AttentionPool>(c.width, c.heads, c.mlp_hidden, c.ln_eps));
}

LowResPass VisionTrunk::forward_low_res(const Tensor& images, const nn::UnitRunner& runner) const {
  const int64_t side = config.low_res;
  HD_CHECK(images.dim() == 4 && images.size(1) == config.channels && images.size(2) == side &&
               images.size(3) == side,
           "PS3 vision: low_res input must be [B, ", config.channels, ", ", side, ", ", side,
           "], got ", images.str());
  const int64_t B = images.size(0), N = config.low_grid() * config.low_grid();
  const int64_t W = config.width, H = config.heads, Dh = W / H;
  Tensor x = add(patch_embed->proj->forward(images), pos_embed);
  LowResPass out;
  for (const auto& block : *blocks) {
    // [out ; K ; V] along the sequence axis, so the cache travels through the unit's output.
    const nn::TransformerBlock* b = block.get();
    auto body = [b, B, N, W](const Tensor& in) {
      nn::SelfAttention::KV kv;
      Tensor y = b->forward(in, {}, &kv);
      Tensor k = reshape(transpose(kv.k, 1, 2), {B, N, W});
      Tensor v = reshape(transpose(kv.v, 1, 2), {B, N, W});
      return cat({y, k, v}, 1);
    };
    Tensor packed =
        nn::run_unit(runner, *block, x, nn::recomputed(config.activation_checkpointing, body));
    // One unbind, not three narrows: its backward writes the three gradients into one buffer,
    // where each narrow's wrote its own zero-filled [B, 3N, W] and the engine added them. The
    // cache stays a view (attention reads strided k/v in place).
    std::vector<Tensor> parts = unbind(reshape(packed, {B, 3, N, W}), 1);
    x = parts[0];
    auto heads_of = [&](const Tensor& part) {
      return permute(reshape(part, {B, N, H, Dh}), {0, 2, 1, 3});
    };
    out.kv.push_back({heads_of(parts[1]), heads_of(parts[2])});
    out.hidden.push_back(x);
  }
  return out;
}

Tensor VisionTrunk::forward_high_res(const Tensor& tokens, const LowResPass& low,
                                     const nn::UnitRunner& runner,
                                     std::vector<Tensor>* hidden_out) const {
  HD_CHECK(tokens.dim() == 3 && tokens.size(2) == config.width,
           "PS3 vision: high-res tokens must be [B, N, ", config.width, "], got ", tokens.str());
  HD_CHECK(low.kv.size() == blocks->size(), "PS3 vision: low-res cache has ", low.kv.size(),
           " layers, the trunk ", blocks->size());
  Tensor x = tokens;
  for (size_t l = 0; l < blocks->size(); ++l) {
    const nn::TransformerBlock& block = (*blocks)[l];
    // The low-res cache needs gradients (it comes out of the low-res pass): a side input.
    auto body = [b = &block](const Tensor& in, const std::vector<Tensor>& prefix) {
      AttentionOptions options;
      options.prefix_k = prefix[0];
      options.prefix_v = prefix[1];
      return b->forward(in, options);
    };
    x = nn::run_unit(
        runner, block, x,
        nn::recomputed(config.activation_checkpointing, {low.kv[l].k, low.kv[l].v}, body));
    if (hidden_out) hidden_out->push_back(x);
  }
  return x;
}

Tensor VisionTrunk::pool(const Tensor& tokens, const Tensor& key_mask) const {
  return attn_pool->forward(norm->forward(tokens), key_mask);
}

}  // namespace hd::ps3
