// Matrix products through OpenBLAS (f32 sgemm, f64 dgemm; bf16/f16 compute in f32).
#pragma once

#include "autograd/tensor.h"

namespace hd {

// NumPy/PyTorch matmul: 1-D operands are promoted and the added dim removed; batch dims
// broadcast. Transposed views are passed to BLAS as-is (no copy).
Tensor matmul(const Tensor& a, const Tensor& b);
// y = x @ weight^T + bias, x [..., in], weight [out, in], bias [out] (may be undefined).
// One GEMM over all leading dims; the weight gradient is one GEMM too (no batch expansion).
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor());

}  // namespace hd
