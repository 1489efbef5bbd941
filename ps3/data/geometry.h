// Per-sample geometry: crop choice, box transform and clipping, the ground-truth box map at any
// size, and high-res patches, all computed from the uint8 S x S image or from the boxes alone.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "ps3/data/records.h"
#include "ps3/data/resize.h"

namespace hd::data {

// Integer crop rectangle in the original image (torchvision crops on integer pixels).
struct Crop {
  int64_t y0 = 0, x0 = 0, h = 0, w = 0;
};

// torchvision RandomResizedCrop.get_params(scale=(0.9, 1), ratio=(3/4, 4/3)): 10 tries, then
// the central crop clamped to the ratio range. Randomness from `key`.
Crop random_resized_crop(int64_t height, int64_t width, uint64_t key);

// Maps a box from original pixels through crop + squash resize to S x S, clips it to the image.
// nullopt with `why` set when it is empty, inverted or entirely outside.
std::optional<Box> transform_box(const Box& b, const Crop& crop, int64_t size, std::string& why);

// g = [area-resample(GT, out) > 0] for the S x S map GT that is 1 on rows floor(y1)..ceil(y2)
// and columns floor(x1)..ceil(x2) (inclusive, §2.1) of every box. A cell is set exactly when
// its adaptive-pool window meets one of those rectangles, so the S x S map is never built.
// out = S gives the map itself. Writes out x out values (0 or 1) to dst.
void gt_map(const std::vector<Box>& boxes, int64_t size, int64_t out, float* dst);

// 14 x 14 x 3 patches of the image resized (non-AA bicubic) to scale x scale, at flat indices
// (row * (scale / 14) + col) of the patch grid; dst gets [n][3][14][14].
constexpr int64_t kPatch = 14;
void extract_patches(const Image& image, int64_t scale, const std::vector<int64_t>& indices,
                     Normalize norm, float* dst);

}  // namespace hd::data
