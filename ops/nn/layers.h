// Layers built from ops. Each owns its parameters (registered by name) and has a forward that
// is a few op calls, so its gradient is whatever the ops record.
#pragma once

#include "autograd/module.h"
#include "ops/attention.h"
#include "ops/elementwise.h"

namespace hd::nn {

// y = x W^T + b. Default init is PyTorch's: U(-1/sqrt(in), 1/sqrt(in)) for weight and bias.
class Linear : public Module {
 public:
  Linear(int64_t in, int64_t out, bool bias = true);
  Linear(int64_t in, int64_t out, bool bias, Init weight_init, Init bias_init);
  Tensor forward(const Tensor& x) const;
  Tensor weight, bias;
};

class LayerNorm : public Module {
 public:
  explicit LayerNorm(int64_t dim, double eps = 1e-6);
  Tensor forward(const Tensor& x) const;
  Tensor weight, bias;
  double eps;
};

class RMSNorm : public Module {
 public:
  explicit RMSNorm(int64_t dim, double eps = 1e-6);
  Tensor forward(const Tensor& x) const;
  Tensor weight;
  double eps;
};

// fc1 -> GELU -> fc2 (timm's Mlp without norm).
class MLP : public Module {
 public:
  MLP(int64_t dim, int64_t hidden, GeluApprox approx = GeluApprox::none);
  Tensor forward(const Tensor& x) const;
  std::shared_ptr<Linear> fc1, fc2;
  GeluApprox approx;
};

// Multi-head self-attention with a fused qkv projection (timm/SigLIP layout: qkv weight
// [3C, C], output ordered q | k | v, each split into heads). Optional extras for PS3:
// a key/value prefix per call (the low-res KV cache) and a key mask.
class SelfAttention : public Module {
 public:
  SelfAttention(int64_t dim, int64_t heads);
  struct KV {
    Tensor k, v;  // [B, H, N, Dh]
  };
  // x [B, N, C] -> [B, N, C]. If kv_out is given, this layer's own K and V are stored there.
  Tensor forward(const Tensor& x, const AttentionOptions& options = {}, KV* kv_out = nullptr) const;
  std::shared_ptr<Linear> qkv, proj;
  int64_t heads, head_dim;
};

// Pre-LN transformer block: x + attn(LN(x)), then x + mlp(LN(x)).
class TransformerBlock : public Module {
 public:
  TransformerBlock(int64_t dim, int64_t heads, int64_t mlp_hidden, double ln_eps = 1e-6);
  Tensor forward(const Tensor& x, const AttentionOptions& options = {},
                 SelfAttention::KV* kv_out = nullptr) const;
  std::shared_ptr<LayerNorm> norm1, norm2;
  std::shared_ptr<SelfAttention> attn;
  std::shared_ptr<MLP> mlp;
};

// Non-overlapping patch embedding: conv with kernel = stride = patch, as a Linear over
// flattened (C, kh, kw) patches. Weight stored as [out, C, p, p] like PyTorch's Conv2d.
class PatchEmbed : public Module {
 public:
  PatchEmbed(int64_t in_channels, int64_t dim, int64_t patch);
  // images [B, C, H, W] -> tokens [B, (H/p)(W/p), dim], row-major patch order.
  Tensor forward(const Tensor& images) const;
  Tensor weight, bias;
  int64_t patch;
};

}  // namespace hd::nn
