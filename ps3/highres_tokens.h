// Stage-3 tokens of one look-close step (reference §1.7): only the selected patches are embedded
// and only their positional embeddings are computed.
//
// COST RULE (the 4K promise): with k selected patches, the work here must not grow with the
// scale's grid. So there is never a dense grid(s)^2 x W tensor per step:
//  * patch embedding: the [n, C, p, p] patches the data side cut are multiplied by the conv
//    weight viewed as [W, C*p*p] (= the conv evaluated only at those locations);
//  * position embedding: the antialiased bicubic resample (Pillow kernel a = -0.5, the one
//    PyTorch uses with antialias=True) of the G x G table to the g x g grid is separable,
//    P[i, j] = sum_a sum_b R[i, a] R[j, b] T[a, b], with R = resample_weights(G, g) [g, G].
//    For each selected (i, j) we gather the rows R[i], R[j] and contract: U = R[j] @ T^(b) gives
//    [n, G, W], then sum_a R[i, a] U[:, a] -> [n, W]. Cost n * G^2 * W, independent of g.
//  * the per-scale residual (a dense parameter [1, g^2, W]) is gathered with index_select; its
//    gradient is the usual dense index_add into the parameter's gradient.
#pragma once

#include <vector>

#include "autograd/tensor.h"

namespace hd::ps3 {

// patches [..., C, p, p] (any float dtype; cast to the weight's) -> [..., W] with
// weight [W, C, p, p], bias [W].
Tensor embed_selected_patches(const Tensor& patches, const Tensor& weight, const Tensor& bias);

// pos_embed [1, G*G, W] (G x G row-major table), grid g, positions [n] i64 flat row-major in
// the g x g grid -> [n, W] = interpolate(table, g, g, bicubic, antialias=true) at positions.
Tensor selective_pos_embed(const Tensor& pos_embed, int64_t grid, const Tensor& positions);

// selective_pos_embed + residual [1, g*g, W] gathered at positions.
Tensor highres_position_embedding(const Tensor& pos_embed, const Tensor& residual, int64_t grid,
                                  const Tensor& positions);

}  // namespace hd::ps3
