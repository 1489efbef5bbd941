// The Qwen2 decoder-only LLM (Qwen2ForCausalLM of HF transformers 4.46.3), from our ops.
//
// Every shape, order and rounding rule is qwen2-reference.md §3: token embedding (no scaling),
// pre-RMSNorm blocks (x + attn(norm(x)), then + mlp(norm(.))), half-split RoPE on q and k after
// their biases, grouped-query attention (query head h reads kv head h / n_rep), biases on q/k/v
// only, SwiGLU MLP, one final RMSNorm, LM head (tied to the embedding or its own matrix).
//
// Parameter names are HF's (model.embed_tokens.weight, model.layers.N.self_attn.q_proj.weight,
// ..., lm_head.weight), so a checkpoint loads by name and exports back unchanged (qwen2_hf.h).
//
// Attention goes through the blockwise kernel: causal over the new tokens, the KV cache as the
// always-visible prefix (its keys all precede the new ones), padding as the key mask. K/V are
// cached post-RoPE with un-repeated heads ([B, nKV, S, Dh], like HF's DynamicCache) and
// repeated to the query heads per call: the cache stays n_rep times smaller than the attention
// operands, which are transient.
#pragma once

#include <memory>
#include <vector>

#include "autograd/module.h"
#include "ops/nn/layers.h"
#include "ops/nn/unit_runner.h"
#include "vilahd/qwen2_config.h"

namespace hd::vilahd {

// Keys and values of the tokens seen so far, per layer, and which of them are real tokens.
struct Qwen2KVCache {
  std::vector<Tensor> k, v;  // per layer [B, nKV, S, Dh], post-RoPE
  Tensor key_mask;           // [B, S] bool (false: padding); undefined = every key is real
  int64_t length() const { return k.empty() || !k[0].defined() ? 0 : k[0].size(2); }
};

struct Qwen2Inputs {
  Tensor input_ids;      // [B, T] i64, or
  Tensor inputs_embeds;  // [B, T, H] (VILA-HD splices image tokens into the embeddings)
  // [B, T] bool or integer, nonzero = real token; undefined = all real. Padded keys are never
  // attended to; outputs at padded positions are unspecified (HF's are too, §3.4).
  Tensor attention_mask;
  // [B, T] i64 RoPE positions; undefined: cache length + 0..T-1 for every row (HF's forward).
  Tensor position_ids;
  Qwen2KVCache* cache = nullptr;  // read as the prefix and extended with this call's K/V
};

class Qwen2Attention : public Module {
 public:
  explicit Qwen2Attention(const Qwen2Config& config);
  // x [B, T, H], cos/sin [B, 1, T, Dh]. Appends this call's K/V to *cache_k/*cache_v if given.
  Tensor forward(const Tensor& x, const Tensor& cos, const Tensor& sin, const Tensor& key_mask,
                 Tensor* cache_k, Tensor* cache_v) const;
  std::shared_ptr<nn::Linear> q_proj, k_proj, v_proj, o_proj;
  int64_t heads, kv_heads, head_dim;
};

class Qwen2MLP : public Module {
 public:
  explicit Qwen2MLP(const Qwen2Config& config);
  Tensor forward(const Tensor& x) const;  // down(silu(gate(x)) * up(x))
  std::shared_ptr<nn::Linear> gate_proj, up_proj, down_proj;
};

class Qwen2DecoderLayer : public Module {
 public:
  explicit Qwen2DecoderLayer(const Qwen2Config& config);
  Tensor forward(const Tensor& x, const Tensor& cos, const Tensor& sin, const Tensor& key_mask,
                 Tensor* cache_k, Tensor* cache_v) const;
  std::shared_ptr<nn::RMSNorm> input_layernorm, post_attention_layernorm;
  std::shared_ptr<Qwen2Attention> self_attn;
  std::shared_ptr<Qwen2MLP> mlp;
};

// The embedding table as a module, so its parameter is "embed_tokens.weight".
class Qwen2Embedding : public Module {
 public:
  Qwen2Embedding(int64_t vocab, int64_t hidden, double init_std);
  Tensor forward(const Tensor& ids) const;  // [B, T] i64 -> [B, T, H]
  Tensor weight;
};

// "model.*": embeddings, layers, final norm.
class Qwen2Model : public Module {
 public:
  explicit Qwen2Model(const Qwen2Config& config);
  std::shared_ptr<Qwen2Embedding> embed_tokens;
  std::shared_ptr<ModuleList<Qwen2DecoderLayer>> layers;
  std::shared_ptr<nn::RMSNorm> norm;
};

class Qwen2ForCausalLM : public Module {
 public:
  explicit Qwen2ForCausalLM(const Qwen2Config& config);

  // The final-norm hidden states [B, T, H] (HF hidden_states[-1], lm_head's input).
  Tensor hidden_states(const Qwen2Inputs& inputs) const;
  Tensor logits(const Tensor& hidden) const;  // [.., H] -> [.., vocab_size]
  Tensor forward(const Qwen2Inputs& inputs) const { return logits(hidden_states(inputs)); }
  Tensor embed(const Tensor& ids) const { return model->embed_tokens->forward(ids); }
  // The output matrix: lm_head.weight, or the embedding when tied.
  const Tensor& output_weight() const;
  // An empty cache with one slot per layer.
  Qwen2KVCache new_cache() const;

  const Qwen2Config& config() const { return config_; }
  // Every decoder layer is an FSDP unit; the root holds embeddings, the final norm and lm_head.
  std::vector<const Module*> sharding_units() const;
  void set_unit_runner(nn::UnitRunner runner) { runner_ = std::move(runner); }
  // Recompute each decoder layer in backward (a training choice; see Qwen2Config).
  void set_activation_checkpointing(bool on) { config_.activation_checkpointing = on; }

  std::shared_ptr<Qwen2Model> model;
  std::shared_ptr<nn::Linear> lm_head;  // null when tied

 private:
  Qwen2Config config_;
  nn::UnitRunner runner_;
};

// RoPE inverse frequencies as HF computes them in fp32 (qwen2-reference.md §3.3, pitfall 1):
// 1 / fp32(theta ^ fp32(2k / Dh)), k = 0..Dh/2-1.
std::vector<float> qwen2_inv_freq(int64_t head_dim, double theta);
// cos and sin [B, 1, T, Dh] for positions [B, T] (angles as fp32 products, like HF), in `dtype`
// on `device`.
struct RotaryTables {
  Tensor cos, sin;
};
RotaryTables qwen2_rotary(const Tensor& position_ids, int64_t head_dim, double theta, DType dtype,
                          Device device);

// HF's ForCausalLMLoss: logits [B, T, V] at position t predict labels [B, T] at t + 1; labels
// -100 are ignored; the mean is over every non-ignored target of the batch.
Tensor causal_lm_loss(const Tensor& logits, const Tensor& labels);

}  // namespace hd::vilahd
