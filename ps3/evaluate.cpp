// evaluate_ps3; the metric definitions are in evaluate.h.
#include "ps3/evaluate.h"

#include <algorithm>
#include <filesystem>
#include <limits>
#include <memory>
#include <optional>

#include "autograd/error.h"
#include "autograd/node.h"
#include "ops/elementwise.h"
#include "ops/factory.h"
#include "ops/linalg.h"
#include "ops/reduce.h"
#include "ops/shape.h"
#include "ops/similarity.h"
#include "ps3/data/geometry.h"
#include "ps3/data/image.h"
#include "ps3/data/resize.h"
#include "ps3/patch_selection.h"
#include "ps3/selection_png.h"
#include "ps3/text_tower.h"

namespace hd::ps3 {
namespace {

namespace fs = std::filesystem;

// One held-out image prepared like the loader does: the squash-resized image, its low-res and
// selection views (they do not depend on the caption, so they are computed once), and its
// usable local regions.
struct PreparedImage {
  std::shared_ptr<data::Image> image;  // S x S
  std::vector<float> low, sel;         // [3, L, L], [3, R, R]
  std::vector<data::Box> boxes;        // in S x S pixels, one per usable caption
  std::vector<std::string> texts;      // processed captions
};

PreparedImage prepare(const data::ImageRecord& rec, const data::LoaderOptions& opt) {
  data::Image img = data::decode_image(data::read_image_bytes(rec.source), rec.source.describe());
  const int64_t S = opt.image_size, L = opt.low_res, R = opt.selection_res;
  const data::Crop crop{0, 0, img.height, img.width};
  PreparedImage p;
  p.image = std::make_shared<data::Image>(
      img.height == S && img.width == S
          ? std::move(img)
          : data::resize_aa_bicubic(img, 0, 0, img.height, img.width, S, S));
  for (size_t k = 0; k < rec.texts.size(); ++k) {
    std::string why;
    auto box = data::transform_box(rec.boxes[k], crop, S, why);
    if (!box) continue;  // a degenerate box is no region to find
    p.boxes.push_back(*box);
    p.texts.push_back(data::process_caption(rec.texts[k], false, 0));
  }
  p.low.resize(size_t(3 * L * L));
  p.sel.resize(size_t(3 * R * R));
  data::resample_region(*p.image, L, L, 0, L, 0, L, opt.norm, p.low.data());
  data::resample_region(*p.image, R, R, 0, R, 0, R, opt.norm, p.sel.data());
  return p;
}

// A batch of the image repeated once per entry of `row_boxes` (each row's GT boxes). With
// `one_view` the low-res and selection views hold one row (for VisionInputs with one image and
// many prompts): the views of a 1512 selection image are 27 MB per row.
data::Batch image_batch(const PreparedImage& p,
                        const std::vector<std::vector<data::Box>>& row_boxes,
                        const data::LoaderOptions& opt, bool one_view = false) {
  const int64_t n = int64_t(row_boxes.size()), L = opt.low_res, R = opt.selection_res;
  const int64_t views = one_view ? 1 : n;
  data::Batch b;
  b.size = opt.image_size;
  b.norm = opt.norm;
  b.boxes = row_boxes;
  b.low_res = Tensor::empty({views, 3, L, L});
  b.selection = Tensor::empty({views, 3, R, R});
  for (int64_t i = 0; i < n; ++i) {
    b.is_global.push_back(false);
    b.images.push_back(p.image);
    b.image_ids.push_back(0);
  }
  for (int64_t i = 0; i < views; ++i) {
    std::copy(p.low.begin(), p.low.end(), b.low_res.data<float>() + i * 3 * L * L);
    std::copy(p.sel.begin(), p.sel.end(), b.selection.data<float>() + i * 3 * R * R);
  }
  return b;
}

VisionInputs inputs_for(const PS3CLIP& model, const data::Batch& b, int64_t look_close_steps) {
  VisionInputs in;
  in.low_res = b.low_res;
  in.selection = b.selection;
  in.patches = [&b](int64_t row, int64_t scale, const std::vector<int64_t>& idx) {
    return b.patches(row, scale, idx);
  };
  for (size_t s = 0; s < model.config().vision.scales.size(); ++s)
    in.gt_maps.push_back(b.gt_map(model.config().vision.grid(s)));
  in.look_close_steps = look_close_steps;
  return in;
}

// Running sums of SelectionScores over queries.
struct ScoreSums {
  std::vector<double> recall, precision, random_recall, random_precision, ceiling_recall;
  double recall_all = 0, precision_all = 0, random_recall_all = 0, random_precision_all = 0;
  double ceiling_recall_all = 0;
  int64_t queries = 0;
  explicit ScoreSums(size_t ns)
      : recall(ns), precision(ns), random_recall(ns), random_precision(ns), ceiling_recall(ns) {}

  // The ceiling's selection (row 0 of `best`) against row `row` of the GT maps.
  void add_ceiling(const std::vector<Tensor>& best, const std::vector<Tensor>& gt, int64_t row) {
    double hit_all = 0, box_all = 0;
    for (size_t s = 0; s < best.size(); ++s) {
      std::vector<float> sel = select(best[s], 0, 0).to_vector<float>();
      std::vector<float> box = select(gt[s], 0, row).to_vector<float>();
      double hit = 0, cells = 0;
      for (size_t k = 0; k < sel.size(); ++k) hit += sel[k] * box[k], cells += box[k];
      ceiling_recall[s] += cells > 0 ? hit / cells : 0.0;
      hit_all += hit, box_all += cells;
    }
    ceiling_recall_all += box_all > 0 ? hit_all / box_all : 0.0;
  }

  // Row `row` of the selection maps against row `row` of the GT maps.
  void add(const std::vector<Tensor>& selection, const std::vector<Tensor>& gt, int64_t row) {
    double hit_all = 0, picked_all = 0, box_all = 0, random_hit_all = 0;
    for (size_t s = 0; s < selection.size(); ++s) {
      std::vector<float> sel = select(selection[s], 0, row).to_vector<float>();
      std::vector<float> box = select(gt[s], 0, row).to_vector<float>();
      double hit = 0, picked = 0, cells = 0;
      for (size_t k = 0; k < sel.size(); ++k) {
        picked += sel[k];
        hit += sel[k] * box[k];
        cells += box[k];
      }
      const double total = double(sel.size());
      recall[s] += cells > 0 ? hit / cells : 0.0;
      precision[s] += picked > 0 ? hit / picked : 0.0;
      random_recall[s] += picked / total;
      random_precision[s] += cells / total;
      hit_all += hit, picked_all += picked, box_all += cells;
      random_hit_all += picked * cells / total;
    }
    recall_all += box_all > 0 ? hit_all / box_all : 0.0;
    precision_all += picked_all > 0 ? hit_all / picked_all : 0.0;
    random_recall_all += box_all > 0 ? random_hit_all / box_all : 0.0;
    random_precision_all += picked_all > 0 ? random_hit_all / picked_all : 0.0;
    ++queries;
  }

  SelectionScores mean() const {
    const double q = std::max<int64_t>(queries, 1);
    SelectionScores r;
    for (size_t s = 0; s < recall.size(); ++s) {
      r.recall.push_back(recall[s] / q);
      r.precision.push_back(precision[s] / q);
      r.random_recall.push_back(random_recall[s] / q);
      r.random_precision.push_back(random_precision[s] / q);
      r.ceiling_recall.push_back(ceiling_recall[s] / q);
    }
    r.ceiling_recall_all = ceiling_recall_all / q;
    r.recall_all = recall_all / q, r.precision_all = precision_all / q;
    r.random_recall_all = random_recall_all / q, r.random_precision_all = random_precision_all / q;
    r.queries = queries;
    return r;
  }
};

// The selection of the best low-res grid map for the GT maps of row `row` (see evaluate.h): per
// scale, each fine cell ranks by the box-cell count of its low-res cell at that scale.
std::vector<Tensor> ceiling_selection(const VisionConfig& c, const std::vector<Tensor>& gt,
                                      int64_t row, int64_t steps) {
  const int64_t G = c.low_grid();
  std::vector<int64_t> grids;
  std::vector<Tensor> ranking;
  for (size_t s = 0; s < c.scales.size(); ++s) {
    const int64_t g = c.grid(s);
    grids.push_back(g);
    std::vector<float> box = select(gt[s], 0, row).to_vector<float>();
    std::vector<float> count(size_t(G * G)), rank(size_t(g * g));
    auto low = [&](int64_t y, int64_t x) { return size_t((y * G / g) * G + x * G / g); };
    for (int64_t y = 0; y < g; ++y)
      for (int64_t x = 0; x < g; ++x) count[low(y, x)] += box[size_t(y * g + x)];
    for (int64_t y = 0; y < g; ++y)
      for (int64_t x = 0; x < g; ++x) rank[size_t(y * g + x)] = count[low(y, x)];
    ranking.push_back(from_vector<float>(rank, {1, g, g}));
  }
  PatchSelector selector(grids, 1);
  const std::vector<int64_t> budget = split_budget(c.scales, c.max_select);
  for (int64_t step = 0; step < steps; ++step)
    if (selector.select(ranking, Tensor(), budget).total() == 0) break;
  return selector.selection_maps(DType::f32);
}

// Running sums of ProbStats. The low-res grid map is read from the first scale's nearest
// upsampled map at the first fine cell of each low-res cell.
// Row `row` of the first scale's nearest-upsampled map [B, g0, g0] back on the G x G low-res
// grid: each low-res cell read at its first fine cell.
std::vector<float> low_res_cells(const Tensor& scale0_probs, int64_t row, int64_t G) {
  std::vector<float> p = select(scale0_probs, 0, row).to_vector<float>();
  const int64_t g0 = scale0_probs.size(1);
  std::vector<float> cell(size_t(G * G));
  for (int64_t y = 0; y < G; ++y)
    for (int64_t x = 0; x < G; ++x)
      cell[size_t(y * G + x)] = p[size_t(((y * g0 + G - 1) / G) * g0 + (x * g0 + G - 1) / G)];
  return cell;
}

struct ProbSums {
  ProbStats sum;
  int64_t queries = 0;
  void add(const Tensor& scale0_probs, const Tensor& gt_low, int64_t row) {
    const int64_t G = gt_low.size(1);
    std::vector<float> p = low_res_cells(scale0_probs, row, G);
    std::vector<float> g = select(gt_low, 0, row).to_vector<float>();
    std::vector<double> in, out;
    for (int64_t y = 0; y < G; ++y)
      for (int64_t x = 0; x < G; ++x) {
        const double v = p[size_t(y * G + x)];
        (g[size_t(y * G + x)] > 0 ? in : out).push_back(v);
      }
    if (in.empty() || out.empty()) return;
    double above = 0;
    for (double a : in)
      for (double b : out) above += a > b ? 1.0 : a == b ? 0.5 : 0.0;
    auto mean = [](const std::vector<double>& v) {
      double s = 0;
      for (double x : v) s += x;
      return s / double(v.size());
    };
    sum.mean_in += mean(in), sum.mean_out += mean(out);
    sum.max_in += *std::max_element(in.begin(), in.end());
    sum.max_out += *std::max_element(out.begin(), out.end());
    sum.auc += above / double(in.size() * out.size());
    ++queries;
  }
  ProbStats mean() const {
    const double q = std::max<int64_t>(queries, 1);
    return {sum.mean_in / q, sum.mean_out / q, sum.max_in / q, sum.max_out / q, sum.auc / q};
  }
};

// Shares and the median box rank over queries (see evaluate.h).
struct FirstPickSums {
  double own = 0, other = 0, elsewhere = 0;
  std::vector<double> box_ranks;
  void add(const QueryFirstPick& q) {
    (q.place == FirstPickPlace::own_box        ? own
     : q.place == FirstPickPlace::other_region ? other
                                               : elsewhere) += 1;
    if (q.box_rank >= 0) box_ranks.push_back(double(q.box_rank));
  }
  FirstPick mean() {
    const double q = std::max(own + other + elsewhere, 1.0);
    FirstPick r{own / q, other / q, elsewhere / q, 0};
    if (!box_ranks.empty()) {
      std::sort(box_ranks.begin(), box_ranks.end());
      r.median_box_rank = box_ranks[box_ranks.size() / 2];
    }
    return r;
  }
};

}  // namespace

QueryFirstPick first_pick(const Tensor& scale0_probs, const Tensor& own_low,
                          const Tensor& salient_low, int64_t row) {
  std::vector<float> own_box = select(own_low, 0, row).to_vector<float>();
  std::vector<float> any_box = select(salient_low, 0, 0).to_vector<float>();
  const int64_t G = own_low.size(1), g0 = scale0_probs.size(1);
  HD_CHECK(own_low.shape() == Shape({own_low.size(0), G, G}) &&
               salient_low.shape() == Shape({salient_low.size(0), G, G}) && g0 >= G,
           "first_pick: maps ", scale0_probs.str(), ", ", own_low.str(), ", ", salient_low.str(),
           " are not [B, g0, g0], [B, G, G], [1, G, G] with g0 >= G");
  const std::vector<float> cell = low_res_cells(scale0_probs, row, G);
  QueryFirstPick q;
  const size_t top = size_t(std::max_element(cell.begin(), cell.end()) - cell.begin());
  q.place = own_box[top] > 0   ? FirstPickPlace::own_box
            : any_box[top] > 0 ? FirstPickPlace::other_region
                               : FirstPickPlace::elsewhere;
  float best_in_box = -std::numeric_limits<float>::infinity();
  bool any = false;
  for (size_t k = 0; k < cell.size(); ++k) {
    if (own_box[k] <= 0) continue;
    any = true;
    best_in_box = std::max(best_in_box, cell[k]);
  }
  if (any) {
    q.box_rank = 0;
    for (float v : cell) q.box_rank += v > best_in_box;
  }
  return q;
}

EvalResult evaluate_ps3(const PS3CLIP& model, const data::Dataset& eval_set,
                        const data::Tokenizer& tokenizer, const EvalOptions& options) {
  const VisionConfig& vc = model.config().vision;
  HD_CHECK(options.max_images > 0 && options.look_close_steps > 0, "evaluate_ps3: max_images (",
           options.max_images, ") and look_close_steps (", options.look_close_steps,
           ") must be positive");
  HD_CHECK(options.loader.image_size == vc.image_size() && options.loader.low_res == vc.low_res &&
               options.loader.selection_res == vc.selection_res,
           "evaluate_ps3: loader sizes (image ", options.loader.image_size, ", low-res ",
           options.loader.low_res, ", selection ", options.loader.selection_res,
           ") must be the model's (", vc.image_size(), ", ", vc.low_res, ", ", vc.selection_res,
           ")");
  NoGradGuard no_grad;
  EvalResult r;
  r.scales = vc.scales;
  const size_t ns = vc.scales.size();
  const int64_t steps = options.look_close_steps;
  ScoreSums top_down(ns), bottom_up(ns);
  ProbSums top_down_probs, bottom_up_probs;
  FirstPickSums first_picks;
  std::vector<Tensor> region_emb, query_emb, query_prompt;
  std::vector<int64_t> query_image;  // index of each query's image among the evaluated ones
  std::vector<PreparedImage> prepared;
  const int64_t images = std::min<int64_t>(options.max_images, int64_t(eval_set.records.size()));
  for (int64_t i = 0; i < images; ++i) {
    PreparedImage p = prepare(eval_set.records[size_t(i)], options.loader);
    ++r.images;
    const int64_t B = int64_t(p.boxes.size());
    if (B == 0) continue;
    std::vector<int32_t> ids;
    for (const auto& t : p.texts) {
      std::vector<int32_t> e = tokenizer.encode(t);
      ids.insert(ids.end(), e.begin(), e.end());
    }
    TextOutputs text =
        model.text().forward(from_vector<int32_t>(ids, {B, tokenizer.context_length()}));
    query_emb.push_back(text.features);
    query_prompt.push_back(text.prompt);
    for (int64_t k = 0; k < B; ++k) query_image.push_back(int64_t(prepared.size()));

    std::vector<std::vector<data::Box>> own;
    for (const auto& box : p.boxes) own.push_back({box});
    data::Batch rows = image_batch(p, own, options.loader);

    // Candidates for forced retrieval: the image alone, forced to each region's box.
    VisionInputs forced = inputs_for(model, rows, steps);
    forced.gt_forcing = true;
    forced.pool_gt_only = true;
    region_emb.push_back(l2_normalize(model.vision().forward(forced).high_res_pooled, -1));

    // Top-down selection from each caption, no forcing.
    VisionInputs td = inputs_for(model, rows, steps);
    td.prompt = text.prompt;
    VisionOutputs v = model.vision().forward(td);
    Tensor gt_low = rows.gt_map(vc.low_grid());
    data::Batch whole = image_batch(p, {p.boxes}, options.loader);
    Tensor salient_low = whole.gt_map(vc.low_grid());
    auto picture = [&](const std::vector<Tensor>& maps, int64_t row, const std::string& name,
                       const std::optional<data::Box>& box) {
      std::vector<Tensor> rows;
      for (const Tensor& m : maps) rows.push_back(select(m, 0, row));
      write_selection_png(*p.image, rows, box, (fs::path(options.png_dir) / name).string(), 768);
    };
    const bool draw = !options.png_dir.empty() && r.queries < options.png_count;
    if (draw) fs::create_directories(options.png_dir);
    for (int64_t row = 0; row < B; ++row) {
      if (draw && r.queries + row < options.png_count)
        picture(v.selection_maps, row,
                "td_" + std::to_string(i) + "_" + std::to_string(row) + ".png",
                p.boxes[size_t(row)]);
      top_down.add(v.selection_maps, td.gt_maps, row);
      top_down.add_ceiling(ceiling_selection(vc, td.gt_maps, row, steps), td.gt_maps, row);
      top_down_probs.add(v.posterior_probs[0], gt_low, row);
      first_picks.add(first_pick(v.posterior_probs[0], gt_low, salient_low, row));
    }

    // Bottom-up: the prior alone, against every salient region of the image.
    VisionInputs bu = inputs_for(model, whole, steps);
    VisionOutputs u = model.vision().forward(bu);
    if (draw) picture(u.selection_maps, 0, "bu_" + std::to_string(i) + ".png", std::nullopt);
    bottom_up.add(u.selection_maps, bu.gt_maps, 0);
    bottom_up.add_ceiling(ceiling_selection(vc, bu.gt_maps, 0, steps), bu.gt_maps, 0);
    bottom_up_probs.add(u.prior_probs[0], salient_low, 0);

    r.queries += B;
    prepared.push_back(std::move(p));
  }
  HD_CHECK(r.queries > 0, "evaluate_ps3: the first ", images, " images of the eval set (",
           eval_set.records.size(), " records) hold no usable local caption");
  r.top_down = top_down.mean();
  r.bottom_up = bottom_up.mean();
  r.top_down_probs = top_down_probs.mean();
  r.bottom_up_probs = bottom_up_probs.mean();
  r.top_down_first_pick = first_picks.mean();

  // Forced retrieval over regions: row q's own region is q.
  Tensor queries = cat(query_emb, 0);
  {
    Tensor scores = matmul(queries, transpose(cat(region_emb, 0), 0, 1));  // [Q, Q]
    std::vector<float> sc = scores.to_vector<float>();
    const int64_t Q = r.queries;
    int64_t hits = 0;
    for (int64_t q = 0; q < Q; ++q) {
      int64_t best = 0;
      for (int64_t c = 1; c < Q; ++c)
        if (sc[size_t(q * Q + c)] > sc[size_t(q * Q + best)]) best = c;
      hits += best == q;
    }
    r.retrieval_forced_top1 = double(hits) / double(Q);
    r.retrieval_forced_chance = 1.0 / double(Q);
  }

  // Top-down retrieval over images, no forcing: every caption's prompt on every image.
  const int64_t I = options.retrieval_max_images > 0
                        ? std::min<int64_t>(options.retrieval_max_images, int64_t(prepared.size()))
                        : int64_t(prepared.size());
  int64_t Q = 0;
  while (Q < int64_t(query_image.size()) && query_image[size_t(Q)] < I) ++Q;
  if (I >= 2 && Q > 0) {
    Tensor prompts = narrow(cat(query_prompt, 0), 0, 0, Q);
    Tensor texts = narrow(queries, 0, 0, Q);
    std::vector<float> score(size_t(Q * I));
    for (int64_t j = 0; j < I; ++j) {
      // One image, Q prompts: stage 1 and the selection features run once.
      data::Batch batch = image_batch(
          prepared[size_t(j)], std::vector<std::vector<data::Box>>(size_t(Q)), options.loader,
          /*one_view=*/true);
      VisionInputs in = inputs_for(model, batch, steps);
      in.prompt = prompts;
      Tensor pooled = l2_normalize(model.vision().forward(in).high_res_pooled, -1);  // [Q, W]
      std::vector<float> s = sum(mul(pooled, texts), {1}).to_vector<float>();
      for (int64_t q = 0; q < Q; ++q) score[size_t(q * I + j)] = s[size_t(q)];
    }
    int64_t hits = 0;
    for (int64_t q = 0; q < Q; ++q) {
      int64_t best = 0;
      for (int64_t j = 1; j < I; ++j)
        if (score[size_t(q * I + j)] > score[size_t(q * I + best)]) best = j;
      hits += best == query_image[size_t(q)];
    }
    r.retrieval_topdown_top1 = double(hits) / double(Q);
    r.retrieval_topdown_chance = 1.0 / double(I);
    r.retrieval_topdown_images = I;
  }
  return r;
}

}  // namespace hd::ps3
