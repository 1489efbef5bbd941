// PS3VisionModel::forward: stage 1 (trunk low-res pass), stage 2 (selection probabilities),
// stage 3 (look-close steps), pooling. See vision_model.h for the outputs and
// ps3-reference-implementation.md §1 for the rules each piece follows; the pieces live in
// vision_trunk.h, selection.h, patch_selection.h and highres_tokens.h.
//
// Batching: every per-step tensor is [B, N, W] for the whole batch (all instances take the same
// count per scale, patch_selection.h), so each look-close step is one pass through the blocks.
// Only the patch fetch and the top-k loop are per instance.
#include "ps3/vision_model.h"

#include <algorithm>
#include <numeric>

#include "ops/elementwise.h"
#include "ops/factory.h"
#include "ops/index.h"
#include "ops/resample.h"
#include "ops/shape.h"
#include "ps3/highres_tokens.h"
#include "ps3/patch_selection.h"
#include "ps3/selection.h"
#include "ps3/vision_trunk.h"

namespace hd::ps3 {

struct PS3VisionModel::Parts {
  std::shared_ptr<VisionTrunk> trunk;
  std::shared_ptr<SelectionFeatureProj> selection_feature_proj;
  Tensor prior_prompt;
  std::vector<Tensor> pos_emb_residual;
  std::shared_ptr<ShallowConvNet> highres_selection_feature_module;
  std::shared_ptr<nn::Linear> prompt_proj_for_highres;
};

namespace {

// pos_emb_residual.N: one dense [1, g^2, W] parameter per high-res scale, zero-initialised.
class PosEmbResidual : public Module {
 public:
  PosEmbResidual(const VisionConfig& c) {
    for (size_t s = 0; s < c.scales.size(); ++s) {
      tables.push_back(register_parameter(std::to_string(s), {1, c.grid(s) * c.grid(s), c.width},
                                          Init::zeros()));
    }
  }
  std::vector<Tensor> tables;
};

}  // namespace

void PS3VisionModel::set_activation_checkpointing(bool on) {
  config_.activation_checkpointing = on;
  parts_->trunk->config.activation_checkpointing = on;
}

PS3VisionModel::PS3VisionModel(const VisionConfig& config)
    : config_(config), parts_(std::make_shared<Parts>()) {
  config_.validate();
  const VisionConfig& c = config_;
  const int64_t ns = int64_t(c.scales.size());
  Parts& p = *parts_;
  p.trunk = register_module("trunk", std::make_shared<VisionTrunk>(c));
  const int64_t sel_in = int64_t(c.select_layers.size()) * c.width;
  p.selection_feature_proj = register_module(
      "selection_feature_proj",
      std::make_shared<SelectionFeatureProj>(sel_in, std::max<int64_t>(ns, 1) * c.width));
  p.prior_prompt = register_parameter("prior_prompt", {c.width}, Init::normal(0.0, 1.0));
  auto residual = register_module("pos_emb_residual", std::make_shared<PosEmbResidual>(c));
  p.pos_emb_residual = residual->tables;
  p.highres_selection_feature_module =
      register_module("highres_selection_feature_module", std::make_shared<ShallowConvNet>(c));
  p.prompt_proj_for_highres = register_module(
      "prompt_proj_for_highres",
      std::make_shared<nn::Linear>(c.width, c.convnext_out * std::max<int64_t>(ns, 1)));
}

std::vector<const Module*> PS3VisionModel::sharding_units() const {
  std::vector<const Module*> units;
  for (const auto& block : *parts_->trunk->blocks) units.push_back(block.get());
  return units;
}

namespace {

void check_inputs(const VisionConfig& c, const VisionInputs& in, int64_t B_img, int64_t B) {
  const int64_t sr = c.selection_res;
  HD_CHECK(B_img == B || B_img == 1, "PS3 vision: ", B_img, " images for ", B,
           " prompts (one image with several prompts, or one per prompt)");
  HD_CHECK(in.selection.defined() && in.selection.dim() == 4 && in.selection.size(0) == B_img &&
               in.selection.size(1) == c.channels && in.selection.size(2) == sr &&
               in.selection.size(3) == sr,
           "PS3 vision: selection input must be [", B_img, ", ", c.channels, ", ", sr, ", ", sr,
           "], got ", in.selection.defined() ? in.selection.str() : std::string("undefined"));
  if (in.prompt.defined()) {
    HD_CHECK(in.prompt.shape() == Shape({B, c.width}), "PS3 vision: prompt must be [", B, ", ",
             c.width, "], got ", in.prompt.str());
  }
  HD_CHECK(in.look_close_steps >= 0, "PS3 vision: look_close_steps ", in.look_close_steps,
           " is negative");
  if (in.gt_forcing || in.pool_gt_only) {
    HD_CHECK(in.gt_maps.size() == c.scales.size(), "PS3 vision: gt_forcing / pool_gt_only need ",
             c.scales.size(), " gt_maps (one per high-res scale), got ", in.gt_maps.size());
    for (size_t s = 0; s < c.scales.size(); ++s) {
      HD_CHECK(in.gt_maps[s].shape() == Shape({B, c.grid(s), c.grid(s)}), "PS3 vision: gt_maps[", s,
               "] must be [", B, ", ", c.grid(s), ", ", c.grid(s), "], got ", in.gt_maps[s].str());
    }
  }
  if (!c.scales.empty() && in.look_close_steps > 0) {
    HD_CHECK(bool(in.patches), "PS3 vision: look_close_steps = ", in.look_close_steps,
             " but no patch source was given");
  }
}

// [B, G, G] -> per scale [B, g, g], PyTorch legacy nearest (block replication for square grids).
std::vector<Tensor> per_scale(const VisionConfig& c, const Tensor& prob) {
  std::vector<Tensor> maps;
  for (size_t s = 0; s < c.scales.size(); ++s) {
    maps.push_back(interpolate(prob, c.grid(s), c.grid(s), ResampleMode::nearest));
  }
  return maps;
}

}  // namespace

namespace {

// The model computes in its parameters' dtype (bf16 under FSDP's param_dtype, train.precision;
// f64 in gradient checks) and on their device. Float inputs (images, patches, prompts, GT maps)
// enter in that dtype (the selection image converts in its stem's gather), and every input on that
// device: the loader makes host tensors, and the patches are cut on the host from the uint8 image
// (only the selected ones cross to a GPU).
VisionInputs in_compute_dtype(const VisionInputs& raw, DType dt, Device device) {
  auto cast = [dt, device](const Tensor& t) {
    if (!t.defined()) return t;
    Tensor on = to(t, device);
    return is_floating(on.dtype()) && on.dtype() != dt ? to(on, dt) : on;
  };
  VisionInputs in = raw;
  in.low_res = cast(raw.low_res);
  // The selection image only feeds the selection stem, a patch convolution that converts its
  // patches as it gathers them (ops/conv.h): rounding the 1512 px image to bf16 first was a
  // pass of its own (3.2 ms of a 3780 demo step).
  if (raw.selection.defined()) in.selection = to(raw.selection, device);
  in.prompt = cast(raw.prompt);
  in.region_prompts = cast(raw.region_prompts);
  for (Tensor& m : in.gt_maps) m = cast(m);
  if (raw.patches) {
    in.patches = [source = raw.patches, cast](int64_t b, int64_t scale,
                                              const std::vector<int64_t>& idx) {
      return cast(source(b, scale, idx));
    };
  }
  return in;
}

}  // namespace

VisionOutputs PS3VisionModel::forward(const VisionInputs& raw_inputs) const {
  const VisionConfig& c = config_;
  const Parts& p = *parts_;
  HD_CHECK(raw_inputs.low_res.defined(), "PS3 vision: low_res input is undefined");
  const VisionInputs in =
      in_compute_dtype(raw_inputs, p.prior_prompt.dtype(), p.prior_prompt.device());
  // One image with B prompts (an evaluation ranking every caption on every image): stage 1 and
  // the selection features are computed once and broadcast to the B rows.
  const int64_t B_img = in.low_res.size(0), W = c.width, G = c.low_grid();
  const int64_t B = in.prompt.defined() ? in.prompt.size(0) : B_img;
  check_inputs(c, in, B_img, B);
  const size_t ns = c.scales.size();
  VisionOutputs out;

  // Stage 1: low-res pass with the per-layer cache.
  LowResPass low = p.trunk->forward_low_res(in.low_res, runner_);
  auto rows = [&](const Tensor& t) {
    if (B_img == B) return t;
    Shape shape = t.shape();
    shape[0] = B;
    return expand(t, shape);
  };
  out.low_res_tokens = rows(low.hidden.back());
  const int64_t depth = int64_t(low.hidden.size());
  const int64_t feature_block =
      in.feature_layer < 0 ? depth + in.feature_layer : in.feature_layer - 1;
  HD_CHECK(feature_block >= 0 && feature_block < depth, "PS3 vision: feature_layer ",
           in.feature_layer, " is outside the ", depth, " blocks (use 1..", depth, " or -1..-",
           depth, ")");
  out.low_res_features = rows(low.hidden[size_t(feature_block)]);
  out.low_res_pooled = rows(p.trunk->pool(low.hidden.back()));

  // Stage 2: selection probabilities (prior always, posterior with a prompt).
  std::vector<Tensor> chosen_layers;
  for (int64_t l : c.select_layers) chosen_layers.push_back(low.hidden[size_t(l)]);
  SelectionFeatures features;
  features.lowres = rows(
      reshape(p.selection_feature_proj->forward_rows(cat(chosen_layers, 2), W), {B_img, G, G, W}));
  features.highres = rows(p.highres_selection_feature_module->forward(in.selection));
  for (Tensor& h : low.hidden) h = rows(h);
  for (auto& kv : low.kv) kv.k = rows(kv.k), kv.v = rows(kv.v);
  Tensor prior = selection_probability(features, expand(reshape(p.prior_prompt, {1, W}), {B, W}),
                                       *p.prompt_proj_for_highres);
  out.prior_probs = per_scale(c, prior);
  if (in.prompt.defined()) {
    out.posterior_probs =
        per_scale(c, selection_probability(features, in.prompt, *p.prompt_proj_for_highres));
  }
  if (in.region_prompts.defined()) {
    const int64_t R = in.region_prompts.size(0);
    HD_CHECK(in.region_prompts.dim() == 2 && in.region_prompts.size(1) == W &&
                 int64_t(in.region_rows.size()) == R,
             "PS3 vision: region_prompts must be [R, ", W, "] with R region_rows, got ",
             in.region_prompts.str(), " and ", in.region_rows.size(), " rows");
    for (int64_t r : in.region_rows)
      HD_CHECK(r >= 0 && r < B, "PS3 vision: region row ", r, " outside the batch of ", B);
    Tensor idx = from_vector<int64_t>(in.region_rows, {R});
    SelectionFeatures of_rows{index_select(features.lowres, 0, idx),
                              index_select(features.highres, 0, idx)};
    out.region_probs =
        per_scale(c, selection_probability(of_rows, in.region_prompts, *p.prompt_proj_for_highres));
  }
  const std::vector<Tensor>& ranking = in.prompt.defined() ? out.posterior_probs : out.prior_probs;

  // Stage 3: look-close steps, each attending to the low-res cache and its own tokens only.
  std::vector<int64_t> grids, offsets;
  int64_t total_cells = 0;
  for (size_t s = 0; s < ns; ++s) {
    grids.push_back(c.grid(s));
    offsets.push_back(total_cells);
    total_cells += c.grid(s) * c.grid(s);
  }
  PatchSelector selector(grids, B);
  const std::vector<int64_t> budget =
      in.select_per_scale.empty() ? split_budget(c.scales, c.max_select) : in.select_per_scale;
  HD_CHECK(budget.size() == ns, "PS3 vision: select_per_scale has ", budget.size(), " entries for ",
           ns, " scales");
  for (int64_t n : budget) HD_CHECK(n >= 0, "PS3 vision: select_per_scale entries must be >= 0");
  const Tensor& embed_w = p.trunk->patch_embed->proj->weight;
  const Tensor& embed_b = p.trunk->patch_embed->proj->bias;
  std::vector<Tensor> step_tokens, step_features;
  std::vector<std::vector<int64_t>> positions(
      static_cast<size_t>(B));  // per instance, in step order
  for (int64_t step = 0; ns > 0 && step < in.look_close_steps; ++step) {
    StepSelection sel = selector.select(ranking, in.gt_forcing ? in.gt_maps[0] : Tensor(), budget);
    const int64_t N = sel.total();
    if (N == 0) break;            // every position of every scale has been taken
    std::vector<Tensor> patches;  // instance-major, scale order inside: the [B, N] token order
    for (int64_t b = 0; b < B; ++b) {
      for (size_t s = 0; s < ns; ++s) {
        const std::vector<int64_t>& idx = sel.indices[s][size_t(b)];
        if (idx.empty()) continue;
        Tensor t = in.patches(b, c.scales[s], idx);
        HD_CHECK(t.defined() && t.dim() == 4 && t.size(0) == int64_t(idx.size()) &&
                     t.size(1) == c.channels && t.size(2) == c.patch && t.size(3) == c.patch,
                 "PS3 vision: patch source returned ", t.defined() ? t.str() : "undefined", " for ",
                 idx.size(), " patches at scale ", c.scales[s], ", expected [", idx.size(), ", ",
                 c.channels, ", ", c.patch, ", ", c.patch, "]");
        patches.push_back(t);
        for (int64_t i : idx) positions[size_t(b)].push_back(offsets[s] + i);
      }
    }
    Tensor x = embed_selected_patches(
        reshape(cat(patches, 0), {B, N, c.channels, c.patch, c.patch}), embed_w, embed_b);
    std::vector<Tensor> pos;
    for (size_t s = 0; s < ns; ++s) {
      if (sel.counts[s] == 0) continue;
      std::vector<int64_t> flat;
      for (int64_t b = 0; b < B; ++b) {
        flat.insert(flat.end(), sel.indices[s][size_t(b)].begin(), sel.indices[s][size_t(b)].end());
      }
      Tensor e = highres_position_embedding(p.trunk->pos_embed, p.pos_emb_residual[s], grids[s],
                                            from_vector<int64_t>(flat, {int64_t(flat.size())}));
      pos.push_back(reshape(e, {B, sel.counts[s], W}));
    }
    x = add(x, cat(pos, 1));
    std::vector<Tensor> hidden;
    step_tokens.push_back(p.trunk->forward_high_res(x, low, runner_, &hidden));
    step_features.push_back(hidden[size_t(feature_block)]);
  }
  out.selection_maps = selector.selection_maps(in.low_res.dtype());

  // Sort all steps' tokens by position (scale, row, col), as the reference's output layout.
  const int64_t M = positions.empty() ? 0 : int64_t(positions[0].size());
  if (M == 0) {
    out.high_res_tokens = zeros({B, 0, W}, out.low_res_tokens.dtype());
    out.high_res_features = out.high_res_tokens;
    out.high_res_positions = zeros({B, 0}, DType::i64);
    out.high_res_pooled = out.low_res_pooled;  // nothing to pool over: the global embedding
    return out;
  }
  Tensor all = cat(step_tokens, 1);  // [B, M, W] in step order
  std::vector<int64_t> gather_rows, sorted_pos;
  for (int64_t b = 0; b < B; ++b) {
    const std::vector<int64_t>& pb = positions[size_t(b)];
    std::vector<int64_t> order(static_cast<size_t>(M));
    std::iota(order.begin(), order.end(), int64_t(0));
    std::sort(order.begin(), order.end(), [&](int64_t a, int64_t d) { return pb[a] < pb[d]; });
    for (int64_t o : order) {
      gather_rows.push_back(b * M + o);
      sorted_pos.push_back(pb[size_t(o)]);
    }
  }
  const Tensor gather_index = from_vector<int64_t>(gather_rows, {B * M});
  out.high_res_tokens = reshape(index_select(reshape(all, {B * M, W}), 0, gather_index), {B, M, W});
  out.high_res_features =
      feature_block == depth - 1
          ? out.high_res_tokens
          : reshape(index_select(reshape(cat(step_features, 1), {B * M, W}), 0, gather_index),
                    {B, M, W});
  out.high_res_positions = from_vector<int64_t>(sorted_pos, {B, M});

  Tensor key_mask;
  if (in.pool_gt_only) {
    std::vector<Tensor> flat_gt;
    for (size_t s = 0; s < ns; ++s) flat_gt.push_back(reshape(in.gt_maps[s], {B, -1}));
    key_mask = gt(gather(cat(flat_gt, 1), 1, out.high_res_positions), 0.0);
  }
  out.high_res_pooled = p.trunk->pool(out.high_res_tokens, key_mask);
  return out;
}

}  // namespace hd::ps3
