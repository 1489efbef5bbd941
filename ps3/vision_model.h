// The PS3 vision model: stage 1 (low-res pass with per-layer K/V cache), stage 2 (bottom-up and
// top-down selection probabilities), stage 3 (per-scale top-k, selected-patch embedding,
// high-res blocks attending to [low-res cache ; own tokens]) and the MAP pooling head.
// Shapes, formulas and order rules: ps3-reference-implementation.md §1.0-§1.10.
//
// Parameter names follow the HF checkpoints (§4.4, without the "vision_model." prefix):
// trunk.patch_embed.proj.weight, trunk.pos_embed, trunk.blocks.N.*, trunk.norm.*,
// trunk.attn_pool.*, selection_feature_proj.*, prior_prompt, pos_emb_residual.N,
// highres_selection_feature_module.*, prompt_proj_for_highres.*, so released weights load by
// name.
#pragma once

#include <functional>
#include <memory>
#include <vector>

#include "autograd/module.h"
#include "ops/nn/unit_runner.h"
#include "ps3/config.h"

namespace hd::ps3 {

// Produces the [n, C, p, p] f32 patches (normalised like the low-res input) of sample b at
// `scale` pixels for flat row-major grid indices (data::Batch::patches has this signature).
using PatchSource =
    std::function<Tensor(int64_t b, int64_t scale, const std::vector<int64_t>& indices)>;

// B rows, each one image with its prompt; or one image for B prompts (low_res and selection
// with one row, prompt [B, width]): stage 1 and the selection features then run once and are
// broadcast, which is how an evaluation ranks every caption on every image.
struct VisionInputs {
  Tensor low_res;       // [B, C, low_res, low_res] f32 (or [1, ...] with a [B, width] prompt)
  Tensor selection;     // [B, C, selection_res, selection_res] f32
  PatchSource patches;  // high-res patches on demand (never a full high-res image)
  Tensor prompt;        // [B, width] top-down prompt; undefined: bottom-up (prior) only
  // Per high-res scale s: [B, grid(s), grid(s)] f32 in {0,1} = [area(GT, grid(s)) > 0]
  // (data::Batch::gt_map). Empty when there are no boxes.
  std::vector<Tensor> gt_maps;
  bool gt_forcing = false;    // §1.5.9: GT patches get probability 1 before top-k
  bool pool_gt_only = false;  // §1.8: MAP pooling over in-box high-res tokens only
  int64_t look_close_steps = 1;
  // Which block's output VisionOutputs::*_features hold, as an index into HF's hidden_states
  // (VILA's mm_vision_select_layer): k >= 1 is block k-1's output, -1 the last block, -2 the
  // one before (NVILA's choice, ps3-reference-implementation.md §3.3). Pre-final-norm.
  int64_t feature_layer = -1;
  // Extra top-down prompts [R, width], region r compared with row region_rows[r]'s selection
  // features: VisionOutputs::region_probs (stage 2 only; they select nothing). Training uses them
  // to supervise the top-down map with every captioned region of an image (train.posterior_target).
  Tensor region_prompts;
  std::vector<int64_t> region_rows;
  // Patches per scale of each look-close step (VILA-HD's SELECT_NUM_EACH_SCALE, §3.5); empty:
  // split_budget(scales, max_select).
  std::vector<int64_t> select_per_scale;
};

struct VisionOutputs {
  Tensor low_res_tokens;   // [B, 729, W] last block output (pre-final-norm)
  Tensor low_res_pooled;   // [B, W] MAP(LN(low-res tokens)): the global embedding
  Tensor high_res_tokens;  // [B, M, W] all steps, sorted by position (pre-final-norm)
  // [B, M] i64: position of each high-res token in the concatenation of the flattened scale
  // grids (scale 0 row-major, then scale 1, ...), ascending per row.
  Tensor high_res_positions;
  Tensor high_res_pooled;  // [B, W] MAP(LN(high-res tokens)), in-box keys only if pool_gt_only
  // The same tokens at VisionInputs::feature_layer (the tokens above when it is the last block):
  // what VILA-HD's projector reads.
  Tensor low_res_features;   // [B, 729, W]
  Tensor high_res_features;  // [B, M, W], ordered as high_res_tokens
  // Per high-res scale, [B, grid(s), grid(s)]:
  std::vector<Tensor> prior_probs;      // bottom-up probabilities (differentiable)
  std::vector<Tensor> posterior_probs;  // top-down (empty without a prompt)
  std::vector<Tensor> region_probs;     // [R, g, g] for VisionInputs::region_prompts
  std::vector<Tensor> selection_maps;   // f32 0/1, union over steps
};

class PS3VisionModel : public Module {
 public:
  explicit PS3VisionModel(const VisionConfig& config);
  VisionOutputs forward(const VisionInputs& inputs) const;
  // Every transformer block call goes through this (FSDP installs one); see unit_runner.h.
  void set_unit_runner(nn::UnitRunner runner) { runner_ = std::move(runner); }
  // Recompute each transformer block in backward (VisionConfig::activation_checkpointing).
  void set_activation_checkpointing(bool on);
  // Modules that are their own FSDP units (the transformer blocks), in forward order.
  std::vector<const Module*> sharding_units() const;
  const VisionConfig& config() const { return config_; }

 private:
  VisionConfig config_;
  nn::UnitRunner runner_;
  // The implementation owns its submodules (trunk, selection, ...); see vision_model.cpp.
  struct Parts;
  std::shared_ptr<Parts> parts_;
};

// Budget of one look-close step split across scales in proportion to pixel count (floored,
// remainder to the last scale): {756, 1512, 3780} with 2560 -> {85, 341, 2134}.
std::vector<int64_t> split_budget(const std::vector<int64_t>& scales, int64_t total);

}  // namespace hd::ps3
