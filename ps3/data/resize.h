// Resampling straight from uint8 images, one output region at a time.
//
// The reference pipeline (ps3-reference-implementation.md §1.3) squash-resizes the decoded image
// to S x S with Pillow's antialiased bicubic (kept uint8 here, as Pillow does), then derives every
// scale from that S x S image with PyTorch's non-antialiased bicubic. Those per-axis weights come
// from ops/resample.h (the exact PyTorch matrices) and are stored sparsely as taps, so a 14 x 14
// patch at the 3780 scale, or the 378 x 378 low-res view, touches only the source pixels it
// needs: the full float image at S is never built.
#pragma once

#include <cstdint>
#include <vector>

#include "ops/resample.h"
#include "ps3/data/image.h"

namespace hd::data {

// Sparse rows of a [out, in] resampling matrix: output i = sum_k w[i*max_taps+k] *
// input[first[i]+k] for k < count[i].
struct Taps {
  int64_t in = 0, out = 0;
  int max_taps = 0;
  std::vector<int64_t> first;
  std::vector<int> count;
  std::vector<float> w;
};

// Cached (thread-safe): a loader asks for the same few sizes millions of times.
const Taps& taps(int64_t in, int64_t out, ResampleMode mode, bool antialias);

// Crop [y0, y0+h) x [x0, x0+w) of `src` and resize it to out_h x out_w with antialiased bicubic,
// bit for bit what Pillow's Image.crop(box).resize(size, BICUBIC) gives (the a = -0.5 kernel in
// 22-bit fixed point, horizontal pass first, uint8 between the passes; tested against Pillow in
// tests/ps3/data/pillow_resize_test.cpp). An axis whose size does not change is copied.
Image resize_aa_bicubic(const Image& src, int64_t y0, int64_t x0, int64_t h, int64_t w,
                        int64_t out_h, int64_t out_w);

// Affine map applied to each resampled value v (0..255): v * scale + bias. The PS3 processor's
// /255 then normalise((v - mean) / std) is scale = 1 / (255 std), bias = -mean / std; resampling
// is linear with weights summing to 1, so normalising after resampling is the same map.
struct Normalize {
  float scale = 1.0f / 127.5f;  // SigLIP: mean 0.5, std 0.5
  float bias = -1.0f;
};

// Rows [y0, y1) and columns [x0, x1) of `src` resized (non-antialiased bicubic, a = -0.75, the
// PyTorch rule) to out x out, written planar to dst as [3][y1 - y0][x1 - x0] floats.
void resample_region(const Image& src, int64_t out_h, int64_t out_w, int64_t y0, int64_t y1,
                     int64_t x0, int64_t x1, Normalize norm, float* dst);
// The same values rounded to bf16 (the bits of float_to_bf16 of the float version's): the views
// a bf16 model takes (train.precision bf16), made without a float copy of the whole view.
void resample_region(const Image& src, int64_t out_h, int64_t out_w, int64_t y0, int64_t y1,
                     int64_t x0, int64_t x1, Normalize norm, bf16_t* dst);

}  // namespace hd::data
