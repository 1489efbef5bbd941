// The CUDA kernels' entry points, one per CPU kernel of the same name (ops/cpu/*.h) and with the
// same contract, so a frontend's dispatch call reads
//   dispatch(x, op, [&] { cpu::f(args); }, HD_CUDA_KERNEL(cuda::f(args)));
// Declarations only (no CUDA headers): the frontends include this in every build, and only
// reference the functions inside HD_CUDA_KERNEL, which drops them when HD_CUDA=OFF.
//
// All kernels launch on cuda::current_stream(device) and return without synchronizing.
#pragma once

#include <cstdint>

#include "autograd/tensor.h"
#include "ops/op_kinds.h"

namespace hd::cpu {
enum class ReduceKind;
struct AttentionArgs;
struct AdamWStep;
struct Conv2dGeometry;
}  // namespace hd::cpu

namespace hd::cuda {

// ops/cuda/elementwise.cu
void copy(const Tensor& src, Tensor& dst);  // same device; src may broadcast; converts dtype
void fill(Tensor& dst, double value);
void unary(UnaryOp op, const Tensor& x, Tensor& out, UnaryParams p);
void binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out);
void where(const Tensor& cond, const Tensor& a, const Tensor& b, Tensor& out);

// ops/cuda/reduce.cu
void reduce_dim(cpu::ReduceKind kind, const Tensor& x, int64_t outer, int64_t n, int64_t inner,
                Tensor& out, Tensor* indices);

// ops/cuda/gemm.cu: out[b] (+)= a[b] @ bm[b]; f32 (TF32 if allowed), f64, bf16/f16 with f32
// accumulation. Same operand rules as cpu::matmul.
void matmul(const Tensor& a, const Tensor& bm, Tensor& out, bool accumulate = false);
// TF32 tensor cores for f32 GEMMs (default off: results then match the CPU to f32 rounding).
void set_allow_tf32(bool allow);
bool allow_tf32();

// ops/cuda/adamw.cu
void adamw_step(Tensor& param, const Tensor& grad, Tensor& exp_avg, Tensor& exp_avg_sq,
                const cpu::AdamWStep& s);

// ops/cuda/softmax.cu (hd_ops_norm)
void softmax_forward(const Tensor& x, Tensor& y, int64_t outer, int64_t n, int64_t inner, bool log);
void softmax_backward(const Tensor& y, const Tensor& gy, Tensor& gx, int64_t outer, int64_t n,
                      int64_t inner, bool log);

// ops/cuda/attention.cu (hd_ops_attention): the contract of ops/cpu/attention.h (args.blocks
// is ignored: the kernel has its own tiles), except that lse is f32 for f32/bf16/f16 inputs and
// f64 for f64. Head dims up to 256.
void attention_forward(const cpu::AttentionArgs& args, Tensor& out, Tensor& lse);
void attention_backward(const cpu::AttentionArgs& args, const Tensor& out, const Tensor& lse,
                        const Tensor& grad_out, Tensor& dq, Tensor& dk, Tensor& dv,
                        Tensor& dprefix_k, Tensor& dprefix_v);

// ops/cuda/norm.cu (hd_ops_norm)
void norm_forward(bool center, const Tensor& x, const Tensor& weight, const Tensor& bias,
                  double eps, Tensor& y, Tensor& mean, Tensor& rstd);
void norm_backward(bool center, const Tensor& gy, const Tensor& x, const Tensor& mean,
                   const Tensor& rstd, const Tensor& weight, Tensor& gx, Tensor* gw, Tensor* gb);

// ops/cuda/index.cu (hd_ops_vision); idx points to device memory (k values).
void index_select(const Tensor& x, int64_t outer, int64_t n, int64_t inner, const int64_t* idx,
                  int64_t k, Tensor& out);
void index_add(Tensor& out, int64_t outer, int64_t n, int64_t inner, const int64_t* idx, int64_t k,
               const Tensor& src);
void gather(const Tensor& x, int64_t dim, const Tensor& index, Tensor& out);
void scatter_add(Tensor& out, int64_t dim, const Tensor& index, const Tensor& src);
void topk(const Tensor& x, int64_t rows, int64_t n, int64_t k, Tensor& values, Tensor& indices);

// ops/cuda/conv.cu (hd_ops_vision): NCHW, contiguous, f32/f64.
void im2col(const Tensor& x, const cpu::Conv2dGeometry& g, Tensor& cols);
void col2im(const Tensor& cols, const cpu::Conv2dGeometry& g, Tensor& out);
void depthwise_forward(const Tensor& x, const Tensor& weight, const cpu::Conv2dGeometry& g,
                       Tensor& out);
void depthwise_backward_input(const Tensor& grad_out, const Tensor& weight,
                              const cpu::Conv2dGeometry& g, Tensor& grad_x);
void depthwise_backward_weight(const Tensor& grad_out, const Tensor& x,
                               const cpu::Conv2dGeometry& g, Tensor& grad_weight);
void adaptive_max_pool2d(const Tensor& x, int64_t planes, int64_t h, int64_t w, int64_t oh,
                         int64_t ow, Tensor& values, Tensor& indices);

// ops/cuda/cudnn_conv.cu (hd_ops_vision): conv2d through cuDNN, NCHW contiguous, no bias,
// groups 1 or depthwise; f32/f64/bf16/f16 (f32 compute for 16-bit). Off unless enabled
// (HD_CUDNN_CONV=1 or set_use_cudnn_conv): which convs it beats ours on is not measured yet.
void set_use_cudnn_conv(bool on);
bool use_cudnn_conv();
void cudnn_conv_forward(const Tensor& x, const Tensor& w, int64_t stride, int64_t pad,
                        int64_t groups, Tensor& y);
void cudnn_conv_backward_data(const Tensor& gy, const Tensor& w, int64_t stride, int64_t pad,
                              int64_t groups, Tensor& gx);
void cudnn_conv_backward_filter(const Tensor& gy, const Tensor& x, int64_t stride, int64_t pad,
                                int64_t groups, Tensor& gw);

}  // namespace hd::cuda
