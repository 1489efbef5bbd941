#include "ops/linalg.h"

#include <gtest/gtest.h>

#include <array>

#include "autograd/thread_pool.h"
#include "ops/cpu/gemm.h"

#include "ops/elementwise.h"
#include "ops/factory.h"
#include "ops/shape.h"
#include "tests/testing/gradcheck.h"

namespace hd {
namespace {

using testing::check_gradients;
using testing::max_abs_diff;
using testing::random_leaf;
using Inputs = std::vector<Tensor>;

// Reference product with plain loops (the readable CPU reference next to the BLAS path).
Tensor naive_matmul(const Tensor& a, const Tensor& b) {
  int64_t M = a.size(0), K = a.size(1), N = b.size(1);
  std::vector<double> va = a.to_vector<double>(), vb = b.to_vector<double>(), out(size_t(M * N));
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j)
      for (int64_t k = 0; k < K; ++k)
        out[size_t(i * N + j)] += va[size_t(i * K + k)] * vb[size_t(k * N + j)];
  return from_vector(out, {M, N}, DType::f64);
}

TEST(Matmul, MatchesNaiveLoopsForAllLayouts) {
  Tensor a = random_leaf({37, 19}, 1), b = random_leaf({19, 23}, 2);
  Tensor ref = naive_matmul(a, b);
  EXPECT_LT(max_abs_diff(matmul(a, b), ref), 1e-12);
  EXPECT_LT(max_abs_diff(matmul(contiguous(transpose(transpose(a, 0, 1), 0, 1)), b), ref), 1e-12);
  Tensor at = contiguous(transpose(a, 0, 1)), bt = contiguous(transpose(b, 0, 1));
  EXPECT_LT(max_abs_diff(matmul(transpose(at, 0, 1), transpose(bt, 0, 1)), ref), 1e-12);
  // f32 with a sliced (strided rows) operand
  Tensor big = to(random_leaf({37, 40}, 3), DType::f32);
  Tensor sliced = narrow(big, 1, 3, 19);
  Tensor ref32 = naive_matmul(to(contiguous(sliced), DType::f64), b);
  EXPECT_LT(max_abs_diff(matmul(sliced, to(b, DType::f32)), ref32), 1e-4);
}

TEST(Matmul, ShortWideProductsAreCutIntoColumnBlocks) {
  // Outputs with more column blocks than row blocks (M = 8: one row block; N = 700: 8 column
  // blocks of 96 and a short last one) are cut by columns: each block reads B from its own first
  // column, with B plain, transposed (a weight [N, K] used as W^T) or batched. The reference
  // multiplies every element itself, so a block at the wrong column offset fails it.
  Tensor a = random_leaf({8, 33}, 21), b = random_leaf({33, 700}, 22);
  Tensor ref = naive_matmul(a, b);
  EXPECT_LT(max_abs_diff(matmul(a, b), ref), 1e-12);
  Tensor bt = contiguous(transpose(b, 0, 1));  // [700, 33]
  EXPECT_LT(max_abs_diff(matmul(a, transpose(bt, 0, 1)), ref), 1e-12);
  Tensor at = contiguous(transpose(a, 0, 1));  // [33, 8]
  EXPECT_LT(max_abs_diff(matmul(transpose(at, 0, 1), transpose(bt, 0, 1)), ref), 1e-12);
  Tensor a2 = random_leaf({3, 8, 33}, 23);
  Tensor c2 = matmul(a2, b);
  for (int64_t i = 0; i < 3; ++i) {
    EXPECT_LT(max_abs_diff(select(c2, 0, i), naive_matmul(select(a2, 0, i), b)), 1e-12) << i;
  }
  // In f32 too (OpenBLAS's sgemm, the path of a training step).
  Tensor c32 = matmul(to(a, DType::f32), to(transpose(bt, 0, 1), DType::f32));
  EXPECT_LT(max_abs_diff(c32, ref), 1e-4);
}

TEST(Linear, BiasAddedInTheProductEqualsASeparateAdd) {
  // The CPU kernel adds a linear's bias in the tasks that wrote each block: the same bits as
  // the product followed by an add, for row blocks (600 x 48), column blocks (8 x 700), split-K
  // (16 x 2048 -> 24) and K = 0 (the kernel directly: the bias alone), in f64, f32 and bf16.
  const std::vector<std::array<int64_t, 3>> shapes = {{600, 40, 48}, {8, 33, 700}, {16, 2048, 24}};
  uint64_t seed = 60;
  for (DType dt : {DType::f64, DType::f32, DType::bf16}) {
    for (const auto& [m, k, n] : shapes) {
      Tensor x = to(random_leaf({m, k}, seed++).detach(), dt);
      Tensor w = to(random_leaf({n, k}, seed++).detach(), dt);
      Tensor b = to(random_leaf({n}, seed++).detach(), dt);
      Tensor fused = linear(x, w, b);
      Tensor separate = add(matmul(x, transpose(w, 0, 1)), b);
      EXPECT_EQ(to(fused, DType::f64).to_vector<double>(),
                to(separate, DType::f64).to_vector<double>())
          << dtype_name(dt) << " " << m << "x" << k << "x" << n;
    }
    Tensor b = to(random_leaf({7}, seed++).detach(), dt);
    Tensor out = Tensor::empty({5, 7}, dt);
    cpu::matmul(zeros({5, 0}, dt), zeros({0, 7}, dt), out, false, &b);
    EXPECT_EQ(to(out, DType::f64).to_vector<double>(),
              to(expand(reshape(b, {1, 7}), {5, 7}), DType::f64).to_vector<double>())
        << dtype_name(dt);
  }
}

TEST(Matmul, ResultDoesNotDependOnTheThreadCount) {
  // Products are cut into row blocks (and K blocks) that depend on the shape only, never on the
  // thread count, so a product computed on every thread of the pool equals, bit for bit, the
  // same product computed on one thread (a nested parallel_for runs serially). The shapes cover
  // the row split (600 rows: 8 blocks of 80), split-K (K = 2048), a batch and the column split
  // (32 x 2352: 8 blocks of 304 columns). (Comparing a row
  // block with the same rows multiplied alone is no invariant: OpenBLAS may pick other kernels
  // for another M, and on some CPUs the low bits then differ.)
  const std::vector<std::vector<int64_t>> shapes = {
      {600, 64, 50}, {16, 2048, 24}, {3, 70, 33, 9}, {32, 500, 2352}};
  uint64_t seed = 4;
  for (const auto& s : shapes) {
    const bool batched = s.size() == 4;
    Tensor a =
        to(random_leaf(batched ? Shape{s[0], s[1], s[2]} : Shape{s[0], s[1]}, seed++), DType::f32);
    Tensor b = to(random_leaf(batched ? Shape{s[2], s[3]} : Shape{s[1], s[2]}, seed++), DType::f32);
    Tensor on_all_threads = matmul(a, b), on_one_thread;
    ASSERT_GT(cpu_thread_pool().num_threads(), 0);
    parallel_for(0, 1, 1, [&](int64_t, int64_t) { on_one_thread = matmul(a, b); });
    EXPECT_EQ(on_all_threads.to_vector<float>(), on_one_thread.to_vector<float>())
        << "shape " << ::testing::PrintToString(s) << " on " << cpu_thread_pool().num_threads()
        << " threads";
  }
}

TEST(Matmul, BatchedBroadcastAndVectors) {
  Tensor a = random_leaf({2, 1, 3, 4}, 6), b = random_leaf({5, 4, 2}, 7);
  Tensor c = matmul(a, b);
  EXPECT_EQ(c.shape(), (Shape{2, 5, 3, 2}));
  Tensor ref = naive_matmul(reshape(select(a, 0, 1), {3, 4}), select(b, 0, 3));
  EXPECT_LT(max_abs_diff(select(select(c, 0, 1), 0, 3), ref), 1e-12);
  EXPECT_EQ(matmul(random_leaf({4}, 8), random_leaf({4, 3}, 9)).shape(), (Shape{3}));
  EXPECT_EQ(matmul(random_leaf({2, 4}, 8), random_leaf({4}, 9)).shape(), (Shape{2}));
  EXPECT_THROW(matmul(zeros({2, 3}), zeros({4, 2})), Error);
}

TEST(MatmulGrad, BatchedBroadcastAndTransposed) {
  Tensor a = random_leaf({2, 3, 4}, 10), b = random_leaf({4, 5}, 11);
  EXPECT_TRUE(check_gradients([](const Inputs& in) { return matmul(in[0], in[1]); }, {a, b}));
  Tensor c = random_leaf({4, 3}, 12);
  EXPECT_TRUE(check_gradients(
      [](const Inputs& in) { return matmul(transpose(in[0], 0, 1), in[1]); }, {c, b}));
  Tensor v = random_leaf({4}, 13);
  EXPECT_TRUE(check_gradients([](const Inputs& in) { return matmul(in[0], in[1]); }, {a, v}));
}

TEST(LinearGrad, WithAndWithoutBias) {
  Tensor x = random_leaf({2, 3, 4}, 14), w = random_leaf({5, 4}, 15), b = random_leaf({5}, 16);
  EXPECT_TRUE(
      check_gradients([](const Inputs& in) { return linear(in[0], in[1], in[2]); }, {x, w, b}));
  EXPECT_TRUE(check_gradients(
      [](const Inputs& in) {
        return linear(permute(in[0], {1, 0, 2}), in[1]);
      },
      {x, w}));
  EXPECT_THROW(linear(zeros({2, 3}), zeros({5, 4})), Error);
}

}  // namespace
}  // namespace hd
