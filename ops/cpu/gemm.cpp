#include "ops/cpu/gemm.h"

#include <cblas.h>

#include <algorithm>

#include "autograd/thread_pool.h"
#include "ops/cpu/strided_loop.h"

namespace hd::cpu {

void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
          int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, int(M),
              int(N), int(K), alpha, A, int(lda), B, int(ldb), beta, C, int(ldc));
}

void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha, const double* A,
          int64_t lda, const double* B, int64_t ldb, double beta, double* C, int64_t ldc) {
  cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, int(M),
              int(N), int(K), alpha, A, int(lda), B, int(ldb), beta, C, int(ldc));
}

namespace {

constexpr int64_t kRowBlock = 128;

struct Layout {
  bool trans;
  int64_t ld;
};

// BLAS layout of a [rows, cols] matrix with strides (sr, sc); size-1 dims may have any stride.
Layout layout_of(int64_t rows, int64_t cols, int64_t sr, int64_t sc, const char* which) {
  if (cols == 1 || sc == 1) {
    if (rows == 1 || sr >= std::max<int64_t>(cols, 1))
      return {false, rows == 1 ? std::max<int64_t>(cols, 1) : sr};
  }
  if (rows == 1 || sr == 1) {
    if (cols == 1 || sc >= std::max<int64_t>(rows, 1))
      return {true, cols == 1 ? std::max<int64_t>(rows, 1) : sc};
  }
  throw Error(detail::concat("matmul: operand ", which, " has no BLAS layout (strides ", sr, ", ",
                             sc, " for a ", rows, "x", cols, " matrix); make it contiguous"));
}

}  // namespace

void matmul(const Tensor& a, const Tensor& bm, Tensor& out, bool accumulate) {
  const int64_t r = out.dim();
  const int64_t M = out.shape()[size_t(r - 2)], N = out.shape()[size_t(r - 1)];
  const int64_t K = a.shape()[size_t(a.dim() - 1)];
  Shape batch(out.shape().begin(), out.shape().end() - 2);
  // Batch strides of each operand (0 where broadcast).
  auto batch_strides = [&](const Tensor& t) {
    Shape s(batch.size(), 0);
    int64_t lead = int64_t(batch.size()) - (t.dim() - 2);
    for (int64_t i = 0; i < t.dim() - 2; ++i) {
      if (t.shape()[size_t(i)] != 1) s[size_t(lead + i)] = t.strides()[size_t(i)];
    }
    return s;
  };
  Shape sa = batch_strides(a), sb = batch_strides(bm);
  const int64_t batches = shape_numel(batch);
  Layout la = layout_of(M, K, a.stride(-2), a.stride(-1), "A");
  Layout lb = layout_of(K, N, bm.stride(-2), bm.stride(-1), "B");
  if (M == 0 || N == 0) return;

  visit_float(out.dtype(), "matmul", [&]<class T>() {
    const T* pa = a.data<T>();
    const T* pb = bm.data<T>();
    T* pc = out.data<T>();
    const T beta = accumulate ? T(1) : T(0);
    auto offsets = [&](int64_t b, int64_t& oa, int64_t& ob) {
      oa = ob = 0;
      for (size_t d = batch.size(); d-- > 0;) {
        int64_t i = b % batch[d];
        b /= batch[d];
        oa += i * sa[d];
        ob += i * sb[d];
      }
    };
    if (K == 0) {
      if (!accumulate) std::fill(pc, pc + batches * M * N, T(0));
      return;
    }
    // Fixed 128-row blocks, one sgemm call each, parallel over (batch, block). The blocks do
    // not depend on the thread count, so neither does any output bit (OpenBLAS may pick other
    // kernels for other block sizes, e.g. gemv for one row).
    const int64_t blocks_per_batch = (M + kRowBlock - 1) / kRowBlock;
    const int64_t a_row_step = la.trans ? 1 : la.ld;
    parallel_for(0, batches * blocks_per_batch, 1, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        int64_t b = t / blocks_per_batch, m0 = (t % blocks_per_batch) * kRowBlock;
        int64_t rows = std::min(kRowBlock, M - m0);
        int64_t oa, ob;
        offsets(b, oa, ob);
        gemm(la.trans, lb.trans, rows, N, K, T(1), pa + oa + m0 * a_row_step, la.ld, pb + ob, lb.ld,
             beta, pc + b * M * N + m0 * N, N);
      }
    });
  });
}

}  // namespace hd::cpu
