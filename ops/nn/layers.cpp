#include "ops/nn/layers.h"

#include <cmath>

#include "ops/conv.h"
#include "ops/linalg.h"
#include "ops/norm.h"
#include "ops/shape.h"

namespace hd::nn {

Linear::Linear(int64_t in, int64_t out, bool with_bias)
    : Linear(in, out, with_bias, Init::uniform(-1.0 / std::sqrt(double(in)), 1.0 / std::sqrt(double(in))),
             Init::uniform(-1.0 / std::sqrt(double(in)), 1.0 / std::sqrt(double(in)))) {}

Linear::Linear(int64_t in, int64_t out, bool with_bias, Init weight_init, Init bias_init) {
  weight = register_parameter("weight", {out, in}, weight_init);
  if (with_bias) bias = register_parameter("bias", {out}, bias_init);
}

Tensor Linear::forward(const Tensor& x) const { return linear(x, weight, bias); }

LayerNorm::LayerNorm(int64_t dim, double eps) : eps(eps) {
  weight = register_parameter("weight", {dim}, Init::ones());
  bias = register_parameter("bias", {dim}, Init::zeros());
}

Tensor LayerNorm::forward(const Tensor& x) const { return layer_norm(x, weight, bias, eps); }

RMSNorm::RMSNorm(int64_t dim, double eps) : eps(eps) {
  weight = register_parameter("weight", {dim}, Init::ones());
}

Tensor RMSNorm::forward(const Tensor& x) const { return rms_norm(x, weight, eps); }

MLP::MLP(int64_t dim, int64_t hidden, GeluApprox approx) : approx(approx) {
  fc1 = register_module("fc1", std::make_shared<Linear>(dim, hidden));
  fc2 = register_module("fc2", std::make_shared<Linear>(hidden, dim));
}

Tensor MLP::forward(const Tensor& x) const { return fc2->forward(gelu(fc1->forward(x), approx)); }

SelfAttention::SelfAttention(int64_t dim, int64_t heads) : heads(heads), head_dim(dim / heads) {
  HD_CHECK(heads > 0 && dim % heads == 0, "SelfAttention: dim ", dim,
           " is not divisible by heads ", heads);
  qkv = register_module("qkv", std::make_shared<Linear>(dim, 3 * dim));
  proj = register_module("proj", std::make_shared<Linear>(dim, dim));
}

Tensor SelfAttention::forward(const Tensor& x, const AttentionOptions& options, KV* kv_out) const {
  HD_CHECK(x.dim() == 3, "SelfAttention: expected [B, N, C], got ", x.str());
  int64_t B = x.size(0), N = x.size(1), C = x.size(2);
  // [B, N, 3C] -> [B, N, 3, H, Dh] -> [3, B, H, N, Dh]: q, k, v are strided views, no copies.
  Tensor qkv_heads = permute(reshape(qkv->forward(x), {B, N, 3, heads, head_dim}), {2, 0, 3, 1, 4});
  std::vector<Tensor> qkv_views = unbind(qkv_heads, 0);
  const Tensor& q = qkv_views[0];
  const Tensor& k = qkv_views[1];
  const Tensor& v = qkv_views[2];
  if (kv_out) *kv_out = {k, v};
  Tensor out = scaled_dot_product_attention(q, k, v, options);  // [B, H, N, Dh]
  return proj->forward(reshape(transpose(out, 1, 2), {B, N, C}));
}

TransformerBlock::TransformerBlock(int64_t dim, int64_t heads, int64_t mlp_hidden, double ln_eps) {
  norm1 = register_module("norm1", std::make_shared<LayerNorm>(dim, ln_eps));
  attn = register_module("attn", std::make_shared<SelfAttention>(dim, heads));
  norm2 = register_module("norm2", std::make_shared<LayerNorm>(dim, ln_eps));
  mlp = register_module("mlp", std::make_shared<MLP>(dim, mlp_hidden));
}

Tensor TransformerBlock::forward(const Tensor& x, const AttentionOptions& options,
                                 SelfAttention::KV* kv_out) const {
  Tensor h = add(x, attn->forward(norm1->forward(x), options, kv_out));
  return add(h, mlp->forward(norm2->forward(h)));
}

PatchEmbed::PatchEmbed(int64_t in_channels, int64_t dim, int64_t patch) : patch(patch) {
  double bound = 1.0 / std::sqrt(double(in_channels * patch * patch));
  weight = register_parameter("weight", {dim, in_channels, patch, patch}, Init::uniform(-bound, bound));
  bias = register_parameter("bias", {dim}, Init::uniform(-bound, bound));
}

Tensor PatchEmbed::forward(const Tensor& images) const {
  HD_CHECK(images.dim() == 4 && images.size(2) % patch == 0 && images.size(3) % patch == 0,
           "PatchEmbed: expected [B, C, H, W] with H and W multiples of ", patch, ", got ",
           images.str());
  Tensor fmap = conv2d(images, weight, bias, patch, 0, 1);  // [B, D, H/p, W/p]
  int64_t B = fmap.size(0), D = fmap.size(1);
  return transpose(reshape(fmap, {B, D, -1}), 1, 2);  // [B, N, D]
}

}  // namespace hd::nn
