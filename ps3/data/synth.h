// The synthetic 4K dataset: the built-in default for the demo, the tests and the benchmarks.
//
// Each R x R image has a textured, cluttered background and 2-5 small salient regions: signs
// with a 2-digit number or a 4-letter word drawn with a 5x7 bitmap font, and small coloured
// shapes. At R = 3780 a glyph is 15-20 px tall (legible); after the 10x downsample to 378 it is
// under 2 px (illegible), while the colour blob stays visible: a model needs the high-res
// patches to answer, and the low-res view to know where to look. Clutter (blank signs, shapes
// in muted colours, large panels) keeps the selection task from being "find any colour".
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ps3/data/image.h"
#include "ps3/data/records.h"

namespace hd::data {

struct SynthRegion {
  std::string kind;    // "number", "word", "shape"
  std::string colour;  // unique within an image
  std::string detail;  // "47", "EXIT", "triangle": readable only at high resolution
  Box box;
  std::string caption;               // "a red sign reading 47"
  std::string question;              // "What number is on the red sign?"
  std::vector<std::string> options;  // 4, options[answer] == detail
  int answer = 0;
};

struct SynthImage {
  Image image;
  std::vector<SynthRegion> regions;
  std::string global_caption;
};

// Where the salient regions stand out.
//  kBoards (default): each detail (number, word, small shape; ~20 px glyphs at 3780) is drawn in
//    ink on a coloured sign of 75-111 px at 3780 (7-11 px at 378: visible at low res, one low-res
//    cell or two), on a muted, grey-tinted background with grey blank signs and panels as clutter.
//  kTinySigns: the first generator: the sign is its text plus a 2-glyph-pixel margin (median
//    60 x 36 px at 3780, ~4 x 3 px at 378) and shapes are 27-36 px blobs, on a background of any
//    hue. Kept to reproduce earlier measurements (docs/training.md, "Selection").
//  kPatterns: the boards scene, but every sign carries a fine two-tone pattern (horizontal,
//    vertical or diagonal stripes, or a checkerboard; period 6 px at 3780, half ink, half sign
//    colour). At 378 and 756 every pattern blends into the same flat tint, at 1512 (2.4 px
//    period) it aliases, at 3780 it is plain: a detail only high res shows, and one the demo's
//    tiny PS3 can encode after minutes of CPU training, which 5x7 glyphs are not (measured with
//    linear/MLP probes, docs/pipeline.md).
//  kOnePattern: kPatterns with a single coloured sign per image (the grey distractors stay),
//    twice as large (151-222 px at 3780), and half the signs with bands twice as wide (period
//    12 px: plain at 1512, aliased at 756). A question needs the pattern read at high res but
//    not told apart from other signs' patterns, which the demo's from-scratch 2-layer LLM
//    learns in ~600 steps where kPatterns takes it ~3500 (docs/vilahd.md). The staged demo
//    (configs/pipeline-demo) uses it.
enum class SynthLayout { kBoards, kTinySigns, kPatterns, kOnePattern };
// "boards" | "tiny_signs" | "patterns" | "one_pattern"
SynthLayout parse_synth_layout(const std::string& name);

// Image `index` of the dataset with `seed`: a pure function of its arguments.
// `max_regions` caps the salient regions of the multi-sign layouts: an image gets
// min(2, max_regions)..max_regions of them (2-5 by default). Fewer regions per image put more of
// them within one look-close step's budget (docs/training.md, "Selection").
SynthImage synth_image(int64_t index, int64_t resolution, uint64_t seed,
                       SynthLayout layout = SynthLayout::kBoards, int max_regions = 5);

struct SynthOptions {
  std::string out;
  int64_t images = 64;
  int64_t eval_images = -1;  // held-out multiple-choice split; -1: max(4, images / 8)
  int64_t resolution = 3780;
  uint64_t seed = 0;
  bool tar = false;         // webdataset shards instead of a folder of pairs
  int64_t shard_size = 16;  // images per shard
  bool png = false;         // JPEG (quality 92, 4:4:4) by default: 5x faster to write and read
  int threads = 2;
  SynthLayout layout = SynthLayout::kBoards;
  int max_regions = 5;  // 1..5; see synth_image
};

// Writes out/train (PS3 layout), out/eval (held-out images, same layout), out/sft.jsonl (one
// record per training region) and out/eval_mc.jsonl (one multiple-choice question per eval
// region). Image paths in the JSON-lines files are relative to `out`.
void synth_dataset(const SynthOptions& opt);

}  // namespace hd::data
