#include "ops/cpu/gemm.h"

#include <cblas.h>

#include <algorithm>

#include "autograd/thread_pool.h"
#include "ops/cpu/isa.h"
#include "ops/cpu/onednn_matmul.h"
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

// op(X) of a BLAS operand: [rows, cols], stored as such with row stride ld, or (trans) stored
// [cols, rows]. Copies the stored block densely (row stride = stored cols) and says the new ld.
template <class From, class To, class Convert>
int64_t pack_operand(const From* x, bool trans, int64_t rows, int64_t cols, int64_t ld, To* out,
                     Convert convert) {
  const int64_t stored_rows = trans ? cols : rows, stored_cols = trans ? rows : cols;
  for (int64_t r = 0; r < stored_rows; ++r) {
    const From* src = x + r * ld;
    To* dst = out + r * stored_cols;
    for (int64_t c = 0; c < stored_cols; ++c) dst[c] = convert(src[c]);
  }
  return std::max<int64_t>(stored_cols, 1);
}

float widen(bf16_t v) {
  return bf16_to_float(v);
}
bf16_t narrow(float v) {
  return float_to_bf16(v);
}

bool onednn_bf16_products(int64_t K) {
  return K > 0 && onednn::capability().bf16_matmul;
}

// A product of bf16 operands done (true) when it is empty or oneDNN can run it here.
template <class Out>
bool done_on_onednn(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const bf16_t* A,
                    int64_t lda, const bf16_t* B, int64_t ldb, float beta, Out* C, int64_t ldc) {
  if (M == 0 || N == 0) return true;
  if (!onednn_bf16_products(K)) return false;
  onednn::gemm_bf16(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  return true;
}

}  // namespace

void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const bf16_t* A,
          int64_t lda, const bf16_t* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (done_on_onednn(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc)) return;
  Tensor scratch = Tensor::empty({std::max<int64_t>(M * K + K * N, 1)}, DType::f32);
  float* a32 = scratch.data<float>();
  float* b32 = a32 + M * K;
  const int64_t la = pack_operand(A, ta, M, K, lda, a32, widen);
  const int64_t lb = pack_operand(B, tb, K, N, ldb, b32, widen);
  gemm(ta, tb, M, N, K, alpha, a32, la, b32, lb, beta, C, ldc);
}

void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
          int64_t lda, const bf16_t* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  if (onednn_bf16_products(K)) {
    Tensor scratch = Tensor::empty({M * K}, DType::bf16);
    bf16_t* a16 = scratch.data<bf16_t>();
    const int64_t la = pack_operand(A, ta, M, K, lda, a16, narrow);
    onednn::gemm_bf16(ta, tb, M, N, K, alpha, a16, la, B, ldb, beta, C, ldc);
    return;
  }
  Tensor scratch = Tensor::empty({std::max<int64_t>(K * N, 1)}, DType::f32);
  float* b32 = scratch.data<float>();
  const int64_t lb = pack_operand(B, tb, K, N, ldb, b32, widen);
  gemm(ta, tb, M, N, K, alpha, A, lda, b32, lb, beta, C, ldc);
}

void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const bf16_t* A,
          int64_t lda, const bf16_t* B, int64_t ldb, float beta, bf16_t* C, int64_t ldc) {
  if (done_on_onednn(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc)) return;
  Tensor scratch = Tensor::empty({M * N}, DType::f32);
  float* c32 = scratch.data<float>();
  for (int64_t i = 0; i < M; ++i) {
    for (int64_t j = 0; j < N; ++j) c32[i * N + j] = beta != 0.0f ? widen(C[i * ldc + j]) : 0.0f;
  }
  gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, c32, N);
  for (int64_t i = 0; i < M; ++i) {
    for (int64_t j = 0; j < N; ++j) C[i * ldc + j] = narrow(c32[i * N + j]);
  }
}

namespace {

// K slices for split-K, a function of the shape only: used when K dwarfs the output (weight
// gradients, K = tokens), where cutting rows would repack the whole K x N operand per block.
int64_t split_k_blocks(int64_t M, int64_t N, int64_t K) {
  if (K < 4 * std::max(M, N) || K < 1024) return 1;
  return std::clamp<int64_t>(K / 512, 2, 8);
}

// Rows per block: the product is cut into at most 8 row blocks (at least 32 rows each, a
// multiple of 8), a function of M only. Few blocks keep OpenBLAS's packing of B (repeated per
// call) cheap; 8 keeps 2, 4 or 8 threads busy; and since the cut never depends on the thread
// count, neither does any output bit.
int64_t rows_per_block(int64_t M) {
  int64_t blocks = std::clamp<int64_t>((M + 31) / 32, 1, 8);
  int64_t rows = (M + blocks - 1) / blocks;
  return (rows + 7) / 8 * 8;
}

// Columns per block when a product is cut into column blocks instead (see matmul): at most 8
// blocks of at least 64 columns, a multiple of 16, a function of N only.
int64_t cols_per_block(int64_t N) {
  int64_t blocks = std::clamp<int64_t>((N + 63) / 64, 1, 8);
  int64_t cols = (N + blocks - 1) / blocks;
  return (cols + 15) / 16 * 16;
}

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

void matmul(const Tensor& a, const Tensor& bm, Tensor& out, bool accumulate, const Tensor* bias) {
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

  auto typed = [&]<class T>() {
    using S = typename ElementTraits<T>::compute;  // alpha, beta and split-K partial sums
    const T* pa = a.data<T>();
    const T* pb = bm.data<T>();
    T* pc = out.data<T>();
    const S beta = accumulate ? S(1) : S(0);
    const T* pbias = bias ? bias->data<T>() : nullptr;
    // c[r][j] += bias[j] for rows [0, rows) and columns [j0, j1) of a block whose rows are N
    // apart, computed as add_ would (in S, rounded once to T).
    auto add_bias = [&](T* c, int64_t rows, int64_t j0, int64_t j1) {
      if (!pbias) return;
      run_vectorised([&] {
        for (int64_t r = 0; r < rows; ++r) {
          T* row = c + r * N;
          for (int64_t j = j0; j < j1; ++j) {
            row[j] = ElementTraits<T>::store(ElementTraits<T>::load(row[j]) +
                                             ElementTraits<T>::load(pbias[j]));
          }
        }
      });
    };
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
      if (!accumulate) std::fill(pc, pc + batches * M * N, ElementTraits<T>::store(S(0)));
      add_bias(pc, batches * M, 0, N);
      return;
    }
    const int64_t a_row_step = la.trans ? 1 : la.ld;
    const int64_t a_k_step = la.trans ? la.ld : 1;
    const int64_t b_k_step = lb.trans ? 1 : lb.ld;
    const int64_t kblocks = split_k_blocks(M, N, K);
    if (batches == 1 && kblocks > 1) {
      // Split-K for tall products such as weight gradients (K = tokens): each fixed K slice is
      // one call that packs only its own slices, and the partials are summed in slice order.
      const int64_t kb = (K + kblocks - 1) / kblocks;
      Tensor partial = Tensor::empty({kblocks, M, N}, dtype_of<S>());
      S* pp = partial.data<S>();
      parallel_for(0, kblocks, 1, [&](int64_t s0, int64_t s1) {
        for (int64_t s = s0; s < s1; ++s) {
          int64_t k0 = s * kb, kl = std::min(kb, K - k0);
          gemm(la.trans, lb.trans, M, N, kl, S(1), pa + k0 * a_k_step, la.ld, pb + k0 * b_k_step,
               lb.ld, S(0), pp + s * M * N, N);
        }
      });
      // The partials summed per element in slice order, vectorised and split over the pool
      // (a weight gradient's [64, 256] of PS3's demo, ~24 per bf16 step, was one thread's
      // scalar loop while the other waited).
      parallel_for(0, M, std::max<int64_t>(1, 4096 / N), [&](int64_t m0, int64_t m1) {
        run_vectorised([&] {
          for (int64_t m = m0; m < m1; ++m) {
            for (int64_t j = 0; j < N; ++j) {
              const int64_t e = m * N + j;
              S acc = accumulate ? ElementTraits<T>::load(pc[e]) : S(0);
              for (int64_t s = 0; s < kblocks; ++s) acc += pp[s * M * N + e];
              pc[e] = ElementTraits<T>::store(acc);
              if (pbias) {
                pc[e] = ElementTraits<T>::store(ElementTraits<T>::load(pc[e]) +
                                                ElementTraits<T>::load(pbias[j]));
              }
            }
          }
        });
      });
      return;
    }
    // Row blocks (see rows_per_block), one GEMM call each, parallel over (batch, block) — or
    // column blocks where they are more: a short, wide output (the weight gradient of PS3's
    // selection stem, [32, 2352] over 5832 tokens; a vocabulary projection of a few tokens) has
    // one row block, which left every thread but one idle (that stem gradient 8.1 -> 3.7 ms in
    // bf16 on 2 threads, hd_bench_onednn_gemm --ps3). A column block packs all of A, which is
    // small exactly when M is.
    const int64_t row_block = rows_per_block(M), col_block = cols_per_block(N);
    const int64_t row_blocks = (M + row_block - 1) / row_block;
    const int64_t col_blocks = (N + col_block - 1) / col_block;
    const bool by_columns = col_blocks > row_blocks;
    const int64_t blocks_per_batch = by_columns ? col_blocks : row_blocks;
    const int64_t b_col_step = lb.trans ? lb.ld : 1;
    parallel_for(0, batches * blocks_per_batch, 1, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        int64_t b = t / blocks_per_batch, i0 = (t % blocks_per_batch);
        int64_t oa, ob;
        offsets(b, oa, ob);
        T* c = pc + b * M * N;
        if (by_columns) {
          const int64_t n0 = i0 * col_block, cols = std::min(col_block, N - n0);
          gemm(la.trans, lb.trans, M, cols, K, S(1), pa + oa, la.ld, pb + ob + n0 * b_col_step,
               lb.ld, beta, c + n0, N);
          add_bias(c, M, n0, n0 + cols);
        } else {
          const int64_t m0 = i0 * row_block, rows = std::min(row_block, M - m0);
          gemm(la.trans, lb.trans, rows, N, K, S(1), pa + oa + m0 * a_row_step, la.ld, pb + ob,
               lb.ld, beta, c + m0 * N, N);
          add_bias(c + m0 * N, rows, 0, N);
        }
      }
    });
  };
  if (out.dtype() == DType::bf16) {
    typed.template operator()<bf16_t>();
  } else {
    visit_float(out.dtype(), "matmul", typed);
  }
}

}  // namespace hd::cpu
