#include "ps3/image_inputs.h"

#include "ps3/data/resize.h"

namespace hd::ps3 {

PreparedImage prepare_image(data::Image image, const VisionConfig& vc) {
  const int64_t S = vc.image_size(), L = vc.low_res, R = vc.selection_res;
  PreparedImage p;
  p.original = std::make_shared<const data::Image>(std::move(image));
  data::Batch& b = p.batch;
  b.size = S;
  b.norm = data::LoaderOptions{}.norm;
  const data::Image& o = *p.original;
  b.images.push_back(o.height == S && o.width == S
                         ? p.original
                         : std::make_shared<const data::Image>(
                               data::resize_aa_bicubic(o, 0, 0, o.height, o.width, S, S)));
  b.image_ids = {0};
  b.is_global = {true};
  b.boxes = {{}};
  b.salient_boxes = {{}};
  b.low_res = Tensor::empty({1, 3, L, L});
  data::resample_region(*b.images[0], L, L, 0, L, 0, L, b.norm, b.low_res.data<float>());
  if (R > 0) {
    b.selection = Tensor::empty({1, 3, R, R});
    data::resample_region(*b.images[0], R, R, 0, R, 0, R, b.norm, b.selection.data<float>());
  }
  return p;
}

VisionInputs vision_inputs(const PreparedImage& prepared, int64_t look_close_steps) {
  VisionInputs in;
  in.low_res = prepared.batch.low_res;
  in.selection = prepared.batch.selection;
  const data::Batch* b = &prepared.batch;
  in.patches = [b](int64_t row, int64_t scale, const std::vector<int64_t>& idx) {
    return b->patches(row, scale, idx);
  };
  in.look_close_steps = look_close_steps;
  return in;
}

}  // namespace hd::ps3
