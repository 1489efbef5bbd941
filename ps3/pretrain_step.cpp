// One PS3 pre-training forward (ps3-reference-implementation.md §2.2, §2.3).
//
// Order matters: the text tower runs first because its prompt drives the top-down selection;
// GT forcing and in-box pooling read the per-scale GT maps; global-caption rows take the low-res
// MAP vector and local rows the in-box high-res one; then the contrast over every rank's texts
// and the two selection BCEs on local rows. Normalisers are global (see contrastive_loss.h and
// selection_loss.h) so that the mean over ranks of the returned loss is the loss of one process
// holding the whole batch, however the loader split or thinned it.
#include <cmath>
#include <tuple>

#include "autograd/error.h"
#include "ops/cpu_half.h"
#include "ops/elementwise.h"
#include "ops/factory.h"
#include "ops/reduce.h"
#include "ops/shape.h"
#include "ops/similarity.h"
#include "parallel/autograd_collectives.h"
#include "parallel/process_group.h"
#include "ps3/contrastive_loss.h"
#include "ps3/data/loader.h"
#include "ps3/pretrain.h"
#include "ps3/selection_loss.h"
#include "ps3/text_tower.h"

namespace hd::ps3 {
namespace {

void check_batch(const PS3Config& c, const data::Batch& batch) {
  const int64_t B = batch.batch_size();
  HD_CHECK(B > 0,
           "pretrain_forward: empty batch (the vision tower needs at least one image per "
           "rank)");
  HD_CHECK(batch.tokens.defined() && batch.tokens.dim() == 2 && batch.tokens.size(0) == B,
           "pretrain_forward: batch.tokens must be [", B, ", ", c.text.context,
           "] (was the loader given a tokenizer?), got ",
           batch.tokens.defined() ? batch.tokens.str() : "undefined");
  HD_CHECK(batch.low_res.defined() && batch.selection.defined(),
           "pretrain_forward: the batch needs its low_res and selection views (loader "
           "selection_res must be ",
           c.vision.selection_res, ")");
  HD_CHECK(int64_t(batch.is_global.size()) == B && int64_t(batch.boxes.size()) == B &&
               int64_t(batch.images.size()) == B,
           "pretrain_forward: batch of ", B, " images has ", batch.is_global.size(),
           " is_global flags, ", batch.boxes.size(), " box lists and ", batch.images.size(),
           " images");
  HD_CHECK(batch.size == c.vision.image_size(), "pretrain_forward: batch images are ", batch.size,
           " px, the model's largest scale is ", c.vision.image_size());
}

double share_inside(const std::vector<Tensor>& selection_maps, const std::vector<Tensor>& gt,
                    const std::vector<bool>& rows_wanted, int64_t& selected_total) {
  double inside = 0, selected = 0;
  selected_total = 0;
  for (size_t s = 0; s < selection_maps.size(); ++s) {
    std::vector<float> sel = selection_maps[s].to_vector<float>();
    std::vector<float> g = gt[s].to_vector<float>();
    const size_t per = sel.size() / rows_wanted.size();
    for (size_t i = 0; i < sel.size(); ++i) {
      selected_total += sel[i] > 0.5f;
      if (!rows_wanted[i / per]) continue;
      selected += sel[i];
      inside += sel[i] * g[i];
    }
  }
  return selected > 0 ? inside / selected : 0.0;
}

// Mean probability over local rows' box cells and over their other cells.
std::pair<double, double> box_probability(const Tensor& probs, const Tensor& gt,
                                          const std::vector<bool>& rows_wanted) {
  std::vector<float> p = probs.to_vector<float>(), g = gt.to_vector<float>();
  const size_t per = p.size() / rows_wanted.size();
  double in = 0, out = 0, n_in = 0, n_out = 0;
  for (size_t i = 0; i < p.size(); ++i) {
    if (!rows_wanted[i / per]) continue;
    if (g[i] > 0.5f)
      in += p[i], ++n_in;
    else
      out += p[i], ++n_out;
  }
  return {n_in > 0 ? in / n_in : NAN, n_out > 0 ? out / n_out : NAN};
}

PretrainResult forward_body(const PS3CLIP& model, const data::Batch& batch,
                            const PretrainOptions& options, parallel::ProcessGroup* pg) {
  const PS3Config& c = model.config();
  check_batch(c, batch);
  const int64_t B = batch.batch_size();
  const size_t ns = c.vision.scales.size();
  // The batch is made on the host (the loader); the model and its losses live on the model's
  // device, where the targets and masks below are moved (the vision model moves its own inputs).
  const Device device = model.logit_scale.device();
  auto on_device = [device](const Tensor& t) { return to(t, device); };

  // posterior_all_regions: the regions' captions go through the text tower in the same call as
  // the rows' (one pass per FSDP unit), rows first; rows are independent in the tower.
  std::vector<int64_t> region_rows;
  Tensor region_prompts;
  TextOutputs text;
  if (options.posterior_all_regions) {
    Tensor region_tokens = batch.region_tokens(region_rows);
    const int64_t R = int64_t(region_rows.size());
    TextOutputs both =
        model.text().forward(R > 0 ? cat({batch.tokens, region_tokens}, 0) : batch.tokens);
    text.features = narrow(both.features, 0, 0, B);
    text.prompt = narrow(both.prompt, 0, 0, B);
    if (R > 0) region_prompts = narrow(both.prompt, 0, B, R);
  } else {
    text = model.text().forward(batch.tokens);
  }

  VisionInputs in;
  in.low_res = batch.low_res;
  in.selection = batch.selection;
  in.patches = [&batch](int64_t b, int64_t scale, const std::vector<int64_t>& idx) {
    return batch.patches(b, scale, idx);
  };
  in.prompt = text.prompt;
  for (size_t s = 0; s < ns; ++s) in.gt_maps.push_back(on_device(batch.gt_map(c.vision.grid(s))));
  in.gt_forcing = options.gt_forcing;
  in.pool_gt_only = options.pool_gt_only;
  in.look_close_steps = options.look_close_steps;
  in.region_prompts = region_prompts;
  if (region_prompts.defined()) in.region_rows = region_rows;
  VisionOutputs v = model.vision().forward(in);
  // Losses in f32 (train.precision bf16: the towers compute in bf16, the losses and their
  // statistics do not), as autocast runs them; f32 and f64 models are unchanged.
  const auto widened = widen_16bit;  // ops/cpu_half.h
  for (auto* maps : {&v.prior_probs, &v.posterior_probs, &v.region_probs, &v.selection_maps}) {
    for (Tensor& m : *maps) m = widened(m);
  }
  v.low_res_pooled = widened(v.low_res_pooled);
  v.high_res_pooled = widened(v.high_res_pooled);
  text.features = widened(text.features);

  PretrainResult r;
  std::vector<bool> is_local(static_cast<size_t>(B), false);
  std::vector<bool> global_mask(static_cast<size_t>(B), false);
  for (int64_t b = 0; b < B; ++b) {
    global_mask[size_t(b)] = batch.is_global[size_t(b)];
    is_local[size_t(b)] = !batch.is_global[size_t(b)];
    (is_local[size_t(b)] ? r.local_rows : r.global_rows) += 1;
  }
  Tensor use_low = on_device(from_vector(global_mask, {B, 1}));
  Tensor image = l2_normalize(where(use_low, v.low_res_pooled, v.high_res_pooled), -1);
  Tensor contrastive = distributed_sigmoid_loss(image, text.features, widened(model.logit_scale),
                                                widened(model.logit_bias), pg);

  const int64_t n = pg ? pg->world_size() : 1;
  const int64_t local_global = pg ? parallel::all_reduce_count(r.local_rows, *pg) : r.local_rows;
  const double row_weight =
      local_global > 0 ? double(r.local_rows) * double(n) / double(local_global) : 0.0;
  std::vector<Tensor> prior_targets = in.gt_maps;
  if (options.prior_all_regions) {
    HD_CHECK(int64_t(batch.salient_boxes.size()) == B,
             "pretrain_forward: prior_all_regions needs the batch's salient_boxes (", B,
             " rows, got ", batch.salient_boxes.size(), ")");
    for (size_t s = 0; s < ns; ++s)
      prior_targets[s] = on_device(batch.salient_map(c.vision.grid(s)));
  }
  Tensor prior =
      selection_bce(v.prior_probs, prior_targets, is_local, row_weight, options.selection_loss);
  std::tie(r.prior_in_box, r.prior_outside) =
      box_probability(v.prior_probs[0], prior_targets[0], is_local);
  Tensor loss = add(contrastive, mul(prior, options.prior_weight));
  r.bce_prior = prior.item<double>();
  if (!v.posterior_probs.empty()) {
    Tensor posterior;
    if (options.posterior_all_regions) {
      // Normalised like the rows (selection_loss.h): the mean over ranks is the mean over every
      // region of the global batch.
      const int64_t R = int64_t(region_rows.size());
      const int64_t R_global = pg ? parallel::all_reduce_count(R, *pg) : R;
      const double region_weight = R_global > 0 ? double(R) * double(n) / double(R_global) : 0.0;
      if (R > 0) {
        std::vector<Tensor> region_maps;
        for (size_t s = 0; s < ns; ++s)
          region_maps.push_back(on_device(batch.region_maps(c.vision.grid(s))));
        posterior = selection_bce(v.region_probs, region_maps, std::vector<bool>(size_t(R), true),
                                  region_weight, options.selection_loss);
      } else {
        posterior = mul(sum(v.posterior_probs[0]), 0.0);  // still reaches the selection modules
      }
    } else {
      posterior = selection_bce(v.posterior_probs, in.gt_maps, is_local, row_weight,
                                options.selection_loss);
    }
    std::tie(r.posterior_in_box, r.posterior_outside) =
        box_probability(v.posterior_probs[0], in.gt_maps[0], is_local);
    loss = add(loss, mul(posterior, options.posterior_weight));
    r.bce_posterior = posterior.item<double>();
  }
  r.loss = loss;
  r.contrastive = contrastive.item<double>();
  r.gt_patch_share = share_inside(v.selection_maps, in.gt_maps, is_local, r.selected_patches);
  return r;
}

}  // namespace

PretrainResult pretrain_forward(const PS3CLIP& model, const data::Batch& batch,
                                const PretrainOptions& options, parallel::ProcessGroup* pg) {
  // The model itself is the outermost unit (FSDP's root under shard_ps3): its parameters are
  // unsharded around the whole step and its backward hook sits on the loss.
  PretrainResult r;
  Tensor loss = nn::run_unit(model.unit_runner(), model, Tensor(), [&](const Tensor&) {
    r = forward_body(model, batch, options, pg);
    return r.loss;
  });
  r.loss = loss;
  return r;
}

}  // namespace hd::ps3
