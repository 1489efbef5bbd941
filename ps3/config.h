// PS3 model configuration: the vision tower (SigLIP-style ViT + selection + high-res stage) and
// the text tower, from a tiny CPU config to the paper's SO400M scale.
// Numbers and their sources: ../shared/reference/ps3-reference-implementation.md §1.1, §1.9.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

namespace hd::ps3 {

struct VisionConfig {
  int64_t width = 1152;
  int64_t depth = 27;
  int64_t heads = 16;
  int64_t mlp_hidden = 4304;
  int64_t patch = 14;
  int64_t channels = 3;
  int64_t low_res = 378;                                // stage 1 input side (27 x 27 tokens)
  std::vector<int64_t> scales = {756, 1512, 3780};      // high-res scales, ascending
  std::vector<int64_t> select_layers = {0, 9, 18, 26};  // block outputs feeding selection
  int64_t max_select = 2560;                            // patches per look-close step
  int64_t selection_res = 1512;                         // input side of the light ConvNeXt
  int64_t convnext_hidden = 512;
  int64_t convnext_out = 512;
  int64_t convnext_depth = 3;
  int64_t convnext_stem = 28;  // kernel = stride of the ConvNeXt stem
  double ln_eps = 1e-6;
  // Recompute each block's activations in backward (autograd/checkpoint.h): the low-res and
  // high-res passes keep one block input per block instead of every block's activations.
  bool activation_checkpointing = false;

  int64_t low_grid() const { return low_res / patch; }
  int64_t grid(size_t scale_index) const { return scales.at(scale_index) / patch; }
  int64_t image_size() const { return scales.empty() ? low_res : scales.back(); }
  // Throws hd::Error naming the first inconsistent field ("vision.<field>: ..."); the vision
  // model checks its config with this, PS3Config::validate adds the text tower and the link.
  void validate() const;
};

struct TextConfig {
  int64_t vocab = 32000;
  int64_t context = 64;
  int64_t width = 1152;
  int64_t depth = 27;
  int64_t heads = 16;
  int64_t mlp_hidden = 4304;
  bool gelu_tanh = false;  // SigLIP2's text tower uses the tanh approximation
  double ln_eps = 1e-6;
  bool activation_checkpointing = false;  // recompute each block in backward
};

struct PS3Config {
  VisionConfig vision;
  TextConfig text;
  double init_logit_scale = std::log(10.0);  // log space; clamped to [0, ln 100] after steps
  double init_logit_bias = -10.0;

  // Throws hd::Error naming the first inconsistent field (e.g. "vision.select_layers: 30 is
  // not below vision.depth = 27").
  void validate() const;

  // Tiny model on the synthetic 3780 data: width 64, 4 blocks, k = 256 per step (8/34/214).
  static PS3Config demo(int64_t vocab);
  // Paper scale, SigLIP SO400M/14: 1.5K = scales {756, 1512}, 4K = {756, 1512, 3780}.
  static PS3Config paper_1p5k();
  static PS3Config paper_4k();
};

}  // namespace hd::ps3
