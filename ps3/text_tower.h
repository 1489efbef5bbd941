// The PS3 text tower: OpenCLIP's TextTransformer as used by SigLIP (ps3-reference-implementation
// §1.9) plus the top-down prompt head.
//
// Why its own layers and not nn::TransformerBlock: the parameter names must be the HF/OpenCLIP
// ones (transformer.resblocks.N.attn.in_proj_weight, mlp.c_fc, ...) so released checkpoints load
// by name, and the tower takes a dtype so its gradients can be checked in f64 against finite
// differences end to end.
//
// Facts that are easy to get wrong: no causal mask; LayerNorm eps 1e-6 everywhere except the
// prompt head's (1e-5, timm's Mlp norm default); the pooled token is the LAST position
// (ctx - 1, usually a pad token), not the EOS token; text_projection has a bias and maps to the
// vision width (the contrastive embedding dim); the prompt head reads the L2-normalised feature.
#pragma once

#include <memory>
#include <vector>

#include "autograd/module.h"
#include "ops/nn/unit_runner.h"
#include "ps3/config.h"

namespace hd::ps3 {

namespace text_detail {
class TextBlock;  // text_tower.cpp
class Dense;
class Norm;
}  // namespace text_detail

// prompt_proj: fc1 E->E, GELU (exact), LayerNorm(E, 1e-5), fc2 E->E; E = the vision width
// (the training code builds it with hidden = visual width).
class PromptHead : public Module {
 public:
  PromptHead(int64_t dim, DType dtype);
  Tensor forward(const Tensor& features) const;

 private:
  std::shared_ptr<text_detail::Dense> fc1_, fc2_;
  std::shared_ptr<text_detail::Norm> norm_;
};

struct TextOutputs {
  Tensor features;  // [B, E] L2-normalised text_projection(LN(x)[:, ctx-1]): the contrast side
  Tensor prompt;    // [B, E] prompt_proj(features): the top-down prompt for the vision tower
};

class TextTower : public Module {
 public:
  // embed_dim: output width of text_projection and the prompt head (the vision width).
  TextTower(const TextConfig& config, int64_t embed_dim, DType dtype = DType::f32);

  // tokens [B, context] i32 or i64 (data::Batch::tokens). Throws naming the tokens' shape if
  // the length is not config.context, or an id outside [0, vocab).
  TextOutputs forward(const Tensor& tokens) const;
  // text_projection(LN(x)[:, ctx-1]) before normalisation, [B, E].
  Tensor encode(const Tensor& tokens) const;

  void set_unit_runner(nn::UnitRunner runner) { runner_ = std::move(runner); }
  // The resblocks, in forward order: each is one FSDP unit.
  std::vector<const Module*> sharding_units() const;
  const TextConfig& config() const { return config_; }
  int64_t embed_dim() const { return embed_dim_; }
  const PromptHead& prompt_proj() const { return *prompt_proj_; }

 private:
  TextConfig config_;
  int64_t embed_dim_;
  nn::UnitRunner runner_;
  Tensor token_embedding_, positional_embedding_;  // token_embedding is a module: see .cpp
  std::vector<std::shared_ptr<text_detail::TextBlock>> blocks_;
  std::shared_ptr<text_detail::Norm> ln_final_;
  std::shared_ptr<text_detail::Dense> text_projection_;
  std::shared_ptr<PromptHead> prompt_proj_;
};

}  // namespace hd::ps3
