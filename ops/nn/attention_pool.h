// Multihead attention pooling (timm AttentionPoolLatent, the SigLIP "MAP" head): one learned
// latent query attends over the tokens, then a residual MLP. PS3 uses it for the low-res global
// embedding and for the high-res pooled embedding over in-box tokens only (reference §1.2, §1.8).
//
// Parameter names are timm's (latent, q, kv, proj, norm, mlp.fc1, mlp.fc2) so released
// checkpoints load by name. There is no residual of the latent itself: out = proj(attn),
// out = out + mlp(norm(out)), pooled = out[:, 0].
#pragma once

#include <memory>

#include "autograd/module.h"
#include "ops/nn/layers.h"

namespace hd::nn {

class AttentionPool : public Module {
 public:
  AttentionPool(int64_t dim, int64_t heads, int64_t mlp_hidden, double ln_eps = 1e-6);
  // x [B, N, C] -> [B, C]. key_mask (optional) [B, N] boolean: pool only over true keys; a row
  // with no true key pools over every key (PS3's rule for samples with no in-box token).
  Tensor forward(const Tensor& x, const Tensor& key_mask = Tensor()) const;

  Tensor latent;  // [1, 1, C], trunc_normal(std = C^-0.5) as timm
  std::shared_ptr<Linear> q, kv, proj;
  std::shared_ptr<LayerNorm> norm;
  std::shared_ptr<MLP> mlp;
  int64_t heads, head_dim;
};

}  // namespace hd::nn
