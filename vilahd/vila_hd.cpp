#include "vilahd/vila_hd.h"

#include <algorithm>
#include <optional>

#include "autograd/node.h"
#include "ops/cpu_half.h"
#include "ops/factory.h"
#include "ops/loss.h"
#include "ops/shape.h"

namespace hd::vilahd {

namespace {

// Text ids -> [n, D] embeddings.
Tensor embed_ids(const Qwen2ForCausalLM& llm, const std::vector<int64_t>& ids) {
  Tensor t = from_vector<int64_t>(ids, {1, int64_t(ids.size())});
  Device device = llm.output_weight().device();
  if (device != Device::cpu()) t = to(t, device);
  Tensor e = llm.embed(t);
  return reshape(e, {e.size(1), e.size(2)});
}

void check_sample(const VilaSample& s, const VilaHdConfig& c) {
  const int64_t images = std::count(s.input_ids.begin(), s.input_ids.end(), kImageToken);
  HD_CHECK(images == int64_t(s.images.size()), "VILA-HD: the sample has ", images,
           " <image> tokens but ", s.images.size(), " images");
  HD_CHECK(s.labels.empty() || s.labels.size() == s.input_ids.size(), "VILA-HD: ", s.labels.size(),
           " labels for ", s.input_ids.size(), " input ids");
  for (int64_t id : s.input_ids) {
    HD_CHECK(id == kImageToken || (id >= 0 && id < c.llm.vocab_size), "VILA-HD: token id ", id,
             " is outside the LLM's ", c.llm.vocab_size, "-token vocabulary");
  }
  for (const VilaImage& im : s.images) {
    HD_CHECK(im.gt_maps.empty() || im.gt_maps.size() == c.vision.scales.size(),
             "VILA-HD: ", im.gt_maps.size(), " GT maps for ", c.vision.scales.size(),
             " PS3 scales");
  }
}

}  // namespace

VilaHdModel::VilaHdModel(const VilaHdConfig& config) : config_(config) {
  config_.validate("VILA-HD config");
  llm_ = register_module("llm", std::make_shared<Qwen2ForCausalLM>(config_.llm));
  projector_ = register_module("mm_projector",
                               std::make_shared<MlpDownsampleProjector>(config_.projector()));
  vision_ = register_module("vision_tower", std::make_shared<ps3::PS3VisionModel>(config_.vision));
}

void VilaHdModel::set_look_close_mode(LookCloseMode mode) {
  HD_CHECK(mode == LookCloseMode::after_image || projector_->has_prompt_head(),
           "VILA-HD: look_close_mode after_prompt needs the top-down prompt head, which this model "
           "(built for ",
           look_close_mode_name(config_.look_close_mode), ") does not have");
  config_.look_close_mode = mode;
}

void VilaHdModel::set_activation_checkpointing(bool llm, bool vision) {
  config_.llm.activation_checkpointing = llm;
  config_.vision.activation_checkpointing = vision;
  llm_->set_activation_checkpointing(llm);
  vision_->set_activation_checkpointing(vision);
}

void VilaHdModel::set_num_look_close(int64_t steps) {
  HD_CHECK(steps >= 0, "VILA-HD: num_look_close must be >= 0, got ", steps);
  config_.num_look_close = steps;
}

void VilaHdModel::set_select_num_each_scale(const std::vector<int64_t>& per_scale) {
  VilaHdConfig c = config_;
  c.select_num_each_scale = per_scale;
  c.validate("VILA-HD select_num_each_scale");
  config_.select_num_each_scale = per_scale;
}

std::vector<const Module*> VilaHdModel::sharding_units() const {
  std::vector<const Module*> units = llm_->sharding_units();
  for (const Module* m : vision_->sharding_units()) units.push_back(m);
  return units;
}

void VilaHdModel::set_unit_runner(const nn::UnitRunner& runner) {
  runner_ = runner;
  llm_->set_unit_runner(runner);
  vision_->set_unit_runner(runner);
}

Tensor VilaHdModel::low_res_only_tokens(const VilaImage& image) const {
  ps3::VisionInputs in = image.inputs;
  in.prompt = Tensor();
  in.gt_maps.clear();
  in.look_close_steps = 0;
  in.feature_layer = config_.mm_vision_select_layer;
  ps3::VisionOutputs out = vision_->forward(in);
  Tensor low =
      reshape(out.low_res_features, {out.low_res_features.size(1), out.low_res_features.size(2)});
  return projector_->project_image(low, {}, {}).tokens;
}

ImageLook VilaHdModel::look(const VilaImage& image, const Tensor& prompt,
                            int64_t num_look_close) const {
  const ps3::VisionConfig& vc = config_.vision;
  const bool forced = train_with_gt_selection_ && !image.gt_maps.empty();
  const std::string key = memo_ && !prompt.defined() ? memo_key(image, num_look_close) : "";
  const ps3::VisionOutputs* memo_hit = nullptr;
  if (!key.empty())
    if (auto it = memo_->outputs.find(key); it != memo_->outputs.end()) memo_hit = &it->second;
  ps3::VisionOutputs out;
  if (memo_hit) {
    out = *memo_hit;  // tensors are shared, not copied
  } else {
    ps3::VisionInputs in = image.inputs;
    HD_CHECK(in.low_res.defined() && in.low_res.size(0) == 1,
             "VILA-HD: each image must be one row, got ",
             in.low_res.defined() ? in.low_res.str() : std::string("no low-res input"));
    in.prompt = prompt;
    in.gt_maps.clear();
    if (forced) in.gt_maps = image.gt_maps, in.gt_forcing = true;
    in.look_close_steps = num_look_close;
    in.feature_layer = config_.mm_vision_select_layer;
    in.select_per_scale = config_.select_num_each_scale;
    out = vision_->forward(in);
    if (!key.empty()) memo_->outputs.emplace(key, memo_entry(out));
  }

  ImageLook look;
  look.prompt = prompt;
  look.ranking = prompt.defined() ? out.posterior_probs : out.prior_probs;
  look.selection_maps = out.selection_maps;
  const Tensor low = select(out.low_res_features, 0, 0);
  if (num_look_close == 0 || vc.scales.empty()) {
    look.projected = projector_->project_image(low, {}, {});
    return look;
  }
  std::vector<int64_t> grids;
  for (size_t s = 0; s < vc.scales.size(); ++s) grids.push_back(vc.grid(s));
  std::vector<Tensor> dense = dense_scale_grids(select(out.high_res_features, 0, 0),
                                                select(out.high_res_positions, 0, 0), grids);
  std::vector<Tensor> maps;
  for (const Tensor& m : out.selection_maps) maps.push_back(select(m, 0, 0));
  look.projected = projector_->project_image(low, dense, maps);
  return look;
}

Tensor VilaHdModel::top_down_prompt(const VilaSample& sample) const {
  check_sample(sample, config_);
  const int64_t pos = sample.prompt_position;
  HD_CHECK(pos >= 0 && pos < int64_t(sample.input_ids.size()), "VILA-HD: prompt_position ", pos,
           " is outside the ", sample.input_ids.size(),
           "-token sample (after_prompt needs the last "
           "token of the first user turn)");
  Tensor hidden;
  {
    // The prompt pass (§3.2.2): low-res image tokens only, cut right after the prompt position,
    // no gradient (the LLM does not learn from the selection) unless prompt_pass_grad is on.
    std::optional<NoGradGuard> no_grad;
    if (!prompt_pass_grad_) no_grad.emplace();
    std::vector<Tensor> parts;
    std::vector<int64_t> text;
    size_t image = 0;
    const Tensor newline = embed_ids(*llm_, {config_.image_newline_token});
    for (int64_t i = 0; i <= pos; ++i) {
      const int64_t id = sample.input_ids[size_t(i)];
      if (id != kImageToken) {
        text.push_back(id);
        continue;
      }
      if (!text.empty()) parts.push_back(embed_ids(*llm_, text)), text.clear();
      parts.push_back(low_res_only_tokens(sample.images[image++]));
      parts.push_back(newline);
    }
    if (!text.empty()) parts.push_back(embed_ids(*llm_, text));
    Qwen2Inputs in;
    in.inputs_embeds = unsqueeze(cat(parts, 0), 0);
    Tensor h = llm_->hidden_states(in);                                // [1, T', D]
    hidden = reshape(narrow(h, 1, h.size(1) - 1, 1), {1, h.size(2)});  // the prompt position
  }
  return projector_->prompt(hidden);  // [1, W]; the head learns through the selection loss
}

Tensor VilaHdModel::embed_sample(const VilaSample& sample, int64_t num_look_close,
                                 std::vector<int64_t>* labels_out,
                                 std::vector<ImageLook>* looks) const {
  check_sample(sample, config_);
  if (num_look_close < 0) num_look_close = config_.num_look_close;
  Tensor prompt;
  // No look-close step, no selection: the prompt pass would be wasted.
  // With the vision memo, selection is bottom-up or forced (VisionMemo): no prompt pass.
  if (config_.look_close_mode == LookCloseMode::after_prompt && !sample.images.empty() &&
      num_look_close > 0 && !memo_)
    prompt = top_down_prompt(sample);

  std::vector<Tensor> parts;
  std::vector<int64_t> text, labels;
  const bool with_labels = !sample.labels.empty();
  const Tensor newline = embed_ids(*llm_, {config_.image_newline_token});
  size_t image = 0;
  for (size_t i = 0; i < sample.input_ids.size(); ++i) {
    const int64_t id = sample.input_ids[i];
    if (id != kImageToken) {
      text.push_back(id);
      labels.push_back(with_labels ? sample.labels[i] : -100);
      continue;
    }
    if (!text.empty()) parts.push_back(embed_ids(*llm_, text)), text.clear();
    ImageLook l = look(sample.images[image++], prompt, num_look_close);
    parts.push_back(l.projected.tokens);
    parts.push_back(newline);
    labels.insert(labels.end(), size_t(l.projected.tokens.size(0) + 1), -100);
    if (looks) looks->push_back(std::move(l));
  }
  if (!text.empty()) parts.push_back(embed_ids(*llm_, text));
  if (labels_out) *labels_out = std::move(labels);
  return cat(parts, 0);
}

Tensor image_selection_loss(const std::vector<Tensor>& probs, const std::vector<Tensor>& gt_maps) {
  HD_CHECK(probs.size() == gt_maps.size() && !probs.empty(), "image_selection_loss: ", probs.size(),
           " probability maps for ", gt_maps.size(), " GT maps");
  Tensor total;
  for (size_t s = 0; s < probs.size(); ++s) {
    // In fp32 as the reference (f64 stays f64 for gradient checks): a bf16 map would round the
    // BCE's logs and the DICE sums.
    const Tensor p = probs[s].dtype() == DType::f64 ? probs[s] : to(probs[s], DType::f32);
    Tensor g = to(to(gt_maps[s], p.device()), p.dtype());  // GT maps are made on the host
    HD_CHECK(p.shape() == g.shape(), "image_selection_loss: scale ", s, " probabilities ",
             p.shape(), " vs GT map ", g.shape());
    Tensor term = add(binary_cross_entropy(p, g), dice_loss(p, g));
    total = total.defined() ? add(total, term) : term;
  }
  return div(total, double(probs.size()));
}

void VilaHdModel::set_vision_memo(std::shared_ptr<VisionMemo> memo) {
  if (memo)
    for (const auto& [name, p] : vision_->named_parameters())
      HD_CHECK(!p.requires_grad(),
               "VILA-HD: the vision memo needs the whole vision tower frozen "
               "(trainable parts without vision_tower and top_down_selection), but vision_tower.",
               name, " is trainable");
  memo_ = std::move(memo);
}

void VilaHdModel::fill_vision_memo(const std::vector<VilaSample>& batch) const {
  HD_CHECK(memo_ != nullptr, "VILA-HD: fill_vision_memo without a memo (set_vision_memo)");
  NoGradGuard no_grad;
  nn::run_unit(runner_, *this, Tensor(), [&](const Tensor&) {
    for (const VilaSample& s : batch)
      for (const VilaImage& image : s.images) look(image, Tensor(), config_.num_look_close);
    return Tensor();
  });
}

// The key names the image and its box; forcing and the step count complete it.
std::string VilaHdModel::memo_key(const VilaImage& image, int64_t num_look_close) const {
  if (image.memo_key.empty()) return "";
  const bool forced = train_with_gt_selection_ && !image.gt_maps.empty();
  return image.memo_key + (forced ? "|forced|" : "|free|") + std::to_string(num_look_close);
}

std::string VilaHdModel::vision_memo_key(const VilaImage& image) const {
  return memo_key(image, config_.num_look_close);
}

VilaOutputs VilaHdModel::forward(const std::vector<VilaSample>& batch) const {
  HD_CHECK(!batch.empty(), "VILA-HD: empty batch");
  VilaOutputs out;
  // Under FSDP the whole step runs inside the root unit (its parameters gathered once).
  Tensor loss = nn::run_unit(runner_, *this, Tensor(), [&](const Tensor&) {
    forward_inside_root(batch, out);
    return out.loss;
  });
  out.loss = loss;
  return out;
}

void VilaHdModel::forward_inside_root(const std::vector<VilaSample>& batch,
                                      VilaOutputs& out) const {
  std::vector<Tensor> embeds;
  std::vector<std::vector<int64_t>> labels(batch.size());
  bool any_labels = false;
  for (size_t b = 0; b < batch.size(); ++b) {
    out.looks.emplace_back();
    embeds.push_back(embed_sample(batch[b], -1, &labels[b], &out.looks.back()));
    any_labels = any_labels || !batch[b].labels.empty();
  }
  int64_t T = 0;
  for (const Tensor& e : embeds) T = std::max(T, e.size(0));
  const int64_t B = int64_t(batch.size()), D = config_.llm.hidden_size;
  std::vector<Tensor> rows;
  std::vector<int64_t> mask(size_t(B * T), 0), flat_labels(size_t(B * T), -100);
  for (int64_t b = 0; b < B; ++b) {
    const Tensor& e = embeds[size_t(b)];
    const int64_t n = e.size(0);
    rows.push_back(n == T ? e : cat({e, zeros({T - n, D}, e.dtype(), e.device())}, 0));
    for (int64_t t = 0; t < n; ++t) {
      mask[size_t(b * T + t)] = 1;
      flat_labels[size_t(b * T + t)] = labels[size_t(b)][size_t(t)];
    }
  }
  if (any_labels) {
    Qwen2Inputs in;
    in.inputs_embeds = stack(rows, 0);
    in.attention_mask = from_vector<int64_t>(mask, {B, T});
    Tensor label_tensor = from_vector<int64_t>(flat_labels, {B, T});
    const Device device = in.inputs_embeds.device();
    if (device != Device::cpu()) {
      in.attention_mask = to(in.attention_mask, device);
      label_tensor = to(label_tensor, device);
    }
    // Losses in f32 (a bf16 model under train.precision; ops/cpu_half.h).
    out.lm_loss = causal_lm_loss(widen_16bit(llm_->forward(in)), label_tensor);
  }
  // Selection supervision over every image with a box (§3.7), averaged over those images.
  Tensor selection_total;
  int64_t supervised = 0;
  for (size_t b = 0; b < batch.size(); ++b) {
    for (size_t i = 0; i < batch[b].images.size(); ++i) {
      if (batch[b].images[i].gt_maps.empty()) continue;
      Tensor l = image_selection_loss(out.looks[b][i].ranking, batch[b].images[i].gt_maps);
      selection_total = selection_total.defined() ? add(selection_total, l) : l;
      ++supervised;
    }
  }
  if (supervised > 0) out.selection_loss = div(selection_total, double(supervised));
  const double w = config_.token_selection_loss_weight;
  if (out.lm_loss.defined() && out.selection_loss.defined() && w > 0) {
    out.loss = add(out.lm_loss, mul(out.selection_loss, w));
  } else if (out.lm_loss.defined()) {
    out.loss = out.lm_loss;
  } else if (out.selection_loss.defined()) {
    out.loss = mul(out.selection_loss, w > 0 ? w : 1.0);
  }
}

VilaHdModel::Answer VilaHdModel::answer(const VilaSample& prompt, const GenerationOptions& options,
                                        int64_t num_look_close) const {
  NoGradGuard no_grad;
  Answer a;
  Tensor embeds = embed_sample(prompt, num_look_close, nullptr, &a.looks);
  Qwen2Inputs in;
  in.inputs_embeds = unsqueeze(embeds, 0);
  GenerationResult r = generate(*llm_, in, options);
  a.tokens = std::move(r.tokens);
  a.stopped = r.stopped;
  return a;
}

}  // namespace hd::vilahd
