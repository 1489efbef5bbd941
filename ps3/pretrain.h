// The PS3 CLIP-style model (vision + text towers + logit scale/bias) and one pre-training
// forward: stage 1-3 on a batch, mixed global/local sigmoid contrast with every rank's texts as
// negatives, and the bottom-up / top-down selection BCE (ps3-reference-implementation.md §2.2,
// §2.3). The launcher's trainer owns the loop, FSDP, optimizer, checkpoints and metrics.
#pragma once

#include <memory>
#include <string>

#include "autograd/module.h"
#include "ops/nn/unit_runner.h"
#include "ps3/config.h"
#include "ps3/selection_loss.h"
#include "ps3/vision_model.h"

namespace hd::data {
struct Batch;
}
namespace hd::parallel {
class ProcessGroup;
}

namespace hd::ps3 {

class TextTower;  // ps3/text_tower.h

// Names as the HF checkpoint: vision_model.*, text_model.* (incl. text_model.prompt_proj.*),
// logit_scale, logit_bias.
class PS3CLIP : public Module {
 public:
  explicit PS3CLIP(const PS3Config& config);
  const PS3Config& config() const { return config_; }
  PS3VisionModel& vision() const { return *vision_; }
  TextTower& text() const { return *text_; }
  // Installs the runner on both towers, and for the model itself: pretrain_forward runs its
  // whole body as run_unit(runner, *this, ...), so with shard_ps3's runner the root FSDP unit
  // wraps every step without the trainer having to know about it.
  void set_unit_runner(const nn::UnitRunner& runner);
  const nn::UnitRunner& unit_runner() const { return runner_; }
  // Every FSDP unit below the root (vision blocks, text blocks), in forward order.
  std::vector<const Module*> sharding_units() const;
  // After each optimizer step: logit_scale <- clamp(logit_scale, 0, ln 100) (§2.3). Works on
  // whatever tensor holds the value (the full parameter or an FSDP shard): pass it in.
  static void clamp_logit_scale(Tensor& logit_scale_storage);

  Tensor logit_scale, logit_bias;  // scalars

 private:
  PS3Config config_;
  nn::UnitRunner runner_;
  std::shared_ptr<PS3VisionModel> vision_;
  std::shared_ptr<TextTower> text_;
};

// The selection modules (stage 2 and the prompt heads that feed it), by checkpoint name:
// vision_model.{selection_feature_proj, highres_selection_feature_module,
// prompt_proj_for_highres, prior_prompt} and text_model.prompt_proj. They learn only from the
// selection losses (top-k is not differentiable), so their gradient norm is the health signal of
// selection learning.
bool is_selection_parameter(const std::string& name);

struct PretrainOptions {
  int64_t look_close_steps = 1;
  bool gt_forcing = true;    // --select_w_gt
  bool pool_gt_only = true;  // --pool_gt_token_only
  double prior_weight = 1.0, posterior_weight = 1.0;
  SelectionLoss selection_loss = SelectionLoss::bce;  // selection_loss.h
  // Target of the bottom-up (prior) BCE. The reference uses each row's caption box, so an image
  // with several captioned regions teaches the prior that each region is background in the rows
  // of the other captions. all_regions uses every captioned region of the row's image
  // (data::Batch::salient_boxes): what bottom-up selection is meant to find.
  bool prior_all_regions = false;
  // Target of the top-down (posterior) BCE. The reference: each row's caption prompt against its
  // box. all_regions: the caption of every captioned region of the row's image, each against its
  // own box (data::Batch::region_tokens; stage 2 only, the extra prompts select nothing), so an
  // image teaches the prompt head and the text tower about all its regions in one step.
  bool posterior_all_regions = false;
};

// Loss terms are this rank's share: their mean over ranks is the value one process holding the
// whole global batch would compute (global normalisers; contrastive_loss.h, selection_loss.h).
// On one process they are the plain values.
struct PretrainResult {
  Tensor loss;  // scalar, differentiable: contrastive + weighted BCEs
  double contrastive = 0, bce_prior = 0, bce_posterior = 0;
  int64_t local_rows = 0, global_rows = 0;
  int64_t selected_patches = 0;  // high-res tokens this step (all rows of this rank)
  // Share of selected patches inside the GT boxes over local rows (forced ones included).
  double gt_patch_share = 0;
  // Mean selection probability inside / outside the GT box cells over local rows, on the first
  // high-res scale's map, for the prior and the posterior (NaN without local rows): the signal
  // that shows a map collapsing (both -> sigmoid(-5)) or learning (in > out).
  double prior_in_box = 0, prior_outside = 0, posterior_in_box = 0, posterior_outside = 0;
};

// One forward on this rank's batch. `pg` (may be null for one process) provides the text
// exchange: every rank's text embeddings join the contrast as negatives, with gradients flowing
// back to their owners. Collective when pg is given: every rank must call it every step.
// The batch needs tokens, low_res, selection, images and boxes (data::Loader with a tokenizer
// and selection_res = vision.selection_res), at least one image per rank.
PretrainResult pretrain_forward(const PS3CLIP& model, const data::Batch& batch,
                                const PretrainOptions& options, parallel::ProcessGroup* pg);

}  // namespace hd::ps3
