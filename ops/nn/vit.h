// A SigLIP-style ViT trunk: patch embedding, learned position embedding, pre-LN blocks, final
// LayerNorm. PS3's vision tower (ps3/) is this trunk plus its selection and high-res stages;
// the tiny configuration is what the CPU tests and benchmarks train.
#pragma once

#include "autograd/module.h"
#include "ops/nn/layers.h"

namespace hd::nn {

struct ViTConfig {
  int64_t image_size = 378;
  int64_t patch = 14;
  int64_t channels = 3;
  int64_t width = 192;
  int64_t depth = 6;
  int64_t heads = 3;
  int64_t mlp_hidden = 768;
  double ln_eps = 1e-6;
  // Recompute each block in backward instead of keeping its activations
  // (autograd/checkpoint.h): memory for one block's activations, one extra forward per block.
  bool activation_checkpointing = false;
  int64_t grid() const { return image_size / patch; }
  int64_t tokens() const { return grid() * grid(); }
};

class VisionTransformer : public Module {
 public:
  explicit VisionTransformer(const ViTConfig& config);
  // images [B, C, S, S] -> tokens [B, N, width] after the final LayerNorm.
  Tensor forward(const Tensor& images) const;

  ViTConfig config;
  std::shared_ptr<PatchEmbed> patch_embed;
  Tensor pos_embed;  // [1, N, width]
  std::shared_ptr<ModuleList<TransformerBlock>> blocks;
  std::shared_ptr<LayerNorm> norm;
};

}  // namespace hd::nn
