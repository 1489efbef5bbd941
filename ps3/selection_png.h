// Where PS3 looked, as a picture: an image (downscaled) with each scale's selected patches drawn
// over it and the ground-truth box when known. Used by `hdtrain ps3 encode --selection-png` and
// by the evaluation; a person sees at once whether the selection sits on the box.
//
// Geometry: a selection map of grid g covers the whole image (the squash resize maps the image's
// full extent onto every scale), so cell (r, c) is the rectangle [c W/g, (c+1) W/g) x
// [r H/g, (r+1) H/g) of any image of that content, square (the S x S input) or not (the original
// file): the maps can be drawn on either, with the box in that image's pixels.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "autograd/tensor.h"
#include "ps3/data/image.h"
#include "ps3/data/records.h"

namespace hd::ps3 {

// The colour of scale i (coarsest first), RGB; distinct for the first four, then repeating.
std::array<uint8_t, 3> selection_color(size_t scale_index);

struct SelectionPicture {
  data::Image image;     // the downscaled image with the drawing, then the legend strip
  int64_t image_height;  // rows of the picture above the legend (the legend is below)
  int64_t image_width;
};

// `image` downscaled (Pillow's antialiased bicubic, aspect kept) so its longer side is at most
// `max_side` (never enlarged); each selection map ([g, g] or [1, g, g], a cell is selected when
// its value is > 0.5; coarsest scale first, as the model orders them) drawn as a translucent fill
// of its scale's colour, with an outline when a cell is at least 6 pixels wide (a denser fill
// when it is smaller); `gt_box` (pixels
// of `image`) as a yellow rectangle with a black rim; below the image a legend strip: a swatch
// and the grid size of each scale (and "GT" for the box). Throws naming the map at fault when a
// map is not square.
SelectionPicture draw_selection(const data::Image& image, const std::vector<Tensor>& selection_maps,
                                const std::optional<data::Box>& gt_box, int64_t max_side = 1024);

// draw_selection, written to `path` as PNG (throws naming the path when it cannot be written).
void write_selection_png(const data::Image& image, const std::vector<Tensor>& selection_maps,
                         const std::optional<data::Box>& gt_box, const std::string& path,
                         int64_t max_side = 1024);

}  // namespace hd::ps3
