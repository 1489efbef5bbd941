#include "vilahd/projector.h"

#include <cmath>
#include <string>

#include "ops/elementwise.h"
#include "ops/factory.h"
#include "ops/index.h"
#include "ops/linalg.h"
#include "ops/nn/layers.h"
#include "ops/resample.h"
#include "ops/shape.h"

namespace hd::vilahd {

namespace projector_detail {

// VILA's nn.Sequential(DownSampleBlock(), LayerNorm(4C), Linear(4C, D), GELU(), Linear(D, D)):
// only the indices that own parameters exist here, under the same names.
class Layers : public Module {
 public:
  Layers(int64_t c, int64_t d) {
    norm = register_module("1", std::make_shared<nn::LayerNorm>(4 * c, 1e-5));  // nn default
    fc1 = register_module("2", std::make_shared<nn::Linear>(4 * c, d));
    fc2 = register_module("4", std::make_shared<nn::Linear>(d, d));
  }
  Tensor forward(const Tensor& windows) const {
    return fc2->forward(gelu(fc1->forward(norm->forward(windows)), GeluApprox::none));
  }
  std::shared_ptr<nn::LayerNorm> norm;
  std::shared_ptr<nn::Linear> fc1, fc2;
};

// nn.ParameterList: parameters named "0", "1", ...
class ParameterList : public Module {
 public:
  ParameterList(int64_t n, const Shape& shape) {
    for (int64_t i = 0; i < n; ++i)
      items.push_back(register_parameter(std::to_string(i), shape, Init::zeros()));
  }
  std::vector<Tensor> items;
};

}  // namespace projector_detail

namespace {

std::string describe(const Tensor& t) {
  return t.defined() ? t.str() : std::string("an undefined tensor");
}

// Side of a perfect square, or -1.
int64_t square_side(int64_t n) {
  auto s = int64_t(std::llround(std::sqrt(double(n))));
  return s * s == n ? s : -1;
}

// PyTorch's adaptive pooling window along one axis: [floor(i*in/out), ceil((i+1)*in/out)).
std::pair<int64_t, int64_t> adaptive_window(int64_t i, int64_t in, int64_t out) {
  return {i * in / out, ((i + 1) * in + out - 1) / out};
}

}  // namespace

TopDownPromptHead::TopDownPromptHead(int64_t llm_dim, int64_t vision_dim, PromptHeadType type)
    : type_(type), llm_dim_(llm_dim) {
  HD_CHECK(llm_dim > 0 && vision_dim > 0, "TopDownPromptHead: llm_dim (", llm_dim,
           ") and vision_dim (", vision_dim, ") must be positive");
  const Init u = Init::uniform(-0.02, 0.02);
  if (type == PromptHeadType::mlp) {
    // timm Mlp(in=D, hidden=2C, out=C, norm_layer=nn.LayerNorm): fc1, act, norm, fc2.
    fc1_ =
        register_module("fc1", std::make_shared<nn::Linear>(llm_dim, 2 * vision_dim, true, u, u));
    norm_ = register_module("norm", std::make_shared<nn::LayerNorm>(2 * vision_dim, 1e-5));
    fc2_ = register_module("fc2",
                           std::make_shared<nn::Linear>(2 * vision_dim, vision_dim, true, u, u));
  } else if (type == PromptHeadType::linear) {
    weight_ = register_parameter("weight", {vision_dim, llm_dim}, u);
    bias_ = register_parameter("bias", {vision_dim}, u);
  } else {
    throw Error("TopDownPromptHead: type must be linear or mlp, not none");
  }
}

Tensor TopDownPromptHead::forward(const Tensor& hidden) const {
  HD_CHECK(hidden.defined() && hidden.dim() >= 1 && hidden.size(-1) == llm_dim_,
           "TopDownPromptHead: hidden state must be [..., llm_dim = ", llm_dim_, "], got ",
           describe(hidden));
  if (type_ == PromptHeadType::linear) return linear(hidden, weight_, bias_);
  return fc2_->forward(norm_->forward(gelu(fc1_->forward(hidden), GeluApprox::none)));
}

MlpDownsampleProjector::MlpDownsampleProjector(const ProjectorConfig& config) : config_(config) {
  HD_CHECK(config.vision_dim > 0 && config.llm_dim > 0, "MlpDownsampleProjector: vision_dim (",
           config.vision_dim, ") and llm_dim (", config.llm_dim, ") must be positive");
  // Registration order follows VILA's __init__: layers, top_down_prompt_head, embeddings.
  layers_ = register_module(
      "layers", std::make_shared<projector_detail::Layers>(config.vision_dim, config.llm_dim));
  if (config.prompt_head != PromptHeadType::none)
    head_ = register_module(
        "top_down_prompt_head",
        std::make_shared<TopDownPromptHead>(config.llm_dim, config.vision_dim, config.prompt_head));
  if (config.high_res_pos_embed) {
    HD_CHECK(config.low_res_grid > 0 && config.num_scales > 0,
             "MlpDownsampleProjector: low_res_grid (", config.low_res_grid, ") and num_scales (",
             config.num_scales, ") must be positive with high_res_pos_embed");
    const int64_t g = config.low_res_grid;
    pos_embed_ =
        register_parameter("high_res_pos_embed", {1, g * g, config.llm_dim}, Init::zeros());
    scale_embed_ = register_module("high_res_scale_embed",
                                   std::make_shared<projector_detail::ParameterList>(
                                       config.num_scales, Shape{1, 1, config.llm_dim}));
  }
}

Tensor MlpDownsampleProjector::project_windows(const Tensor& windows) const {
  HD_CHECK(windows.defined() && windows.dim() >= 1 && windows.size(-1) == 4 * config_.vision_dim,
           "MlpDownsampleProjector: windows must be [..., 4 * vision_dim = ",
           4 * config_.vision_dim, "], got ", describe(windows));
  return layers_->forward(windows);
}

Tensor MlpDownsampleProjector::forward(const Tensor& grid) const {
  HD_CHECK(grid.defined() && grid.dim() >= 3 && grid.size(-1) == config_.vision_dim,
           "MlpDownsampleProjector: grid must be [..., H, W, vision_dim = ", config_.vision_dim,
           "], got ", describe(grid));
  return layers_->forward(downsample_2x2(grid));
}

Tensor MlpDownsampleProjector::position_embedding(int64_t out_h, int64_t out_w, int64_t scale,
                                                  const std::vector<int64_t>& windows) const {
  HD_CHECK(config_.high_res_pos_embed,
           "MlpDownsampleProjector::position_embedding: the projector has no high_res_pos_embed");
  HD_CHECK(out_h > 0 && out_w > 0, "MlpDownsampleProjector::position_embedding: output size ",
           out_h, "x", out_w, " must be positive");
  HD_CHECK(scale >= 0 && scale < config_.num_scales, "MlpDownsampleProjector: scale ", scale,
           " has no high_res_scale_embed (num_scales = ", config_.num_scales,
           ", index 0 is low-res)");
  const int64_t g = config_.low_res_grid, d = config_.llm_dim, k = int64_t(windows.size());
  // Row w of the result = sum over the window's cells of PE[a, b] / (kh * kw): the outer
  // product of the two axes' area weights (PyTorch divides the 2-D window sum by its area).
  std::vector<double> wh =
      resample_weights(g, out_h, ResampleMode::area, false, DType::f64).to_vector<double>();
  std::vector<double> ww =
      resample_weights(g, out_w, ResampleMode::area, false, DType::f64).to_vector<double>();
  std::vector<double> m(size_t(k * g * g), 0.0);
  for (int64_t r = 0; r < k; ++r) {
    int64_t w = windows[size_t(r)];
    HD_CHECK(w >= 0 && w < out_h * out_w, "MlpDownsampleProjector::position_embedding: window ", w,
             " is outside the ", out_h, "x", out_w, " grid");
    int64_t i = w / out_w, j = w % out_w;
    for (int64_t a = 0; a < g; ++a) {
      double fa = wh[size_t(i * g + a)];
      if (fa == 0) continue;
      for (int64_t b = 0; b < g; ++b) m[size_t((r * g + a) * g + b)] = fa * ww[size_t(j * g + b)];
    }
  }
  Tensor weights = from_vector<double>(m, {k, g * g}, pos_embed_.dtype(), pos_embed_.device());
  Tensor pe = matmul(weights, reshape(pos_embed_, {g * g, d}));  // [K, D]
  return add(pe, reshape(scale_embed_->items[size_t(scale)], {d}));
}

ProjectedImage MlpDownsampleProjector::project_image(const Tensor& low_res,
                                                     const std::vector<Tensor>& grids,
                                                     const std::vector<Tensor>& selection) const {
  const int64_t c = config_.vision_dim, d = config_.llm_dim;
  HD_CHECK(low_res.defined() && low_res.dim() == 2 && low_res.size(1) == c &&
               square_side(low_res.size(0)) > 0,
           "MlpDownsampleProjector: low_res must be [s*s, vision_dim = ", c, "], got ",
           describe(low_res));
  HD_CHECK(grids.size() == selection.size(), "MlpDownsampleProjector: ", grids.size(),
           " high-res grids but ", selection.size(), " selection maps");
  HD_CHECK(!config_.high_res_pos_embed || int64_t(grids.size()) < config_.num_scales,
           "MlpDownsampleProjector: ", grids.size(),
           " high-res scales need high_res_scale_embed.0..", grids.size(), " but num_scales is ",
           config_.num_scales);
  ProjectedImage out;
  const int64_t s = square_side(low_res.size(0)), s2 = (s + 1) / 2;
  Tensor lr = reshape(forward(reshape(low_res, {s, s, c})), {s2 * s2, d});
  if (config_.high_res_pos_embed) {
    std::vector<int64_t> all(size_t(s2 * s2));
    for (int64_t i = 0; i < s2 * s2; ++i) all[size_t(i)] = i;
    lr = add(lr, position_embedding(s2, s2, 0, all));
  }
  out.low_res_tokens = s2 * s2;
  std::vector<Tensor> parts{lr};
  int64_t total_kept = 0;
  for (size_t k = 0; k < grids.size(); ++k) {
    const Tensor& grid = grids[k];
    const Tensor& map = selection[k];
    HD_CHECK(grid.defined() && grid.dim() == 3 && grid.size(2) == c && grid.size(0) > 0 &&
                 grid.size(1) > 0,
             "MlpDownsampleProjector: grids[", k, "] must be [g_h, g_w, vision_dim = ", c,
             "], got ", describe(grid));
    HD_CHECK(grid.dtype() == low_res.dtype(), "MlpDownsampleProjector: grids[", k, "] is ",
             grid.str(), " but low_res is ", low_res.str());
    HD_CHECK(map.defined() && map.dim() == 2 && map.size(0) == grid.size(0) &&
                 map.size(1) == grid.size(1),
             "MlpDownsampleProjector: selection[", k, "] must be [", grid.size(0), ", ",
             grid.size(1), "] like grids[", k, "] ", grid.str(), ", got ", describe(map));
    std::vector<int64_t> kept;
    try {
      kept = kept_windows(map);
    } catch (const Error& e) {
      throw Error("MlpDownsampleProjector: selection[" + std::to_string(k) + "]: " + e.what());
    }
    out.kept_counts.push_back(int64_t(kept.size()));
    out.kept_windows.push_back(kept);
    if (kept.empty()) continue;  // nothing of this scale reaches the LLM
    total_kept += int64_t(kept.size());
    const int64_t gh = grid.size(0), gw = grid.size(1), oh = (gh + 1) / 2, ow = (gw + 1) / 2;
    // Zero-pad odd sides (DownSampleBlock's rule) so every window has four cells.
    Tensor padded = (gh % 2 || gw % 2) ? pad(grid, {0, 0, 0, gw % 2, 0, gh % 2}) : grid;
    std::vector<int64_t> cells;
    cells.reserve(kept.size() * 4);
    for (int64_t w : kept) {
      int64_t i = w / ow, j = w % ow;
      for (int64_t dy = 0; dy < 2; ++dy)
        for (int64_t dx = 0; dx < 2; ++dx) cells.push_back((2 * i + dy) * (2 * ow) + 2 * j + dx);
    }
    // [4K, C] cells in window order TL, TR, BL, BR -> [K, 4C]: the concatenated windows.
    Tensor windows = reshape(index_select(reshape(padded, {4 * oh * ow, c}), 0,
                                          from_vector<int64_t>(cells, {int64_t(cells.size())},
                                                               DType::i64, grid.device())),
                             {int64_t(kept.size()), 4 * c});
    Tensor y = layers_->forward(windows);
    if (config_.high_res_pos_embed) y = add(y, position_embedding(oh, ow, int64_t(k) + 1, kept));
    parts.push_back(y);
  }
  if (!grids.empty() && total_kept == 0) {
    parts.push_back(narrow(lr, 0, 0, 1));  // VILA: low_res_image_features[i, :1]
    out.placeholder = true;
  }
  out.tokens = parts.size() == 1 ? parts[0] : cat(parts, 0);
  return out;
}

Tensor MlpDownsampleProjector::prompt(const Tensor& llm_hidden) const {
  return top_down_prompt_head().forward(llm_hidden);
}

const TopDownPromptHead& MlpDownsampleProjector::top_down_prompt_head() const {
  HD_CHECK(head_ != nullptr,
           "MlpDownsampleProjector: no top_down_prompt_head (config.prompt_head is none)");
  return *head_;
}

Tensor downsample_2x2(const Tensor& x) {
  HD_CHECK(x.defined() && x.dim() >= 3 && x.size(-3) > 0 && x.size(-2) > 0,
           "downsample_2x2: expected [..., H, W, C] with H, W > 0, got ", describe(x));
  const int64_t h = x.size(-3), w = x.size(-2), c = x.size(-1);
  const int64_t h2 = (h + 1) / 2, w2 = (w + 1) / 2;
  Tensor p = (h % 2 || w % 2) ? pad(x, {0, 0, 0, w % 2, 0, h % 2}) : x;
  const int64_t lead = x.dim() - 3;
  Shape split(x.shape().begin(), x.shape().begin() + lead);
  Shape out_shape = split;
  split.insert(split.end(), {h2, 2, w2, 2, c});
  out_shape.insert(out_shape.end(), {h2, w2, 4 * c});
  // [.., h2, dy, w2, dx, C] -> [.., h2, w2, dy, dx, C]: dy major, dx minor = TL, TR, BL, BR.
  std::vector<int64_t> perm;
  for (int64_t i = 0; i < lead; ++i) perm.push_back(i);
  perm.insert(perm.end(), {lead, lead + 2, lead + 1, lead + 3, lead + 4});
  return reshape(permute(reshape(p, split), perm), out_shape);
}

std::vector<int64_t> kept_windows(const Tensor& selection_map) {
  HD_CHECK(selection_map.defined() && selection_map.dim() == 2 && selection_map.size(0) > 0 &&
               selection_map.size(1) > 0,
           "kept_windows: selection map must be [g_h, g_w], got ", describe(selection_map));
  const int64_t gh = selection_map.size(0), gw = selection_map.size(1);
  const int64_t oh = (gh + 1) / 2, ow = (gw + 1) / 2;
  std::vector<double> v = selection_map.to_vector<double>();
  for (size_t i = 0; i < v.size(); ++i)
    HD_CHECK(v[i] == 0.0 || v[i] == 1.0, "kept_windows: selection map ", selection_map.str(),
             " has value ", v[i], " at (", int64_t(i) / gw, ", ", int64_t(i) % gw,
             "); it must be 0 or 1");
  std::vector<int64_t> kept;
  for (int64_t i = 0; i < oh; ++i) {
    auto [r0, r1] = adaptive_window(i, gh, oh);
    for (int64_t j = 0; j < ow; ++j) {
      auto [c0, c1] = adaptive_window(j, gw, ow);
      bool all = true;
      for (int64_t r = r0; r < r1 && all; ++r)
        for (int64_t q = c0; q < c1 && all; ++q) all = v[size_t(r * gw + q)] == 1.0;
      if (all) kept.push_back(i * ow + j);
    }
  }
  return kept;
}

std::vector<Tensor> dense_scale_grids(const Tensor& tokens, const Tensor& positions,
                                      const std::vector<int64_t>& grids) {
  HD_CHECK(tokens.defined() && tokens.dim() == 2, "dense_scale_grids: tokens must be [M, C], got ",
           describe(tokens));
  HD_CHECK(positions.defined() && positions.dim() == 1 && positions.size(0) == tokens.size(0),
           "dense_scale_grids: positions must be [M = ", tokens.size(0), "], got ",
           describe(positions));
  int64_t total = 0;
  std::vector<int64_t> sizes;
  for (int64_t g : grids) {
    HD_CHECK(g > 0, "dense_scale_grids: grid sides must be positive, got ", grids);
    sizes.push_back(g * g);
    total += g * g;
  }
  const int64_t m = tokens.size(0), c = tokens.size(1);
  Tensor dense = reshape(
      scatter_rows(reshape(tokens, {1, m, c}), reshape(positions, {1, m}), total), {total, c});
  std::vector<Tensor> out;
  std::vector<Tensor> pieces = split(dense, sizes, 0);
  for (size_t k = 0; k < grids.size(); ++k)
    out.push_back(reshape(pieces[k], {grids[k], grids[k], c}));
  return out;
}

}  // namespace hd::vilahd
