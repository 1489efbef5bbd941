// CPU kernels for copies, fills and elementwise math with broadcasting. Inputs may have any
// strides; `out` has the broadcast shape and any strides (it may alias an input exactly, for
// in-place ops).
#pragma once

#include "autograd/tensor.h"
#include "ops/op_kinds.h"

namespace hd::cpu {

void copy(const Tensor& src, Tensor& dst);  // same shape (src may broadcast); converts dtype
void fill(Tensor& dst, double value);
void unary(UnaryOp op, const Tensor& x, Tensor& out, UnaryParams p);
void binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out);
void where(const Tensor& cond, const Tensor& a, const Tensor& b, Tensor& out);

}  // namespace hd::cpu
