// The PS3 sigmoid contrast over every rank's texts (ps3-reference-implementation.md §2.3).
//
// z_ij = exp(logit_scale) <x_i, t_j> + logit_bias; the positive of image row i is its own text
// (same rank), every other text of every rank is a negative. Rank r's loss is
//   L_r = -sum_{i in r} sum_j log sigmoid(y_ij z_ij) / (B_total / N)
// with B_total the global batch and N the world size. Why that normaliser and not the
// reference's B_local: with FSDP averaging gradients over ranks, parameters receive the gradient
// of mean_r L_r = -sum_{all i, j} log sigmoid(y_ij z_ij) / B_total, which is exactly the loss of
// one process holding the whole batch, even when the loader dropped samples and the ranks' batch
// sizes differ. With equal batches it is the reference's L_r.
#pragma once

#include "autograd/tensor.h"

namespace hd::parallel {
class ProcessGroup;
}

namespace hd::ps3 {

// image_emb [B_local, D] and text_emb [B_local, D], both L2-normalised, row i of each forming a
// pair; logit_scale / logit_bias scalars (scale in log space). pg null: one process, the plain
// SigLIP loss. Collective with a pg (every rank calls it, every rank runs its backward).
// B_local may be 0 on a rank: it still joins the exchange and gets a zero loss that touches
// its inputs.
Tensor distributed_sigmoid_loss(const Tensor& image_emb, const Tensor& text_emb,
                                const Tensor& logit_scale, const Tensor& logit_bias,
                                parallel::ProcessGroup* pg);

}  // namespace hd::ps3
