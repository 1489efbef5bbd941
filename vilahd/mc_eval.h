// The 4KPro-style benchmark in miniature: multiple-choice questions about held-out 4K images
// (eval_mc.jsonl), scored two ways per question:
//   accuracy     the option whose answer tokens (+ <|im_end|>) have the lowest mean negative
//                log-likelihood after the prompt (the image and the question); the prompt runs
//                once, each option continues its KV cache.
//   exact match  the greedy answer (up to 8 tokens, stop at <|im_end|>) equals the right option,
//                ignoring case and surrounding spaces.
// and, where the model selected patches, the share of the question's GT-box patches it picked
// (recall over all scales), next to the share a random pick of the same size would get.
//
// Modes are the ablations of one report: low-res only (no high-res tokens), bottom-up, top-down
// with N look-close steps, and a per-scale budget (resolution 756 / 1512 / 3780 with the same
// total, by giving the whole budget to the first scales).
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "ps3/data/records.h"
#include "vilahd/sft_data.h"
#include "vilahd/text/bpe_tokenizer.h"
#include "vilahd/vila_hd.h"

namespace hd::vilahd {

struct McMode {
  std::string name;
  LookCloseMode look_close_mode = LookCloseMode::after_prompt;
  int64_t num_look_close = 1;             // 0: low-res tokens only
  std::vector<int64_t> select_per_scale;  // empty: the model's
};

struct McQuestion {
  int64_t chosen = -1;   // by likelihood
  bool correct = false;  // chosen == answer
  bool exact = false;    // generated answer == the right option
  std::string generated;
  double gt_recall = -1;  // -1: no box or no selection
  double random_recall = -1;
  int64_t image_tokens = 0;
};

struct McModeResult {
  McMode mode;
  std::vector<McQuestion> questions;
  double accuracy = 0, exact_match = 0;
  double gt_recall = -1, random_recall = -1;  // means over questions with a box (-1: none)
  double mean_image_tokens = 0;
  double seconds = 0;
};

McModeResult evaluate_mc(VilaHdModel& model, const BpeTokenizer& tokenizer,
                         const std::vector<data::McRecord>& records,
                         const std::filesystem::path& data_root, ImageCache& images,
                         const McMode& mode);

// The default ablation set for `model`: low-res only; bottom-up; top-down with look-close
// 1..max_look_close (top-down needs a prompt head); and for the model's budget, resolution
// 756 / 1512 / 3780 top-down (bottom-up without a prompt head) with the same total per step.
std::vector<McMode> default_mc_modes(const VilaHdModel& model, int64_t max_look_close);

std::string mc_report_table(const std::vector<McModeResult>& results);
// `chance`: the expected accuracy of a random choice (mc_chance).
std::string mc_report_json(const std::vector<McModeResult>& results, int64_t questions,
                           double chance);
// Mean over the questions of 1 / (number of options).
double mc_chance(const std::vector<data::McRecord>& records);

}  // namespace hd::vilahd
