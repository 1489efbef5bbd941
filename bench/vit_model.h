// The benchmark ViT: the model of shared/reference/build-and-baseline-notes.md §4(d), so the
// PyTorch side (bench/vit_step_compare.py) and this side do the same work: patch-14 embedding,
// learned position embedding, no class token, pre-LN blocks (GELU MLP x4), final LayerNorm,
// mean pool, linear head to 1000 classes, cross-entropy, AdamW (lr 1e-3, wd 0.05).
#pragma once

#include "autograd/module.h"
#include "ops/nn/vit.h"
#include "ops/reduce.h"

namespace hd::bench {

struct ViTClassifier : Module {
  std::shared_ptr<nn::VisionTransformer> vit;
  std::shared_ptr<nn::Linear> head;
  ViTClassifier(const nn::ViTConfig& c, int64_t classes) {
    vit = register_module("vit", std::make_shared<nn::VisionTransformer>(c));
    head = register_module("head", std::make_shared<nn::Linear>(c.width, classes));
  }
  Tensor forward(const Tensor& images) const { return head->forward(mean(vit->forward(images), {1})); }
};

// Forward FLOPs as counted in the baseline notes: 2 B (N 3 p^2 d + depth (12 N d^2 + 2 N^2 d)
// + d classes); a training step is 3x forward.
inline double vit_step_flops(const nn::ViTConfig& c, int64_t batch, int64_t classes) {
  double N = double(c.tokens()), d = double(c.width);
  double fwd = 2.0 * double(batch) *
               (N * 3.0 * double(c.patch * c.patch) * d +
                double(c.depth) * (12.0 * N * d * d + 2.0 * N * N * d) + d * double(classes));
  return 3.0 * fwd;
}

}  // namespace hd::bench
