// VILA-HD: an LLM that asks PS3 where to look (ps3-reference-implementation.md §3).
//
// One image, as the reference does it:
//  1. PS3 stage 1 on the low-res image; the projector turns the 27x27 low-res features (at
//     mm_vision_select_layer, pre-final-norm) into 14x14 LLM tokens.
//  2. Top-down (after_prompt, §3.2): the LLM runs, without gradient, on the conversation with
//     low-res image tokens only, cut after the last token of the first user turn; its final-norm
//     hidden state there goes through the prompt head and becomes PS3's prompt. Bottom-up
//     (after_image): PS3's prior ranks the patches.
//  3. PS3 selects num_look_close x (per-scale budget) high-res patches and encodes them against
//     the low-res KV cache; each scale's dense grid goes through the projector and only fully
//     selected 2x2 windows are kept (one placeholder token when none survive).
//  4. At the image's place in the text: [low-res tokens][scale 0 kept]...[scale n kept]["\n"].
// Gradients: the LM loss reaches the LLM, the projector and PS3's tokens; the prompt head and
// PS3's selection modules learn only from the selection loss (BCE + DICE against the boxes,
// §3.7), because top-k is not differentiable and the prompt pass runs without gradient.
//
// Parameter names: llm.* (Qwen2, HF names below), mm_projector.* (VILA's), vision_tower.* (PS3's),
// so a VILA-HD folder imports by sub-folder (vila_checkpoint.h).
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "ps3/vision_model.h"
#include "vilahd/generation.h"
#include "vilahd/projector.h"
#include "vilahd/qwen2.h"
#include "vilahd/vila_config.h"
#include "vilahd/vision_memo.h"

namespace hd::vilahd {

inline constexpr int64_t kImageToken = -200;  // VILA's IMAGE_TOKEN_INDEX: one per <image>

struct VilaImage {
  // One image (B = 1): low-res, selection input and patch source. The model sets the prompt,
  // look-close steps, feature layer and budget itself.
  ps3::VisionInputs inputs;
  // Selection supervision: per PS3 scale [1, g, g] in {0, 1} (empty: no box for this image).
  std::vector<Tensor> gt_maps;
  // Identity of (image, box) for the vision memo (VisionMemo); empty: never memoized.
  std::string memo_key;
};

struct VilaSample {
  std::vector<int64_t> input_ids;  // text ids with kImageToken where each image goes
  std::vector<int64_t> labels;     // same length, -100 = no loss; empty: no LM loss
  // Index in input_ids of the last token of the first user turn (§3.2.1); needed for
  // after_prompt. conversation.h computes it from the chat template.
  int64_t prompt_position = -1;
  std::vector<VilaImage> images;  // one per kImageToken, in order
};

// What the model did with one image (for pictures, tests and the evaluation).
struct ImageLook {
  Tensor prompt;                       // [1, W] PS3 prompt (after_prompt), else undefined
  std::vector<Tensor> ranking;         // per scale [1, g, g]: posterior (top-down) or prior
  std::vector<Tensor> selection_maps;  // per scale [1, g, g] 0/1, union over look-close steps
  ProjectedImage projected;            // LLM tokens and the kept windows
};

struct VilaOutputs {
  Tensor loss;            // lm_loss + token_selection_loss_weight * selection_loss
  Tensor lm_loss;         // undefined when no sample has labels
  Tensor selection_loss;  // undefined when no image has a box
  std::vector<std::vector<ImageLook>> looks;  // per sample, per image
};

class VilaHdModel : public Module {
 public:
  explicit VilaHdModel(const VilaHdConfig& config);

  // The LLM input of one sample, [T, D], with each image spliced in (runs PS3 and, for
  // after_prompt, the prompt pass). `labels_out` gets the labels aligned with it (-100 at image
  // tokens); `looks` what each image selected. num_look_close < 0: the config's.
  Tensor embed_sample(const VilaSample& sample, int64_t num_look_close,
                      std::vector<int64_t>* labels_out, std::vector<ImageLook>* looks) const;

  // Training-style forward over a batch (right-padded): LM loss over the labels and the
  // selection loss over the images with boxes.
  VilaOutputs forward(const std::vector<VilaSample>& batch) const;

  struct Answer {
    std::vector<int64_t> tokens;
    bool stopped = false;
    std::vector<ImageLook> looks;
  };
  // Generates the continuation of `prompt` (its ids end with the assistant header).
  Answer answer(const VilaSample& prompt, const GenerationOptions& options,
                int64_t num_look_close = -1) const;

  // The PS3 prompt from the LLM for `sample` (after_prompt): [1, W] per image position rule.
  Tensor top_down_prompt(const VilaSample& sample) const;

  const VilaHdConfig& config() const { return config_; }
  // Inference switches that do not change the parameters: bottom-up works with any checkpoint;
  // top-down needs the prompt head (a model built for after_prompt). Throws otherwise.
  void set_look_close_mode(LookCloseMode mode);
  void set_num_look_close(int64_t steps);
  void set_select_num_each_scale(const std::vector<int64_t>& per_scale);  // empty: PS3's split
  // Recompute the LLM's decoder layers / PS3's blocks in backward (autograd/checkpoint.h): the
  // same gradients for about one more forward of those parts.
  void set_activation_checkpointing(bool llm, bool vision);
  // Teacher forcing (train_w_gt_selection_map, §3.7): an image with GT maps gets its box's
  // patches selected first (probability 1 before top-k, §1.5.9), so the LLM learns to read the
  // region while the selection is still learning to find it. Images without a box: unchanged.
  void set_train_with_gt_selection(bool on) { train_with_gt_selection_ = on; }
  // A departure from the reference (which runs the prompt pass without gradient): the selection
  // loss also trains the LLM through the prompt pass, so that a from-scratch LLM learns to put
  // the question into the hidden state the prompt head reads (docs/vilahd.md). Off by default.
  void set_prompt_pass_grad(bool on) { prompt_pass_grad_ = on; }
  // With a memo, images with a memo_key run PS3 once (no prompt: the prompt pass is skipped and
  // selection is bottom-up, or teacher-forced); later looks reuse the outputs. nullptr: off.
  // Throws when a vision-tower parameter is trainable.
  void set_vision_memo(std::shared_ptr<VisionMemo> memo);
  // Runs PS3 for every image of `batch` not yet in the memo, inside the root unit as forward
  // does, and keeps the memo-keyed ones; an image without a memo_key runs and is dropped (a
  // padding pass: under FSDP every rank must run PS3 the same number of times).
  void fill_vision_memo(const std::vector<VilaSample>& batch) const;
  // The memo's key for `image` with the model's default look-close steps: its memo_key, whether
  // it is teacher-forced (GT maps and forcing on) and the step count. Empty without a memo_key.
  std::string vision_memo_key(const VilaImage& image) const;
  Qwen2ForCausalLM& llm() const { return *llm_; }
  MlpDownsampleProjector& projector() const { return *projector_; }
  ps3::PS3VisionModel& vision() const { return *vision_; }
  // FSDP units: every LLM layer and every PS3 block (the root keeps the rest).
  std::vector<const Module*> sharding_units() const;
  void set_unit_runner(const nn::UnitRunner& runner);

 private:
  // Low-res tokens of one image for the prompt pass (no high-res, no gradient).
  Tensor low_res_only_tokens(const VilaImage& image) const;
  ImageLook look(const VilaImage& image, const Tensor& prompt, int64_t num_look_close) const;
  std::string memo_key(const VilaImage& image, int64_t num_look_close) const;
  void forward_inside_root(const std::vector<VilaSample>& batch, VilaOutputs& out) const;

  VilaHdConfig config_;
  std::shared_ptr<Qwen2ForCausalLM> llm_;
  std::shared_ptr<MlpDownsampleProjector> projector_;
  std::shared_ptr<ps3::PS3VisionModel> vision_;
  nn::UnitRunner runner_;  // forward runs inside the root unit (parallelize.h)
  bool train_with_gt_selection_ = false;
  bool prompt_pass_grad_ = false;
  std::shared_ptr<VisionMemo> memo_;
};

// §3.7 for one image: mean over scales of BCE(p_s, g_s) + DICE(p_s, g_s).
Tensor image_selection_loss(const std::vector<Tensor>& probs, const std::vector<Tensor>& gt_maps);

}  // namespace hd::vilahd
