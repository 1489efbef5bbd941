#include "vilahd/qwen2.h"

#include <cmath>
#include <string>

#include "ops/factory.h"
#include "ops/index.h"
#include "ops/linalg.h"
#include "ops/loss.h"
#include "ops/shape.h"

namespace hd::vilahd {

namespace {

// HF's _init_weights: N(0, initializer_range) for every Linear weight and the embedding, zeros
// for biases; RMSNorm weights are ones.
std::shared_ptr<nn::Linear> make_linear(int64_t in, int64_t out, bool bias, double std) {
  return std::make_shared<nn::Linear>(in, out, bias, Init::normal(0.0, std), Init::zeros());
}

// [B, nKV, T, Dh] -> [B, nKV * n_rep, T, Dh]: each kv head repeated n_rep times consecutively
// (query head h reads kv head h / n_rep, §3.4 step 4).
Tensor repeat_kv(const Tensor& x, int64_t n_rep) {
  if (n_rep == 1) return x;
  const int64_t B = x.size(0), kv = x.size(1), T = x.size(2), Dh = x.size(3);
  return reshape(expand(unsqueeze(x, 2), {B, kv, n_rep, T, Dh}), {B, kv * n_rep, T, Dh});
}

Tensor rotate_half_rope(const Tensor& x, const Tensor& cos, const Tensor& sin) {
  const int64_t half = x.size(-1) / 2;
  Tensor rotated = cat({neg(narrow(x, -1, half, half)), narrow(x, -1, 0, half)}, -1);
  return add(mul(x, cos), mul(rotated, sin));
}

Tensor to_bool_mask(const Tensor& mask) {
  return mask.dtype() == DType::boolean ? mask : ne(mask, 0.0);
}

}  // namespace

std::vector<float> qwen2_inv_freq(int64_t head_dim, double theta) {
  std::vector<float> inv(size_t(head_dim / 2));
  for (int64_t k = 0; k < head_dim / 2; ++k) {
    const float exponent = float(2 * k) / float(head_dim);  // fp32 division, as torch
    const float power = float(std::pow(theta, double(exponent)));
    inv[size_t(k)] = 1.0f / power;
  }
  return inv;
}

RotaryTables qwen2_rotary(const Tensor& position_ids, int64_t head_dim, double theta, DType dtype,
                          Device device) {
  HD_CHECK(position_ids.dim() == 2, "qwen2_rotary: position_ids must be [B, T], got ",
           position_ids.str());
  const int64_t B = position_ids.size(0), T = position_ids.size(1), half = head_dim / 2;
  const std::vector<int64_t> pos = position_ids.to_vector<int64_t>();
  const std::vector<float> inv = qwen2_inv_freq(head_dim, theta);
  std::vector<double> c(size_t(B * T * head_dim)), s(c.size());
  for (int64_t r = 0; r < B * T; ++r) {
    for (int64_t k = 0; k < half; ++k) {
      // f32 model: the angle is one fp32 product and cos/sin are fp32 (HF, autocast off). f64
      // model (gradient checks): everything in f64 so the check sees no f32 noise.
      double cv, sv;
      if (dtype == DType::f64) {
        const double a = double(pos[size_t(r)]) * double(inv[size_t(k)]);
        cv = std::cos(a), sv = std::sin(a);
      } else {
        const float a = float(pos[size_t(r)]) * inv[size_t(k)];
        cv = std::cos(a), sv = std::sin(a);
      }
      for (int64_t j : {k, k + half}) {
        c[size_t(r * head_dim + j)] = cv;
        s[size_t(r * head_dim + j)] = sv;
      }
    }
  }
  DType table_dtype = dtype == DType::f64 ? DType::f64 : DType::f32;
  Tensor cos = from_vector<double>(c, {B, 1, T, head_dim}, table_dtype);
  Tensor sin = from_vector<double>(s, {B, 1, T, head_dim}, table_dtype);
  if (table_dtype != dtype)
    cos = to(cos, dtype), sin = to(sin, dtype);  // §3.3: cast to model dtype
  if (device != Device::cpu()) cos = to(cos, device), sin = to(sin, device);
  return {cos, sin};
}

Qwen2Attention::Qwen2Attention(const Qwen2Config& c)
    : heads(c.num_attention_heads), kv_heads(c.num_key_value_heads), head_dim(c.head_dim()) {
  const double std = c.initializer_range;
  q_proj = register_module("q_proj", make_linear(c.hidden_size, heads * head_dim, true, std));
  k_proj = register_module("k_proj", make_linear(c.hidden_size, kv_heads * head_dim, true, std));
  v_proj = register_module("v_proj", make_linear(c.hidden_size, kv_heads * head_dim, true, std));
  o_proj = register_module("o_proj", make_linear(heads * head_dim, c.hidden_size, false, std));
}

Tensor Qwen2Attention::forward(const Tensor& x, const Tensor& cos, const Tensor& sin,
                               const Tensor& key_mask, Tensor* cache_k, Tensor* cache_v) const {
  const int64_t B = x.size(0), T = x.size(1);
  auto heads_of = [&](const Tensor& y, int64_t n) {
    return transpose(reshape(y, {B, T, n, head_dim}), 1, 2);  // [B, n, T, Dh]
  };
  Tensor q = rotate_half_rope(heads_of(q_proj->forward(x), heads), cos, sin);
  Tensor k = rotate_half_rope(heads_of(k_proj->forward(x), kv_heads), cos, sin);
  Tensor v = heads_of(v_proj->forward(x), kv_heads);

  AttentionOptions options;
  options.causal = true;
  options.key_mask = key_mask;
  const int64_t n_rep = heads / kv_heads;
  if (cache_k && cache_k->defined() && cache_k->size(2) > 0) {
    // The cached keys precede every new one: the kernel's always-visible prefix.
    options.prefix_k = repeat_kv(*cache_k, n_rep);
    options.prefix_v = repeat_kv(*cache_v, n_rep);
  }
  Tensor out = scaled_dot_product_attention(q, repeat_kv(k, n_rep), repeat_kv(v, n_rep), options);
  if (cache_k) {
    const bool empty = !cache_k->defined() || cache_k->size(2) == 0;
    *cache_k = empty ? contiguous(k) : cat({*cache_k, k}, 2);
    *cache_v = empty ? contiguous(v) : cat({*cache_v, v}, 2);
  }
  return o_proj->forward(reshape(transpose(out, 1, 2), {B, T, heads * head_dim}));
}

Qwen2MLP::Qwen2MLP(const Qwen2Config& c) {
  const double std = c.initializer_range;
  gate_proj =
      register_module("gate_proj", make_linear(c.hidden_size, c.intermediate_size, false, std));
  up_proj = register_module("up_proj", make_linear(c.hidden_size, c.intermediate_size, false, std));
  down_proj =
      register_module("down_proj", make_linear(c.intermediate_size, c.hidden_size, false, std));
}

Tensor Qwen2MLP::forward(const Tensor& x) const {
  return down_proj->forward(mul(silu(gate_proj->forward(x)), up_proj->forward(x)));
}

Qwen2DecoderLayer::Qwen2DecoderLayer(const Qwen2Config& c) {
  input_layernorm = register_module("input_layernorm",
                                    std::make_shared<nn::RMSNorm>(c.hidden_size, c.rms_norm_eps));
  self_attn = register_module("self_attn", std::make_shared<Qwen2Attention>(c));
  post_attention_layernorm = register_module(
      "post_attention_layernorm", std::make_shared<nn::RMSNorm>(c.hidden_size, c.rms_norm_eps));
  mlp = register_module("mlp", std::make_shared<Qwen2MLP>(c));
}

Tensor Qwen2DecoderLayer::forward(const Tensor& x, const Tensor& cos, const Tensor& sin,
                                  const Tensor& key_mask, Tensor* cache_k, Tensor* cache_v) const {
  Tensor h =
      add(x, self_attn->forward(input_layernorm->forward(x), cos, sin, key_mask, cache_k, cache_v));
  return add(h, mlp->forward(post_attention_layernorm->forward(h)));
}

Qwen2Embedding::Qwen2Embedding(int64_t vocab, int64_t hidden, double init_std) {
  weight = register_parameter("weight", {vocab, hidden}, Init::normal(0.0, init_std));
}

Tensor Qwen2Embedding::forward(const Tensor& ids) const {
  HD_CHECK(ids.dtype() == DType::i64 || ids.dtype() == DType::i32,
           "Qwen2Embedding: token ids must be integers, got ", ids.str());
  return embedding(weight, ids);
}

Qwen2Model::Qwen2Model(const Qwen2Config& c) {
  embed_tokens = register_module(
      "embed_tokens",
      std::make_shared<Qwen2Embedding>(c.vocab_size, c.hidden_size, c.initializer_range));
  layers = register_module("layers", std::make_shared<ModuleList<Qwen2DecoderLayer>>());
  for (int64_t i = 0; i < c.num_hidden_layers; ++i)
    layers->push_back(std::make_shared<Qwen2DecoderLayer>(c));
  norm = register_module("norm", std::make_shared<nn::RMSNorm>(c.hidden_size, c.rms_norm_eps));
}

Qwen2ForCausalLM::Qwen2ForCausalLM(const Qwen2Config& config) : config_(config) {
  config_.validate("Qwen2ForCausalLM");
  model = register_module("model", std::make_shared<Qwen2Model>(config_));
  if (!config_.tie_word_embeddings)
    lm_head = register_module("lm_head", make_linear(config_.hidden_size, config_.vocab_size, false,
                                                     config_.initializer_range));
}

const Tensor& Qwen2ForCausalLM::output_weight() const {
  return lm_head ? lm_head->weight : model->embed_tokens->weight;
}

Qwen2KVCache Qwen2ForCausalLM::new_cache() const {
  Qwen2KVCache cache;
  cache.k.resize(model->layers->size());
  cache.v.resize(model->layers->size());
  return cache;
}

std::vector<const Module*> Qwen2ForCausalLM::sharding_units() const {
  std::vector<const Module*> units;
  for (const auto& layer : *model->layers) units.push_back(layer.get());
  return units;
}

Tensor Qwen2ForCausalLM::hidden_states(const Qwen2Inputs& in) const {
  HD_CHECK(in.input_ids.defined() != in.inputs_embeds.defined(),
           "Qwen2ForCausalLM: give exactly one of input_ids and inputs_embeds");
  Tensor x = in.input_ids.defined() ? embed(in.input_ids) : in.inputs_embeds;
  HD_CHECK(x.dim() == 3 && x.size(2) == config_.hidden_size,
           "Qwen2ForCausalLM: expected inputs [B, T, ", config_.hidden_size, "], got ", x.str());
  const int64_t B = x.size(0), T = x.size(1);
  const int64_t past = in.cache ? in.cache->length() : 0;
  HD_CHECK(!in.cache || in.cache->k.size() == model->layers->size(),
           "Qwen2ForCausalLM: the KV cache has ", in.cache ? in.cache->k.size() : 0,
           " layers, the model ", model->layers->size(), " (use new_cache())");
  HD_CHECK(past + T <= config_.max_position_embeddings, "Qwen2ForCausalLM: ", past + T,
           " tokens exceed max_position_embeddings ", config_.max_position_embeddings);

  Tensor positions = in.position_ids;
  if (!positions.defined()) {
    positions = expand(unsqueeze(arange(double(past), double(past + T)), 0), {B, T});
  }
  HD_CHECK(positions.shape() == (Shape{B, T}), "Qwen2ForCausalLM: position_ids ", positions.str(),
           " must be [", B, ", ", T, "]");
  RotaryTables rope =
      qwen2_rotary(positions, config_.head_dim(), config_.rope_theta, x.dtype(), x.device());

  // The key mask covers [cached keys ; new keys]; undefined when every key is real.
  Tensor key_mask;
  Tensor new_mask = in.attention_mask.defined() ? to_bool_mask(in.attention_mask) : Tensor();
  HD_CHECK(!new_mask.defined() || new_mask.shape() == (Shape{B, T}),
           "Qwen2ForCausalLM: attention_mask ", in.attention_mask.str(), " must be [", B, ", ", T,
           "]");
  const bool cached_mask = in.cache && in.cache->key_mask.defined();
  if (new_mask.defined() || cached_mask) {
    Tensor past_mask =
        cached_mask ? in.cache->key_mask
                    : (past > 0 ? full({B, past}, 1.0, DType::boolean, x.device()) : Tensor());
    Tensor now = new_mask.defined() ? new_mask : full({B, T}, 1.0, DType::boolean, x.device());
    key_mask = past_mask.defined() ? cat({past_mask, now}, 1) : now;
  }

  for (size_t i = 0; i < model->layers->size(); ++i) {
    const Qwen2DecoderLayer& layer = (*model->layers)[i];
    Tensor* ck = in.cache ? &in.cache->k[i] : nullptr;
    Tensor* cv = in.cache ? &in.cache->v[i] : nullptr;
    // Recomputation is for training; a KV cache (generation) would be appended to twice.
    const bool recompute = config_.activation_checkpointing && !in.cache;
    x = nn::run_unit(runner_, layer, x,
                     nn::recomputed(recompute, [l = &layer, cos = rope.cos, sin = rope.sin,
                                                key_mask, ck, cv](const Tensor& h) {
                       return l->forward(h, cos, sin, key_mask, ck, cv);
                     }));
  }
  if (in.cache && key_mask.defined()) in.cache->key_mask = key_mask;
  return model->norm->forward(x);
}

Tensor Qwen2ForCausalLM::logits(const Tensor& hidden) const {
  return linear(hidden, output_weight());
}

Tensor causal_lm_loss(const Tensor& logits, const Tensor& labels) {
  HD_CHECK(logits.dim() == 3 && labels.dim() == 2 && labels.size(0) == logits.size(0) &&
               labels.size(1) == logits.size(1),
           "causal_lm_loss: logits ", logits.str(), " and labels ", labels.str(),
           " must be [B, T, V] and [B, T]");
  const int64_t B = logits.size(0), T = logits.size(1), V = logits.size(2);
  HD_CHECK(T >= 2, "causal_lm_loss: need at least 2 positions, got ", T);
  Tensor shifted_logits = reshape(narrow(logits, 1, 0, T - 1), {B * (T - 1), V});
  Tensor shifted_labels = reshape(contiguous(narrow(labels, 1, 1, T - 1)), {B * (T - 1)});
  return cross_entropy(shifted_logits, shifted_labels, -100, Reduction::mean);
}

}  // namespace hd::vilahd
