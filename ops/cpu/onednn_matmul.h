// GEMMs through oneDNN: the bf16 path on CPUs with bf16 arithmetic.
//
// [Note: oneDNN GEMMs]
// Why oneDNN: it is the library Debian's PyTorch uses for bf16 on the CPU, and on AVX-512-BF16
// and AMX CPUs it has bf16 matmul kernels (bf16 operands, f32 accumulation) that OpenBLAS lacks.
// What goes through it: matmul_raw (ops/linalg.cpp), the one entry of every forward product and
// both backward products of matmul and linear, sends bf16 CPU operands here when capability()
// says oneDNN can make a bf16 matmul on this CPU; otherwise (and for f16) they are converted to
// f32 for OpenBLAS, as before. f32 stays on OpenBLAS everywhere: oneDNN's f32 `gemm:jit` is no
// faster (hd_bench_onednn_gemm on the AVX2 machines we build on: 65.7 vs 63.9 GFLOP/s at 1024^2,
// 72.1 vs 70.2 at 4096^2, 2 threads), and our OpenBLAS path splits work so that results are
// bit-identical for any thread count. There oneDNN 2.6 cannot create a bf16 matmul at all
// ("could not create a primitive descriptor iterator"), which is what capability() records.
// Threads: Debian's oneDNN runs on OpenMP. The primitive is called from the op's thread while
// our pool is idle, with OpenMP set to the pool's thread count once, so the two never run at
// the same time and never exceed the configured threads.
// Primitives are cached by (shapes, strides, dtypes): a training step issues the same few
// shapes every time, and creating a primitive costs far more than running a small one. The
// cache is per thread: with the library-managed scratchpad of Debian's build, a primitive must
// run on the thread that created it.
// gemm_bf16 is the other entry: one small product on the calling thread, for kernels that cut
// their work into tiles inside pool tasks (the CPU attention's bf16 QK^T and PV products).
// OpenMP is set to one thread around the call, so a pool of n threads uses n cores, not n^2.
#pragma once

#include <string>

#include "autograd/tensor.h"

namespace hd::cpu::onednn {

struct Capability {
  std::string version;  // "2.6.3"
  std::string isa;      // the ISA oneDNN dispatches to here: "avx2", "avx512_core_amx", ...
  bool bf16_matmul = false;
  std::string bf16_impl;  // the bf16 kernel oneDNN picked ("brg:avx512_core_amx", ...)
  std::string reason;     // why there is no bf16 matmul here
};

// Probed once per process (creating one small bf16 matmul). HD_ONEDNN_BF16=0 in the environment
// turns the bf16 products off (bf16 is then widened for OpenBLAS, as on CPUs without them): to
// test and benchmark both paths on one machine.
const Capability& capability();

// out[b] = a[b] @ bm[b], as cpu::matmul: a [..., M, K], bm [..., K, N], batch dims broadcast to
// out's (stride 0 allowed), each operand's last two dims row- or column-major; out contiguous.
// Operands f32 or bf16 (the same), out f32 or bf16; products accumulate in f32. Throws an
// hd::Error naming the shapes when oneDNN cannot run it (e.g. bf16 on an AVX2 CPU, or batch
// strides that do not collapse to one).
void matmul(const Tensor& a, const Tensor& bm, Tensor& out);

// matmul when oneDNN can express the operands' layout (batch strides that collapse), else
// false and nothing done: the one call matmul_raw makes (describing a problem is not free).
bool try_matmul(const Tensor& a, const Tensor& bm, Tensor& out);

// Whether matmul can describe these operands to oneDNN (batch strides that collapse).
bool supports(const Tensor& a, const Tensor& bm, const Tensor& out);

// C[M, N] (f32, row stride ldc) = alpha * op(A) op(B) + beta * C with bf16 A and B, as
// cpu::gemm's BLAS convention (op(A) is A [M, K] with row stride lda, or A stored [K, M] with
// trans_a), accumulated in f32, on the calling thread only. beta must be 0 or 1. Throws an
// hd::Error when oneDNN cannot make the product (check capability().bf16_matmul first).
void gemm_bf16(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
               const bf16_t* A, int64_t lda, const bf16_t* B, int64_t ldb, float beta, float* C,
               int64_t ldc);

// The kernel oneDNN chose for such a product (for benchmarks and `hdtrain info`).
std::string implementation(const Tensor& a, const Tensor& bm, const Tensor& out);

}  // namespace hd::cpu::onednn
