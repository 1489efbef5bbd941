// One image file prepared for the PS3 vision model the way data::Loader prepares a training
// sample (squash-resize to the largest scale with Pillow's antialiased bicubic, the low-res and
// selection images resampled from it, patches cut on demand at each scale, the loader's default
// normalisation). `ps3 encode` and `vilahd ask` both use it, so a feature or an answer computed on
// one image is comparable with what training saw.
#pragma once

#include <memory>

#include "ps3/config.h"
#include "ps3/data/loader.h"
#include "ps3/vision_model.h"

namespace hd::ps3 {

struct PreparedImage {
  data::Batch batch;                            // one row: low_res, selection, images, norm
  std::shared_ptr<const data::Image> original;  // the file's own pixels, for pictures
};

// `image` as decoded (any size). Throws naming nothing itself: decode errors come earlier.
PreparedImage prepare_image(data::Image image, const VisionConfig& config);

// Vision inputs for the prepared image (no prompt; bottom-up unless the caller sets one). The
// patch source refers to `prepared`, which must outlive every forward that uses the inputs.
VisionInputs vision_inputs(const PreparedImage& prepared, int64_t look_close_steps = 1);

}  // namespace hd::ps3
