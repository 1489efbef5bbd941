// Held-out evaluation of a PS3 model: does it match local captions to their regions, and does
// top-down selection look where the caption points?
//
// Definitions (over the first max_images images of the eval set, every (caption, box) region):
//  * retrieval_top1: the query is a local caption's text embedding (text tower, normalised);
//    the candidates are the region embeddings of ALL regions of all evaluated images, each
//    computed from the image alone, as in pre-training but with no text input: bottom-up
//    selection, GT forcing of that region's box, MAP pooling over its in-box high-res tokens.
//    A query scores a hit when its own region has the highest cosine similarity (ties go to
//    the lower index). retrieval_chance = 1 / #regions (a uniform guess).
//  * selection_share: for each caption, top-down selection with that caption's prompt and NO
//    GT forcing; the share of the selected high-res patches (all scales, all look-close steps)
//    whose patch lies in the caption's box map (data::Batch::gt_map at each scale's grid),
//    averaged over captions. random_share: the expectation of the same share for a uniform
//    random pick of the same number of patches per scale: sum_s n_s f_s / sum_s n_s with n_s
//    the patches the model selected at scale s and f_s the box map's share of grid s.
// No gradients are recorded (NoGradGuard). Images are prepared exactly as the loader does:
// squash resize to S with antialiased bicubic, non-antialiased bicubic views, boxes mapped
// through the same transform; captions are tokenized whole (no sentence masking).
#pragma once

#include <cstdint>

#include "ps3/data/loader.h"
#include "ps3/data/records.h"
#include "ps3/data/text.h"
#include "ps3/pretrain.h"

namespace hd::ps3 {

struct EvalOptions {
  int64_t max_images = 32;
  int64_t look_close_steps = 1;
  data::LoaderOptions loader;  // image_size, low_res, selection_res, norm are used
};

struct EvalResult {
  int64_t images = 0, queries = 0;
  double retrieval_top1 = 0, retrieval_chance = 0;
  double selection_share = 0, random_share = 0;
};

// The model must be unsharded (a plain PS3CLIP, no FSDP runner). Throws naming the eval set if
// it holds no usable local caption, or an image that fails to decode.
EvalResult evaluate_ps3(const PS3CLIP& model, const data::Dataset& eval_set,
                        const data::Tokenizer& tokenizer, const EvalOptions& options);

}  // namespace hd::ps3
