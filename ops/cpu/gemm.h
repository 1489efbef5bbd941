// GEMM on the CPU through OpenBLAS (single-threaded per call: see autograd/thread_pool.h).
#pragma once

#include <cstdint>

#include "autograd/tensor.h"

namespace hd::cpu {

// Row-major C[M,N] = alpha * op(A) op(B) + beta * C, where op(A) is A[M,K] (lda = row stride)
// or, with trans_a, A stored as [K,M]. Runs on the calling thread; kernels call it from pool
// tasks.
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
          int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc);
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, double alpha,
          const double* A, int64_t lda, const double* B, int64_t ldb, double beta, double* C,
          int64_t ldc);

// The same with bf16 operands and an f32 C, accumulated in f32 (beta 0 or 1), for tile kernels
// that read bf16 tensors in place: oneDNN's bf16 product where this CPU has one ([Note: oneDNN
// GEMMs]), otherwise the operands are widened into a scratch for OpenBLAS. The mixed form (f32 A,
// bf16 B) is the product of an f32 tile (attention's probabilities) with a bf16 operand: A is
// rounded to bf16 for oneDNN, as bf16 kernels do (PyTorch's flash attention rounds P too), and
// B widened for OpenBLAS.
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const bf16_t* A,
          int64_t lda, const bf16_t* B, int64_t ldb, float beta, float* C, int64_t ldc);
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
          int64_t lda, const bf16_t* B, int64_t ldb, float beta, float* C, int64_t ldc);
// bf16 A, B and C (C rounded once, from the f32 sum): the row blocks of a bf16 matmul.
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const bf16_t* A,
          int64_t lda, const bf16_t* B, int64_t ldb, float beta, bf16_t* C, int64_t ldc);

// out[b] = a[b] @ bm[b] for every batch index b (batch dims already broadcast to out's batch
// shape via 0 strides). a: [..., M, K], bm: [..., K, N], out contiguous [..., M, N]; the last
// two dims of a and bm must have a unit stride in one of them (the frontend copies otherwise).
// If accumulate, out += a @ bm. Work is split over the thread pool into at most 8 row blocks
// per batch whose size depends only on M, so results are bit-identical for any thread count.
// f32, f64, and bf16 (the blocks through the bf16 gemm above: oneDNN's kernels run one per
// pool task, single-threaded, instead of in an OpenMP team of their own). bias (optional, [N],
// out's dtype): added to every row by the task that wrote it, while it is in cache, with the
// bits of a separate add_ (a linear's bias without another pass over its output).
void matmul(const Tensor& a, const Tensor& bm, Tensor& out, bool accumulate = false,
            const Tensor* bias = nullptr);

}  // namespace hd::cpu
