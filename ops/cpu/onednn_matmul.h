// GEMMs through oneDNN: the bf16 path on CPUs with bf16 arithmetic.
//
// [Note: oneDNN GEMMs]
// Why oneDNN: it is the library Debian's PyTorch uses for bf16 on the CPU, and on AVX-512-BF16
// and AMX CPUs it has bf16 matmul kernels (bf16 operands, f32 accumulation) that OpenBLAS lacks.
// What goes through it: gemm_bf16, one product on the calling thread. cpu::matmul (the kernel
// behind matmul_raw, the one entry of every forward product and both backward products of
// matmul and linear) cuts a bf16 product into the same row blocks and split-K slices as an f32
// one and runs each block as a gemm_bf16 inside a pool task; the CPU attention's bf16 QK^T and
// PV tile products are gemm_bf16 calls too. That is done when capability() says oneDNN can make
// a bf16 matmul on this CPU; otherwise (and for f16) operands are widened to f32 for OpenBLAS.
// f32 stays on OpenBLAS: oneDNN's f32 kernels are not reliably faster (hd_bench_onednn_gemm,
// docs/performance.md), and one path keeps f32 results the same on every machine we build on.
// Threads: Debian's oneDNN runs on OpenMP. Calling it once per op with an OpenMP team beside
// our pool cost a third of a bf16 ViT step in thread wake-ups (futex, GOMP barriers; measured
// with perf on an AVX-512-BF16 EPYC). So every call runs on one thread (OpenMP set to one
// around it, also when the primitive is made: oneDNN fixes a primitive's thread count then),
// and our pool supplies the parallelism, with fixed blocks: results are bit-identical for any
// thread count, as for f32. matmul() (a whole product on an OpenMP team) remains as the
// "oneDNN called directly" reference of the benchmark.
// Primitives are cached by (shapes, strides, dtypes): a training step issues the same few
// shapes every time, and creating a primitive costs far more than running a small one. The
// cache is per thread: with the library-managed scratchpad of Debian's build, a primitive must
// run on the thread that created it. Tile products keep their memory objects and only swap
// pointers per call.
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
// strides that do not collapse to one). One product on an OpenMP team: the "oneDNN called
// directly" reference of hd_bench_onednn_gemm; the ops use gemm_bf16 below.
void matmul(const Tensor& a, const Tensor& bm, Tensor& out);

// Whether matmul can describe these operands to oneDNN (batch strides that collapse).
bool supports(const Tensor& a, const Tensor& bm, const Tensor& out);

// C[M, N] (f32, row stride ldc) = alpha * op(A) op(B) + beta * C with bf16 A and B, as
// cpu::gemm's BLAS convention (op(A) is A [M, K] with row stride lda, or A stored [K, M] with
// trans_a), accumulated in f32, on the calling thread only. beta must be 0 or 1. Throws an
// hd::Error when oneDNN cannot make the product (check capability().bf16_matmul first).
void gemm_bf16(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
               const bf16_t* A, int64_t lda, const bf16_t* B, int64_t ldb, float beta, float* C,
               int64_t ldc);
// The same with a bf16 C (the sum for beta = 1 reads C in bf16; the product is rounded once).
void gemm_bf16(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
               const bf16_t* A, int64_t lda, const bf16_t* B, int64_t ldb, float beta, bf16_t* C,
               int64_t ldc);

// The kernel oneDNN chose for such a product (for benchmarks and `hdtrain info`).
std::string implementation(const Tensor& a, const Tensor& bm, const Tensor& out);

}  // namespace hd::cpu::onednn
