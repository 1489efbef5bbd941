// 16-bit floats (bf16, f16) in the CPU kernels that compute in f32 only.
//
// The CPU kernels of normalisation, softmax, attention, convolution and the losses are written
// for f32/f64: on CPUs without bf16 arithmetic (AVX2, AVX-512 without BF16) converting is all
// bf16 could do anyway, and their statistics (means, variances, softmax sums, log-sum-exps) need
// f32. So an op given 16-bit CPU tensors runs its f32 kernel on converted copies and rounds its
// answer back to the input's dtype; backward converts the incoming gradient up, runs the f32
// backward and rounds the input gradients down, as the CUDA kernels do inside. Elementwise ops
// and reductions load and store 16-bit values directly. The products are where bf16 arithmetic
// pays, so on CPUs where oneDNN has bf16 products (AVX-512-BF16, AMX) they take bf16 as it is:
// matmul and linear in linalg.cpp, and attention, whose kernel then reads q, k and v in place
// with bf16 tile products ([Note: oneDNN GEMMs]); elsewhere both convert as above.
//
// [Note: 16-bit saved tensors] What backward needs is saved in the 16-bit dtype, not as the f32
// copies the kernel read: layer/RMS norm save their 16-bit input (and f32 mean / rstd),
// softmax its 16-bit output, attention its 16-bit q, k, v (views of the qkv projection, no
// copy) and output (and f32 log-sum-exps), the depthwise conv its 16-bit input and weight, and
// the 1x1 and patch convs are reshapes around a matmul that takes 16-bit operands; backward
// converts them up again. Saving the f32
// copies doubled those activations, so a bf16 model held more than an f32 one
// (tests/ops/half_saved_test.cpp measures the bytes). Norm and attention inputs are saved
// exactly; softmax's output is the rounded answer the caller also got, as PyTorch's bf16
// kernels save it. The general (im2col) conv and the losses still convert through
// autograd-tracked copies (the losses run in f32 anyway; no model here uses im2col in bf16).
#pragma once

#include "autograd/tensor.h"
#include "ops/shape.h"

namespace hd {

inline bool is_cpu_half(const Tensor& t) {
  return t.defined() && t.device().is_cpu() &&
         (t.dtype() == DType::bf16 || t.dtype() == DType::f16);
}

// t in f32 (undefined stays undefined; non-16-bit tensors are returned as they are).
inline Tensor half_to_f32(const Tensor& t) {
  return is_cpu_half(t) ? to(t, DType::f32) : t;
}

// The same on any device: what a model applies to its outputs before a loss, so a bf16 model
// (train.precision) gets f32 losses, as autocast runs them; f32 and f64 pass unchanged.
inline Tensor widen_16bit(const Tensor& t) {
  return t.defined() && (t.dtype() == DType::bf16 || t.dtype() == DType::f16) ? to(t, DType::f32)
                                                                              : t;
}

}  // namespace hd
