// A micro PS3 (width 16, 2 blocks, low-res 28, scales {56, 112}) and synthetic batches for the
// pre-training tests: small enough that a step takes milliseconds on one core, yet with every
// stage present (two high-res scales, a ConvNeXt selection encoder, GT forcing, in-box pooling).
#pragma once

#include <memory>
#include <vector>

#include "autograd/tensor.h"
#include "ps3/config.h"
#include "ps3/data/geometry.h"
#include "ps3/data/loader.h"
#include "ps3/data/resize.h"
#include "ps3/data/synth.h"

namespace hd::ps3::testing {

inline PS3Config micro_config() {
  PS3Config c;
  VisionConfig& v = c.vision;
  v.width = 16;
  v.depth = 2;
  v.heads = 2;
  v.mlp_hidden = 32;
  v.low_res = 28;
  v.scales = {56, 112};
  v.select_layers = {0, 1};
  v.max_select = 10;  // split {2, 8}
  v.selection_res = 112;
  v.convnext_hidden = 8;
  v.convnext_out = 8;
  v.convnext_depth = 1;
  v.convnext_stem = 28;
  TextConfig& t = c.text;
  t.vocab = 20;
  t.context = 6;
  t.width = 16;
  t.depth = 1;
  t.heads = 2;
  t.mlp_hidden = 32;
  return c;
}

// Sample `index` of a fixed synthetic global batch: a synth image at 112 px, a box that moves
// with the index, every third sample global (box = whole image), tokens that depend on the
// index. A pure function of `index`.
struct MicroSample {
  std::shared_ptr<const data::Image> image;
  data::Box box;
  bool is_global = false;
  std::vector<int32_t> tokens;
};

inline MicroSample micro_sample(int64_t index, int64_t size = 112, int64_t ctx = 6,
                                int64_t vocab = 20) {
  MicroSample s;
  s.image = std::make_shared<data::Image>(data::synth_image(index, size, 7).image);
  s.is_global = index % 3 == 2;
  const float x = float(8 + (index * 23) % 60), y = float(10 + (index * 37) % 50);
  s.box = s.is_global ? data::Box{0, 0, float(size), float(size)} : data::Box{x, y, x + 30, y + 24};
  for (int64_t k = 0; k < ctx; ++k)
    s.tokens.push_back(k >= ctx - 2 ? 0 : int32_t(1 + (index * 7 + k * 3) % (vocab - 1)));
  return s;
}

// Samples [first, first + n) as a data::Batch, built like the loader does (squash-free: the
// images are already S x S; low-res and selection views by the loader's resample path).
inline data::Batch micro_batch(int64_t first, int64_t n, const PS3Config& c = micro_config()) {
  data::Batch b;
  const int64_t S = c.vision.image_size(), L = c.vision.low_res, R = c.vision.selection_res;
  const int64_t ctx = c.text.context;
  b.size = S;
  b.low_res = Tensor::empty({n, 3, L, L});
  b.selection = Tensor::empty({n, 3, R, R});
  b.tokens = Tensor::empty({n, ctx}, DType::i32);
  for (int64_t i = 0; i < n; ++i) {
    MicroSample s = micro_sample(first + i, S, ctx, c.text.vocab);
    b.image_ids.push_back(first + i);
    b.is_global.push_back(s.is_global);
    b.boxes.push_back({s.box});
    b.texts.push_back("sample " + std::to_string(first + i));
    b.images.push_back(s.image);
    data::resample_region(*s.image, L, L, 0, L, 0, L, b.norm,
                          b.low_res.data<float>() + i * 3 * L * L);
    data::resample_region(*s.image, R, R, 0, R, 0, R, b.norm,
                          b.selection.data<float>() + i * 3 * R * R);
    for (int64_t k = 0; k < ctx; ++k) b.tokens.data<int32_t>()[i * ctx + k] = s.tokens[size_t(k)];
  }
  return b;
}

// Row `row` of a batch's caption tokens (what a salient region's caption is in these tests).
inline std::vector<int32_t> row_tokens(const data::Batch& b, int64_t row) {
  const int64_t ctx = b.tokens.size(1);
  const int32_t* t = b.tokens.data<int32_t>() + row * ctx;
  return std::vector<int32_t>(t, t + ctx);
}

}  // namespace hd::ps3::testing
