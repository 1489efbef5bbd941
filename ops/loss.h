// Losses. Reductions follow PyTorch's defaults ("mean") unless stated.
#pragma once

#include "autograd/tensor.h"

namespace hd {

enum class Reduction { none, mean, sum };

// logits [N, C] (or [C]), target i64 [N]; rows whose target == ignore_index contribute nothing,
// and "mean" divides by the number of non-ignored rows (PyTorch rule). Optional label smoothing
// is not supported.
Tensor cross_entropy(const Tensor& logits, const Tensor& target, int64_t ignore_index = -100,
                     Reduction reduction = Reduction::mean);
// Binary cross-entropy on probabilities, PyTorch's F.binary_cross_entropy: each log is clamped
// at -100, and the gradient is (p - y) / max(p (1 - p), 1e-12).
Tensor binary_cross_entropy(const Tensor& probs, const Tensor& target,
                            Reduction reduction = Reduction::mean);
// Numerically stable BCE on logits: max(x,0) - x*y + log(1 + exp(-|x|)).
Tensor binary_cross_entropy_with_logits(const Tensor& logits, const Tensor& target,
                                        Reduction reduction = Reduction::mean);
// DICE loss per instance as in VILA-HD (ps3-reference-implementation.md §3.7), averaged over
// instances: probs and target [B, ...]; 1 - (2 sum(p/100 * g) + eps) / (sum(p/100) + sum(g/100) + eps).
Tensor dice_loss(const Tensor& probs, const Tensor& target, double eps = 1e-6);
// SigLIP sigmoid pairwise loss. image_emb [B, D], text_emb [M, D] (both L2-normalised by the
// caller), logit_scale and logit_bias scalars (learnable; scale in log space):
//   z_ij = exp(logit_scale) * <x_i, t_j> + logit_bias, y_ij = +1 if i == j (and
//   positives_on_diagonal) else -1, loss = -sum_ij log_sigmoid(y_ij z_ij) / B.
// M may exceed B (texts from other ranks, all negatives, come after the local ones).
Tensor siglip_loss(const Tensor& image_emb, const Tensor& text_emb, const Tensor& logit_scale,
                   const Tensor& logit_bias, bool positives_on_diagonal = true);

}  // namespace hd
