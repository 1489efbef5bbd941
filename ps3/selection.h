// Stage 2 of PS3: where to look (reference §1.5). Two feature maps on the low-res grid,
//  * low-res: block outputs of vision.select_layers concatenated -> selection_feature_proj
//    (timm Mlp with norm: fc1 -> GELU -> LayerNorm(eps 1e-5) -> fc2 to ns * W),
//  * high-res: a light ConvNeXt over the selection_res image (highres_selection_feature_module),
// compared by cosine with a prompt (the learned prior_prompt, or a top-down one projected by
// prompt_proj_for_highres for the ConvNeXt side):
//   prob = sigmoid(5 * (cos_lowres + maxpool(cos_highres)) / 2)   on the low-res grid.
//
// Only slot 0 of the ns per-scale projections matters: the reference overwrites every scale's
// map with slot 0's (§1.5.6). The full fc2 / prompt_proj weights are kept so checkpoints load,
// but only their first W (resp. convnext_out) rows are used, so slots 1.. get zero gradient
// exactly as in the reference, and the dead work is not done.
#pragma once

#include <memory>
#include <vector>

#include "autograd/module.h"
#include "ops/nn/convnext.h"
#include "ops/nn/layers.h"
#include "ps3/config.h"

namespace hd::ps3 {

// timm Mlp(in, hidden = in, out, norm_layer = LayerNorm): fc1, norm, fc2.
class SelectionFeatureProj : public Module {
 public:
  SelectionFeatureProj(int64_t in, int64_t out);
  // x [..., in] -> [..., rows] using only the first `rows` outputs of fc2.
  Tensor forward_rows(const Tensor& x, int64_t rows) const;
  std::shared_ptr<nn::Linear> fc1, fc2;
  std::shared_ptr<nn::LayerNorm> norm;
};

// PS3's ShallowConvNet: stem (0: conv k = s = convnext_stem, 1: LayerNorm2d), blocks, out_proj.
class ShallowConvNet : public Module {
 public:
  explicit ShallowConvNet(const VisionConfig& config);
  // images [B, C, S, S] -> features [B, S/stem, S/stem, convnext_out] (channels-last).
  Tensor forward(const Tensor& images) const;

  class Stem : public Module {
   public:
    Stem(int64_t channels, int64_t hidden, int64_t kernel);
    std::shared_ptr<nn::Conv2d> conv;     // "0"
    std::shared_ptr<nn::LayerNorm2d> ln;  // "1"
  };
  std::shared_ptr<Stem> stem;
  std::shared_ptr<ModuleList<nn::ConvNeXtBlock>> blocks;
  std::shared_ptr<nn::Conv2d> out_proj;
};

// The prompt-independent half of stage 2, computed once per forward and shared by the prior
// and the posterior.
struct SelectionFeatures {
  Tensor lowres;   // [B, G, G, W]: slot 0 of selection_feature_proj
  Tensor highres;  // [B, Gs, Gs, convnext_out]: ConvNeXt features of the selection image
};

// prob [B, G, G] for prompt [B, W] (`prompt_proj` is prompt_proj_for_highres; only its first
// convnext_out rows are used). Differentiable in every input.
Tensor selection_probability(const SelectionFeatures& features, const Tensor& prompt,
                             const nn::Linear& prompt_proj);

}  // namespace hd::ps3
