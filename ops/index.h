// Indexing: selection by index tensors, their scatter-add gradients, embedding, and top-k.
// Index tensors are i64 (i32 accepted); out-of-range indices throw naming the op and the value.
#pragma once

#include "autograd/tensor.h"
#include "ops/reduce.h"

namespace hd {

// out = x.index_select(dim, index); gradient: index_add into zeros.
Tensor index_select(const Tensor& x, int64_t dim, const Tensor& index);
// torch.gather: out[i][j] = x[i][index[i][j]] (dim = 1); gradient: scatter_add.
Tensor gather(const Tensor& x, int64_t dim, const Tensor& index);
// out = x with src added at index along dim (torch.Tensor.index_add); differentiable in x, src.
Tensor index_add(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& src);
// out = x with src added at positions index along dim (torch.Tensor.scatter_add).
Tensor scatter_add(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& src);
// Dense grid from sparse tokens: out = zeros([B, size, C]) with out[b, index[b, i]] = src[b, i]
// (index [B, N] unique per row, src [B, N, C]); the gradient gathers back.
Tensor scatter_rows(const Tensor& src, const Tensor& index, int64_t size);
// Embedding lookup: weight [V, D], ids any shape of i64 -> [..., D].
Tensor embedding(const Tensor& weight, const Tensor& ids);
// Top-k along the last dim, largest first. Ties: higher value first, then lower index (a fixed
// rule, documented because PyTorch's is unspecified). No gradient through indices; values carry
// a gradient (scattered back).
ValuesIndices topk(const Tensor& x, int64_t k);

// Raw pieces (no autograd) shared by the indexing, top-k and resampling frontends so their
// backward formulas reuse the same deterministic kernels. Indices passed to the *_raw / *_into
// functions are i64 and already range-checked.
namespace indexing {
// `index` as i64 (i32 converted), detached; throws naming `op` for other dtypes.
Tensor index_i64(const char* op, const Tensor& index);
// Throws "<op>: index V is out of range for dim D of size S (tensor shape ...)".
void check_index_range(const char* op, const Tensor& index, int64_t size, int64_t dim,
                       const Shape& shape);
Tensor index_select_raw(const Tensor& x, int64_t dim, const Tensor& index);
Tensor gather_raw(const Tensor& x, int64_t dim, const Tensor& index);
// `out` must be a tensor the caller owns (e.g. fresh zeros); these add into it in place.
void index_add_into(Tensor& out, int64_t dim, const Tensor& index, const Tensor& src);
void scatter_add_into(Tensor& out, int64_t dim, const Tensor& index, const Tensor& src);
}  // namespace indexing

}  // namespace hd
