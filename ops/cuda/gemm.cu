// Batched GEMM through cuBLAS (cublasGemmStridedBatchedEx): f32 (TF32 tensor cores only when
// allowed by set_allow_tf32), f64, and bf16/f16 inputs and outputs with f32 accumulation (no
// reduced-precision split-K reductions).
//
// Row-major C = A B is computed as the column-major product C^T = B^T A^T, so no operand is
// copied: a row-major operand is its own transpose in column-major terms (op N), a
// column-major one (a transposed view) is passed with op T. Batch dims, broadcast with 0 strides
// by the frontend, become one strided-batched call when each operand's batch offsets form one
// arithmetic sequence (always for contiguous or simply broadcast operands); otherwise each
// matrix is its own call (correct, rare). cuBLASLt epilogues (bias/GELU fusion) are not used yet.
#include <cublas_v2.h>

#include <atomic>
#include <climits>
#include <vector>

#include "ops/cuda/common.cuh"
#include "ops/cuda/kernels.h"

namespace hd::cuda {
namespace {

std::atomic<bool> g_allow_tf32{false};

void check_cublas(cublasStatus_t st, const char* call, const std::string& context) {
  if (st != CUBLAS_STATUS_SUCCESS)
    throw Error(detail::concat(context, ": ", call, " failed: ", cublasGetStatusName(st), ": ",
                               cublasGetStatusString(st)));
}

// One handle per (thread, device): cuBLAS handles must not be shared by concurrent threads.
// They live until the process exits (destroying them at thread exit can race CUDA teardown).
cublasHandle_t handle_for(int device, const std::string& context) {
  thread_local std::vector<cublasHandle_t> handles;
  if (handles.size() <= size_t(device)) handles.resize(size_t(device) + 1, nullptr);
  cublasHandle_t& h = handles[size_t(device)];
  if (!h) {
    DeviceGuard g(device);
    check_cublas(cublasCreate(&h), "cublasCreate", context);
    check_cublas(
        cublasSetMathMode(h, cublasMath_t(CUBLAS_DEFAULT_MATH |
                                          CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION)),
        "cublasSetMathMode", context);
  }
  return h;
}

// A matrix operand in cuBLAS terms: the column-major view of the row-major logical X^T.
struct Operand {
  cublasOperation_t op;
  int64_t ld;
};

Operand describe(const Tensor& t, const std::string& context) {
  int64_t r = t.size(-2), c = t.size(-1), sr = t.stride(-2), sc = t.stride(-1);
  if (sc == 1 || c == 1) {  // row-major [r, c] == column-major [c, r]: X^T, no transpose
    int64_t ld = r == 1 ? std::max<int64_t>(c, 1) : sr;
    if (ld >= std::max<int64_t>(c, 1)) return {CUBLAS_OP_N, ld};
  }
  if (sr == 1 || r == 1) {  // column-major [r, c]: transpose it
    int64_t ld = c == 1 ? std::max<int64_t>(r, 1) : sc;
    if (ld >= std::max<int64_t>(r, 1)) return {CUBLAS_OP_T, ld};
  }
  throw Error(detail::concat(context, ": operand ", t.str(), " with strides ", t.strides(),
                             " has no unit stride in its last two dims"));
}

// Offsets (in elements) of operand t's matrices over the broadcast batch shape `batch`.
Shape batch_strides(const Tensor& t, const Shape& batch) {
  Shape s(batch.size(), 0);
  size_t nb = size_t(t.dim() - 2), lead = batch.size() - nb;
  for (size_t d = 0; d < nb; ++d) {
    if (t.shape()[d] != 1) s[lead + d] = t.strides()[d];
  }
  return s;
}

// True (and the stride) when the batch offsets are b * stride for flat batch index b.
bool flat_stride(const Shape& batch, const Shape& strides, int64_t& stride) {
  int64_t expected = -1;
  stride = 0;
  for (size_t d = batch.size(); d-- > 0;) {
    if (batch[d] == 1) continue;
    if (expected < 0) {
      stride = strides[d];
    } else if (strides[d] != expected) {
      return false;
    }
    expected = strides[d] * batch[d];
  }
  return true;
}

int64_t offset_of(int64_t b, const Shape& batch, const Shape& strides) {
  int64_t off = 0;
  for (size_t d = batch.size(); d-- > 0;) {
    off += (b % batch[d]) * strides[d];
    b /= batch[d];
  }
  return off;
}

int as_int(int64_t v, const char* what, const std::string& context) {
  HD_CHECK(v >= 0 && v <= INT_MAX, context, ": ", what, " = ", v, " exceeds cuBLAS's 32-bit limit");
  return int(v);
}

}  // namespace

void set_allow_tf32(bool allow) {
  g_allow_tf32.store(allow);
}
bool allow_tf32() {
  return g_allow_tf32.load();
}

void matmul(const Tensor& a, const Tensor& bm, Tensor& out, bool accumulate) {
  const std::string context =
      detail::concat("matmul ", a.str(), " @ ", bm.str(), " -> ", out.str());
  HD_CHECK(a.dtype() == bm.dtype() && a.dtype() == out.dtype(), context, ": dtypes differ");
  HD_CHECK(out.is_contiguous() && out.dim() >= 2 && a.dim() >= 2 && bm.dim() >= 2, context,
           ": needs >= 2-D operands and a contiguous output");
  const int64_t M = out.size(-2), N = out.size(-1), K = a.size(-1);
  HD_CHECK(a.size(-2) == M && bm.size(-2) == K && bm.size(-1) == N, context,
           ": shapes do not chain");
  Shape batch(out.shape().begin(), out.shape().end() - 2);
  const int64_t count = shape_numel(batch);
  if (M == 0 || N == 0 || count == 0) return;
  DeviceGuard guard(out.device().index);
  cudaStream_t stream = stream_of(out);
  const size_t es = dtype_size(out.dtype());
  if (K == 0) {
    if (!accumulate)
      HD_CUDA_CHECK(cudaMemsetAsync(out.raw_data(), 0, out.nbytes(), stream), context);
    return;
  }

  cudaDataType_t dt;
  cublasComputeType_t compute;
  switch (out.dtype()) {
    case DType::f32:
      dt = CUDA_R_32F;
      compute = allow_tf32() ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
      break;
    case DType::f64:
      dt = CUDA_R_64F;
      compute = CUBLAS_COMPUTE_64F;
      break;
    case DType::bf16:
      dt = CUDA_R_16BF;
      compute = CUBLAS_COMPUTE_32F;
      break;
    case DType::f16:
      dt = CUDA_R_16F;
      compute = CUBLAS_COMPUTE_32F;
      break;
    default:
      throw Error(detail::concat(context, ": cuBLAS GEMM needs f32, f64, bf16 or f16"));
  }
  const float alpha_f = 1.0f, beta_f = accumulate ? 1.0f : 0.0f;
  const double alpha_d = 1.0, beta_d = accumulate ? 1.0 : 0.0;
  const void* alpha = out.dtype() == DType::f64 ? static_cast<const void*>(&alpha_d) : &alpha_f;
  const void* beta = out.dtype() == DType::f64 ? static_cast<const void*>(&beta_d) : &beta_f;

  // Column-major problem: C^T[N, M] = B^T[N, K] A^T[K, M].
  Operand ob = describe(bm, context), oa = describe(a, context);
  const int m = as_int(N, "N", context), n = as_int(M, "M", context), k = as_int(K, "K", context);
  const int lda = as_int(ob.ld, "ld(B)", context), ldb = as_int(oa.ld, "ld(A)", context);
  const int ldc = as_int(N, "ld(C)", context);
  cublasHandle_t h = handle_for(out.device().index, context);
  check_cublas(cublasSetStream(h, stream), "cublasSetStream", context);

  Shape sa = batch_strides(a, batch), sb = batch_strides(bm, batch);
  int64_t stride_a = 0, stride_b = 0;
  const int64_t stride_c = M * N;
  const char* pa = static_cast<const char*>(a.raw_data());
  const char* pb = static_cast<const char*>(bm.raw_data());
  char* pc = static_cast<char*>(out.raw_data());
  if (flat_stride(batch, sa, stride_a) && flat_stride(batch, sb, stride_b)) {
    check_cublas(
        cublasGemmStridedBatchedEx(h, ob.op, oa.op, m, n, k, alpha, pb, dt, lda, stride_b, pa, dt,
                                   ldb, stride_a, beta, pc, dt, ldc, stride_c,
                                   as_int(count, "batch", context), compute, CUBLAS_GEMM_DEFAULT),
        "cublasGemmStridedBatchedEx", context);
    return;
  }
  for (int64_t b = 0; b < count; ++b) {
    check_cublas(
        cublasGemmEx(h, ob.op, oa.op, m, n, k, alpha, pb + offset_of(b, batch, sb) * es, dt, lda,
                     pa + offset_of(b, batch, sa) * es, dt, ldb, beta,
                     pc + b * stride_c * int64_t(es), dt, ldc, compute, CUBLAS_GEMM_DEFAULT),
        "cublasGemmEx", context);
  }
}

}  // namespace hd::cuda
