// evaluate_ps3; the metric definitions are in evaluate.h.
#include "ps3/evaluate.h"

#include <algorithm>
#include <memory>

#include "autograd/error.h"
#include "autograd/node.h"
#include "ops/factory.h"
#include "ops/linalg.h"
#include "ops/shape.h"
#include "ops/similarity.h"
#include "ps3/data/geometry.h"
#include "ps3/data/image.h"
#include "ps3/data/resize.h"
#include "ps3/text_tower.h"

namespace hd::ps3 {
namespace {

// One image prepared like the loader does, with one batch row per usable local caption (the
// same image repeated, each row with its own box).
data::Batch image_rows(const data::ImageRecord& rec, const data::Tokenizer& tok,
                       const data::LoaderOptions& opt) {
  data::Image img = data::decode_image(data::read_image_bytes(rec.source), rec.source.describe());
  const int64_t S = opt.image_size, L = opt.low_res, R = opt.selection_res;
  const data::Crop crop{0, 0, img.height, img.width};
  auto s_img = std::make_shared<data::Image>(
      img.height == S && img.width == S
          ? std::move(img)
          : data::resize_aa_bicubic(img, 0, 0, img.height, img.width, S, S));
  data::Batch b;
  b.size = S;
  b.norm = opt.norm;
  std::vector<data::Box> boxes;
  std::vector<int32_t> ids;
  for (size_t k = 0; k < rec.texts.size(); ++k) {
    std::string why;
    auto box = data::transform_box(rec.boxes[k], crop, S, why);
    if (!box) continue;  // a degenerate box is no region to retrieve
    b.boxes.push_back({*box});
    b.is_global.push_back(false);
    b.texts.push_back(data::process_caption(rec.texts[k], false, 0));
    std::vector<int32_t> t = tok.encode(b.texts.back());
    ids.insert(ids.end(), t.begin(), t.end());
    b.images.push_back(s_img);
    b.image_ids.push_back(0);
  }
  const int64_t n = b.batch_size();
  if (n == 0) return b;
  b.tokens = from_vector<int32_t>(ids, {n, tok.context_length()});
  // The views do not depend on the box: compute once, repeat per row.
  std::vector<float> low(size_t(3 * L * L)), sel(size_t(3 * R * R));
  data::resample_region(*s_img, L, L, 0, L, 0, L, opt.norm, low.data());
  data::resample_region(*s_img, R, R, 0, R, 0, R, opt.norm, sel.data());
  b.low_res = Tensor::empty({n, 3, L, L});
  b.selection = Tensor::empty({n, 3, R, R});
  for (int64_t i = 0; i < n; ++i) {
    std::copy(low.begin(), low.end(), b.low_res.data<float>() + i * 3 * L * L);
    std::copy(sel.begin(), sel.end(), b.selection.data<float>() + i * 3 * R * R);
  }
  return b;
}

VisionInputs inputs_for(const PS3CLIP& model, const data::Batch& b, const EvalOptions& o) {
  VisionInputs in;
  in.low_res = b.low_res;
  in.selection = b.selection;
  in.patches = [&b](int64_t row, int64_t scale, const std::vector<int64_t>& idx) {
    return b.patches(row, scale, idx);
  };
  for (size_t s = 0; s < model.config().vision.scales.size(); ++s)
    in.gt_maps.push_back(b.gt_map(model.config().vision.grid(s)));
  in.look_close_steps = o.look_close_steps;
  return in;
}

}  // namespace

EvalResult evaluate_ps3(const PS3CLIP& model, const data::Dataset& eval_set,
                        const data::Tokenizer& tokenizer, const EvalOptions& options) {
  HD_CHECK(options.max_images > 0 && options.look_close_steps > 0, "evaluate_ps3: max_images (",
           options.max_images, ") and look_close_steps (", options.look_close_steps,
           ") must be positive");
  HD_CHECK(options.loader.image_size == model.config().vision.image_size() &&
               options.loader.low_res == model.config().vision.low_res &&
               options.loader.selection_res == model.config().vision.selection_res,
           "evaluate_ps3: loader sizes (image ", options.loader.image_size, ", low-res ",
           options.loader.low_res, ", selection ", options.loader.selection_res,
           ") must be the model's (", model.config().vision.image_size(), ", ",
           model.config().vision.low_res, ", ", model.config().vision.selection_res, ")");
  NoGradGuard no_grad;
  EvalResult r;
  std::vector<Tensor> region_emb, query_emb;
  double share_sum = 0, random_sum = 0;
  const size_t ns = model.config().vision.scales.size();
  const int64_t images = std::min<int64_t>(options.max_images, int64_t(eval_set.records.size()));
  for (int64_t i = 0; i < images; ++i) {
    data::Batch b = image_rows(eval_set.records[size_t(i)], tokenizer, options.loader);
    ++r.images;
    if (b.batch_size() == 0) continue;
    TextOutputs text = model.text().forward(b.tokens);
    query_emb.push_back(text.features);

    // Candidates: the image alone, forced to each region's box, in-box pooling.
    VisionInputs in = inputs_for(model, b, options);
    in.gt_forcing = true;
    in.pool_gt_only = true;
    region_emb.push_back(l2_normalize(model.vision().forward(in).high_res_pooled, -1));

    // Top-down selection from each caption, no forcing.
    VisionInputs td = inputs_for(model, b, options);
    td.prompt = text.prompt;
    VisionOutputs v = model.vision().forward(td);
    const int64_t B = b.batch_size();
    for (int64_t row = 0; row < B; ++row) {
      double inside = 0, picked = 0, expected_inside = 0;
      for (size_t s = 0; s < ns; ++s) {
        std::vector<float> sel = select(v.selection_maps[s], 0, row).to_vector<float>();
        std::vector<float> gt = select(td.gt_maps[s], 0, row).to_vector<float>();
        double n_s = 0, in_s = 0, box_cells = 0;
        for (size_t k = 0; k < sel.size(); ++k) {
          n_s += sel[k];
          in_s += sel[k] * gt[k];
          box_cells += gt[k];
        }
        picked += n_s;
        inside += in_s;
        expected_inside += n_s * box_cells / double(sel.size());
      }
      if (picked > 0) {
        share_sum += inside / picked;
        random_sum += expected_inside / picked;
      }
    }
    r.queries += B;
  }
  HD_CHECK(r.queries > 0, "evaluate_ps3: the first ", images, " images of the eval set (",
           eval_set.records.size(), " records) hold no usable local caption");
  Tensor regions = cat(region_emb, 0), queries = cat(query_emb, 0);  // row q's own region is q
  Tensor scores = matmul(queries, transpose(regions, 0, 1));         // [Q, Q]
  std::vector<float> sc = scores.to_vector<float>();
  const int64_t Q = r.queries;
  int64_t hits = 0;
  for (int64_t q = 0; q < Q; ++q) {
    int64_t best = 0;
    for (int64_t c = 1; c < Q; ++c)
      if (sc[size_t(q * Q + c)] > sc[size_t(q * Q + best)]) best = c;
    hits += best == q;
  }
  r.retrieval_top1 = double(hits) / double(Q);
  r.retrieval_chance = 1.0 / double(Q);
  r.selection_share = share_sum / double(Q);
  r.random_share = random_sum / double(Q);
  return r;
}

}  // namespace hd::ps3
