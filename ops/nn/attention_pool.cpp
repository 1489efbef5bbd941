// AttentionPool: see attention_pool.h. The latent query is shared by the batch, so q is
// computed once on [1, 1, C] and expanded (a view) rather than projected B times.
#include "ops/nn/attention_pool.h"

#include <cmath>

#include "ops/attention.h"
#include "ops/elementwise.h"
#include "ops/factory.h"
#include "ops/reduce.h"
#include "ops/shape.h"

namespace hd::nn {

AttentionPool::AttentionPool(int64_t dim, int64_t heads, int64_t mlp_hidden, double ln_eps)
    : heads(heads), head_dim(heads > 0 ? dim / heads : 0) {
  HD_CHECK(heads > 0 && dim % heads == 0, "AttentionPool: dim ", dim, " is not divisible by heads ",
           heads);
  latent =
      register_parameter("latent", {1, 1, dim}, Init::trunc_normal(1.0 / std::sqrt(double(dim))));
  q = register_module("q", std::make_shared<Linear>(dim, dim));
  kv = register_module("kv", std::make_shared<Linear>(dim, 2 * dim));
  proj = register_module("proj", std::make_shared<Linear>(dim, dim));
  norm = register_module("norm", std::make_shared<LayerNorm>(dim, ln_eps));
  mlp = register_module("mlp", std::make_shared<MLP>(dim, mlp_hidden));
}

Tensor AttentionPool::forward(const Tensor& x, const Tensor& key_mask) const {
  HD_CHECK(x.dim() == 3 && x.size(2) == latent.size(2), "AttentionPool: expected tokens [B, N, ",
           latent.size(2), "], got ", x.str());
  const int64_t B = x.size(0), N = x.size(1), C = x.size(2);
  HD_CHECK(N > 0, "AttentionPool: no tokens to pool (", x.str(), ")");
  AttentionOptions options;
  if (key_mask.defined()) {
    HD_CHECK(key_mask.shape() == Shape({B, N}), "AttentionPool: key_mask must be [", B, ", ", N,
             "] like the tokens, got ", key_mask.str());
    Tensor mask = key_mask.dtype() == DType::boolean ? key_mask : ne(key_mask, 0.0);
    // Rows with no true key attend to everything (reference §1.8) instead of pooling to zero.
    Tensor any = gt(sum(to(mask, DType::i64), {1}, true), 0.0);  // [B, 1]
    options.key_mask = logical_or(mask, logical_not(any));
  }
  Tensor qh = permute(reshape(q->forward(latent), {1, 1, heads, head_dim}), {0, 2, 1, 3});
  qh = expand(qh, {B, heads, 1, head_dim});
  Tensor kvh = permute(reshape(kv->forward(x), {B, N, 2, heads, head_dim}), {2, 0, 3, 1, 4});
  std::vector<Tensor> kv_views = unbind(kvh, 0);
  Tensor out = scaled_dot_product_attention(qh, kv_views[0], kv_views[1], options);  // [B,H,1,Dh]
  out = proj->forward(reshape(transpose(out, 1, 2), {B, 1, C}));
  out = add(out, mlp->forward(norm->forward(out)));
  return reshape(out, {B, C});
}

}  // namespace hd::nn
