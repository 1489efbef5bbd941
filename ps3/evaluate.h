// Held-out evaluation of a PS3 model: does selection look where it should, and does the model
// match local captions to their regions?
//
// Selection (the point of PS3). Over the first max_images images of the eval set:
//  * top-down: for every usable (caption, box) region, selection with that caption's prompt and
//    NO GT forcing; measured against that caption's box;
//  * bottom-up: one selection per image with the learned prior (no prompt, no forcing); measured
//    against the union of the image's region boxes (the salient regions).
// At each high-res scale s, with box_s the box map at grid s (data::Batch::gt_map) and sel_s the
// patches selected over all look-close steps:
//    recall_s    = |sel_s ∩ box_s| / |box_s|   (share of the box's patches that were picked)
//    precision_s = |sel_s ∩ box_s| / |sel_s|   (share of the picked patches inside the box)
// "all" pools the counts over scales. Each is averaged over queries (images for bottom-up).
// The random baseline is the expectation for a uniform random pick of the same number of
// patches per scale: recall n_s / cells_s, precision |box_s| / cells_s.
// The ceiling is the same recall for the best map the model could output: a low-res grid map that
// ranks cells by how many of the box's patches they hold at that scale, selected with the same
// budgets, look-close steps and tie rule. It shows what the budget allows: a box spread over more
// low-res cells than the budget covers cannot reach recall 1 with any map.
// Probability statistics on the low-res grid map (before per-scale upsampling): mean and max
// inside vs outside the box cells (gt_map at the low-res grid > 0), and the AUC (the chance that
// a random in-box cell scores above a random outside cell, ties counting half): a flat map has
// AUC 0.5 and equal means, whatever its level.
//
// Where top-down looks first (the failure analysis of a miss): for each query, the low-res cell
// with the highest posterior lands in the caption's own box, in another region of the same image
// (the prompt picked the wrong sign), or elsewhere (clutter or background); and the rank of the
// box's best cell among all cells (0 = first), whose median says how far a miss is from a hit.
//
// Retrieval:
//  * forced (region level): candidates are the region embeddings of ALL regions of all evaluated
//    images, each from the image alone with GT forcing of that region's box and MAP pooling over
//    its in-box tokens (as in pre-training, no text input); chance = 1 / #regions.
//  * top-down (image level, no forcing): for caption q and image j, selection on j with q's
//    prompt, MAP pooling over every selected patch, score = cos(pooled, text_q); a hit when q's
//    own image scores highest; chance = 1 / #images. This is what a user of the encoder gets.
// No gradients are recorded (NoGradGuard). Images are prepared exactly as the loader does:
// squash resize to S with antialiased bicubic, non-antialiased bicubic views, boxes mapped
// through the same transform; captions are processed whole (no sentence masking).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ps3/data/loader.h"
#include "ps3/data/records.h"
#include "ps3/data/text.h"
#include "ps3/pretrain.h"

namespace hd::ps3 {

struct EvalOptions {
  int64_t max_images = 32;
  int64_t look_close_steps = 1;
  // Image-level retrieval without forcing costs one forward of #captions rows per image; this
  // caps the images it uses (0: all evaluated images).
  int64_t retrieval_max_images = 0;
  // When set, the top-down selection of the first png_count captions is drawn into this folder
  // (td_<image>_<caption>.png: the image with each scale's picks and the caption's box) and the
  // bottom-up selection of their images (bu_<image>.png), so a person sees where the model looked.
  std::string png_dir;
  int64_t png_count = 8;
  data::LoaderOptions loader;  // image_size, low_res, selection_res, norm are used
};

// Recall/precision of one selection mode, per high-res scale and pooled over scales ("all").
struct SelectionScores {
  std::vector<double> recall, precision, random_recall, random_precision;  // per scale
  std::vector<double> ceiling_recall;                                      // per scale
  double recall_all = 0, precision_all = 0, random_recall_all = 0, random_precision_all = 0;
  double ceiling_recall_all = 0;
  int64_t queries = 0;
};

// The low-res grid probability map inside vs outside the box cells, averaged over queries.
struct ProbStats {
  double mean_in = 0, mean_out = 0, max_in = 0, max_out = 0, auc = 0;
};

// Where one query's highest low-res cell lands, and the number of cells scoring above the box's
// best cell (-1 when the box holds no low-res cell). scale0_probs: [B, g0, g0], the first
// scale's nearest-upsampled map, read at the first fine cell of each low-res cell; own_low: the
// caption's box map [B, G, G]; salient_low: row 0 = the union of the image's boxes [1, G, G].
enum class FirstPickPlace { own_box, other_region, elsewhere };
struct QueryFirstPick {
  FirstPickPlace place = FirstPickPlace::elsewhere;
  int64_t box_rank = -1;
};
QueryFirstPick first_pick(const Tensor& scale0_probs, const Tensor& own_low,
                          const Tensor& salient_low, int64_t row);

// Shares of queries whose top-ranked low-res cell lies in each place; see the header note.
struct FirstPick {
  double own_box = 0, other_region = 0, elsewhere = 0;
  double median_box_rank = 0;
};

struct EvalResult {
  int64_t images = 0, queries = 0;
  std::vector<int64_t> scales;
  double retrieval_forced_top1 = 0, retrieval_forced_chance = 0;
  double retrieval_topdown_top1 = 0, retrieval_topdown_chance = 0;
  int64_t retrieval_topdown_images = 0;
  SelectionScores top_down, bottom_up;
  ProbStats top_down_probs, bottom_up_probs;
  FirstPick top_down_first_pick;
};

// The model must be unsharded (a plain PS3CLIP, no FSDP runner). Throws naming the eval set if
// it holds no usable local caption, or an image that fails to decode.
EvalResult evaluate_ps3(const PS3CLIP& model, const data::Dataset& eval_set,
                        const data::Tokenizer& tokenizer, const EvalOptions& options);

// The console table (what a person reads at the end of a run) and the JSON document (what a
// script or a later comparison reads), both from one result.
std::string eval_table(const EvalResult& r);
std::string eval_json(const EvalResult& r);

}  // namespace hd::ps3
