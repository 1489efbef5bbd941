// Shared pieces of the PS3 model tests: a micro vision config that runs in milliseconds, inputs
// built from one random image per scale (patches cut from them exactly like the data side's
// Batch::patches), parameters randomised so no path is degenerate (zero residuals, 1e-6 layer
// scales), and an f64 conversion of a module's parameters for finite-difference checks.
#pragma once

#include <memory>
#include <vector>

#include "autograd/module.h"
#include "ops/conv.h"
#include "ops/elementwise.h"
#include "ops/factory.h"
#include "ops/index.h"
#include "ops/resample.h"
#include "ops/shape.h"
#include "ps3/vision_model.h"

namespace hd::ps3::testing {

// width 8, depth 2, low-res 28 (2 x 2 tokens), scales {56, 112} (4 x 4 and 8 x 8 grids),
// k = 20 per step split {4, 16}, ConvNeXt over 56 x 56 with stem 28 (2 x 2).
inline VisionConfig micro_config() {
  VisionConfig c;
  c.width = 8;
  c.depth = 2;
  c.heads = 2;
  c.mlp_hidden = 16;
  c.low_res = 28;
  c.scales = {56, 112};
  c.select_layers = {0, 1};
  c.max_select = 20;
  c.selection_res = 56;
  c.convnext_hidden = 4;
  c.convnext_out = 4;
  c.convnext_depth = 1;
  c.convnext_stem = 28;
  return c;
}

// Every parameter in f64, in place (the model then computes in f64).
inline void convert_to_f64(Module& m) {
  m.to_(Device::cpu(), DType::f64);
}

// Adds U(-amp, amp) to every parameter (deterministic per name).
inline void randomize(const Module& m, double amp, uint64_t seed) {
  for (auto& [name, t] : m.named_parameters()) {
    Generator gen(seed, name);
    Tensor noise = uniform(t.shape(), -amp, amp, gen, t.dtype());
    Tensor dst = t.detach();
    add_(dst, noise);
  }
}

// Images of one batch at every resolution the model reads, all from one top-scale image so the
// scales agree like real data: low_res, selection input and per-scale images (bicubic, no AA).
struct MicroImages {
  Tensor low_res, selection;
  std::vector<Tensor> by_scale;  // [B, C, s, s]
  std::vector<int64_t> scales;
  int64_t patch = 14;

  // Patches as data::Batch::patches cuts them: [n, C, p, p] at flat row-major grid indices.
  Tensor patches(int64_t b, int64_t scale, const std::vector<int64_t>& indices) const {
    size_t s = 0;
    while (scales[s] != scale) ++s;
    Tensor img = narrow(by_scale[s], 0, b, 1);
    Tensor cols = unfold2d(img, patch, patch, patch);  // [1, C*p*p, g*g]
    Tensor idx = from_vector<int64_t>(indices, {int64_t(indices.size())});
    Tensor picked = index_select(select(cols, 0, 0), 1, idx);  // [C*p*p, n]
    int64_t C = img.size(1);
    return reshape(contiguous(transpose(picked, 0, 1)), {int64_t(indices.size()), C, patch, patch});
  }
};

inline MicroImages make_images(const VisionConfig& c, int64_t B, uint64_t seed,
                               DType dtype = DType::f32) {
  Generator gen(seed, "ps3-test-image");
  Tensor full = uniform({B, c.channels, c.image_size(), c.image_size()}, -1, 1, gen, dtype);
  MicroImages m;
  m.scales = c.scales;
  m.patch = c.patch;
  auto resize = [&](int64_t s) {
    return s == c.image_size() ? full : interpolate(full, s, s, ResampleMode::bicubic);
  };
  m.low_res = resize(c.low_res);
  m.selection = resize(c.selection_res);
  for (int64_t s : c.scales) m.by_scale.push_back(resize(s));
  return m;
}

// A GT box as the data side gives it: per scale [B, g, g] in {0, 1}; instance b's box covers
// grid-0 cells [y0, y1) x [x0, x1) (scaled to each grid).
inline std::vector<Tensor> box_gt_maps(const VisionConfig& c, int64_t B, int64_t y0, int64_t y1,
                                       int64_t x0, int64_t x1, DType dtype = DType::f32) {
  std::vector<Tensor> maps;
  const int64_t g0 = c.grid(0);
  for (size_t s = 0; s < c.scales.size(); ++s) {
    const int64_t g = c.grid(s), r = g / g0;
    std::vector<float> v(size_t(B * g * g), 0.f);
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t y = y0 * r; y < y1 * r; ++y) {
        for (int64_t x = x0 * r; x < x1 * r; ++x) v[size_t(b * g * g + y * g + x)] = 1.f;
      }
    }
    maps.push_back(to(from_vector<float>(v, {B, g, g}), dtype));
  }
  return maps;
}

inline VisionInputs make_inputs(const MicroImages& images) {
  VisionInputs in;
  in.low_res = images.low_res;
  in.selection = images.selection;
  auto shared = std::make_shared<MicroImages>(images);
  in.patches = [shared](int64_t b, int64_t scale, const std::vector<int64_t>& idx) {
    return shared->patches(b, scale, idx);
  };
  return in;
}

}  // namespace hd::ps3::testing
