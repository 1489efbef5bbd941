// Views and layout ops. Views (reshape of a contiguous tensor, permute, transpose, narrow,
// slice, expand, squeeze, unsqueeze) share storage and copy nothing; their gradients map the
// incoming gradient back to the input's geometry.
#pragma once

#include <vector>

#include "autograd/tensor.h"

namespace hd {

// -1 in `shape` is inferred. A view when the input is contiguous, else a copy (reshape) or an
// error (view).
Tensor reshape(const Tensor& x, Shape shape);
Tensor view(const Tensor& x, Shape shape);
Tensor flatten(const Tensor& x, int64_t start_dim = 0, int64_t end_dim = -1);
Tensor permute(const Tensor& x, const std::vector<int64_t>& dims);
Tensor transpose(const Tensor& x, int64_t dim0, int64_t dim1);
Tensor narrow(const Tensor& x, int64_t dim, int64_t start, int64_t length);
// Python-style x[start:end:step] along dim (negative start/end count from the end).
Tensor slice(const Tensor& x, int64_t dim, int64_t start, int64_t end, int64_t step = 1);
Tensor select(const Tensor& x, int64_t dim, int64_t index);  // drops dim
Tensor expand(const Tensor& x, const Shape& shape);          // -1 keeps a size
Tensor squeeze(const Tensor& x, int64_t dim);
Tensor unsqueeze(const Tensor& x, int64_t dim);

Tensor contiguous(const Tensor& x);  // x itself if already contiguous
Tensor clone(const Tensor& x);       // always a fresh contiguous copy
Tensor to(const Tensor& x, DType dtype);
// Copy to another device (CPU <-> CUDA, CUDA <-> CUDA); x itself when already there. Device ->
// host copies synchronize; the others are ordered on the target device's current stream.
// Differentiable: the gradient moves back to x's device.
Tensor to(const Tensor& x, Device device);
// Copies src into dst across devices without a temporary (no autograd; same shape and dtype,
// dst contiguous): what checkpoint staging uses to fill and drain pinned host buffers. Same as
// copy_ when both are on one device.
Tensor& copy_to_device_(Tensor& dst, const Tensor& src);

Tensor cat(const std::vector<Tensor>& xs, int64_t dim);
Tensor stack(const std::vector<Tensor>& xs, int64_t dim);
std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t dim);
// Views x.select(dim, i) for every i, recorded as one node: the gradient is one stack of the
// incoming gradients instead of one zero-filled tensor per slice (qkv -> q, k, v).
std::vector<Tensor> unbind(const Tensor& x, int64_t dim);
std::vector<Tensor> chunk(const Tensor& x, int64_t chunks, int64_t dim);
// Pads the last dims: pads = {last_lo, last_hi, second_last_lo, second_last_hi, ...} (PyTorch
// F.pad order), constant value.
Tensor pad(const Tensor& x, const std::vector<int64_t>& pads, double value = 0.0);

}  // namespace hd
