#include "ops/nn/vit.h"

#include "autograd/checkpoint.h"

namespace hd::nn {

VisionTransformer::VisionTransformer(const ViTConfig& c) : config(c) {
  HD_CHECK(c.image_size % c.patch == 0, "VisionTransformer: image_size ", c.image_size,
           " is not a multiple of patch ", c.patch);
  patch_embed =
      register_module("patch_embed", std::make_shared<PatchEmbed>(c.channels, c.width, c.patch));
  pos_embed = register_parameter("pos_embed", {1, c.tokens(), c.width}, Init::trunc_normal(0.02));
  blocks = register_module("blocks", std::make_shared<ModuleList<TransformerBlock>>());
  for (int64_t i = 0; i < c.depth; ++i) {
    blocks->push_back(std::make_shared<TransformerBlock>(c.width, c.heads, c.mlp_hidden, c.ln_eps));
  }
  norm = register_module("norm", std::make_shared<LayerNorm>(c.width, c.ln_eps));
}

Tensor VisionTransformer::forward(const Tensor& images) const {
  Tensor x = add(patch_embed->forward(images), pos_embed);
  for (const auto& block : *blocks) {
    // The lambda owns the block: the checkpoint node calls it again during backward.
    x = config.activation_checkpointing
            ? checkpoint([b = block](const Tensor& t) { return b->forward(t); }, x)
            : block->forward(x);
  }
  return norm->forward(x);
}

}  // namespace hd::nn
