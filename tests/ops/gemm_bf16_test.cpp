// cpu::gemm on bf16 operands (ops/cpu/gemm.h): the tile products of the CPU attention on bf16
// tensors. Where oneDNN has bf16 products (AVX-512-BF16, AMX) they run there, elsewhere the
// operands are widened for OpenBLAS; the same cases check whichever path this CPU takes, against
// f64 products of exactly the values that path multiplies (the mixed form rounds its f32 A to
// bf16 for oneDNN only).
#include "ops/cpu/gemm.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <vector>

#include "autograd/random.h"
#include "ops/cpu/onednn_matmul.h"
#include "ops/elementwise.h"
#include "ops/factory.h"
#include "ops/linalg.h"
#include "ops/reduce.h"
#include "ops/shape.h"

namespace hd {
namespace {

struct Layout {
  bool trans_a, trans_b;
  int64_t M, N, K;
  int64_t pad;  // extra elements per stored row: ld = stored cols + pad
  float alpha, beta;
};

const Layout kLayouts[] = {
    {false, true, 64, 256, 64, 0, 0.125f, 0.0f},  // attention's S = Q K^T, full tile
    {false, false, 64, 64, 256, 0, 1.0f, 1.0f},   // O += P V
    {true, false, 256, 64, 64, 0, 1.0f, 1.0f},    // dV += P^T dO
    {false, true, 13, 7, 5, 3, 0.7f, 0.0f},       // ragged tile, strided rows
    {true, true, 9, 11, 6, 2, 1.0f, 1.0f},       {false, false, 1, 1, 1, 0, 2.0f, 1.0f},
};

std::vector<float> random_values(int64_t n, uint64_t seed) {
  Generator g(seed, "gemm_bf16_test");
  return normal({n}, 0, 1, g).to_vector<float>();
}

std::vector<bf16_t> to_bf16(const std::vector<float>& v) {
  std::vector<bf16_t> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = float_to_bf16(v[i]);
  return out;
}

// Stored element (r, c) of op(X) = X[rows, cols] given its BLAS layout.
template <class V>
double element(const V& x, bool trans, int64_t ld, int64_t r, int64_t c) {
  return double(x[size_t(trans ? c * ld + r : r * ld + c)]);
}

struct Operands {
  int64_t lda, ldb, ldc;
  std::vector<float> a, b, c0;
};

Operands make(const Layout& l, uint64_t seed) {
  Operands o;
  o.lda = (l.trans_a ? l.M : l.K) + l.pad;
  o.ldb = (l.trans_b ? l.K : l.N) + l.pad;
  o.ldc = l.N + l.pad;
  o.a = random_values((l.trans_a ? l.K : l.M) * o.lda, seed);
  o.b = random_values((l.trans_b ? l.N : l.K) * o.ldb, seed + 1);
  o.c0 = random_values(l.M * o.ldc, seed + 2);
  return o;
}

// alpha * op(A) op(B) + beta * C0 in f64, for A and B given as floats (already rounded).
std::vector<double> reference(const Layout& l, const Operands& o, const std::vector<float>& a,
                              const std::vector<float>& b) {
  std::vector<double> c(size_t(l.M * l.N));
  for (int64_t i = 0; i < l.M; ++i) {
    for (int64_t j = 0; j < l.N; ++j) {
      double s = 0;
      for (int64_t k = 0; k < l.K; ++k) {
        s += element(a, l.trans_a, o.lda, i, k) * element(b, l.trans_b, o.ldb, k, j);
      }
      c[size_t(i * l.N + j)] = l.alpha * s + l.beta * double(o.c0[size_t(i * o.ldc + j)]);
    }
  }
  return c;
}

std::vector<float> rounded(const std::vector<float>& v) {
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = bf16_to_float(float_to_bf16(v[i]));
  return out;
}

// f32 accumulation of K products of N(0,1) values: error well under 1e-5 * sqrt(K) * |alpha|.
void expect_matches(const Layout& l, const Operands& o, const std::vector<float>& got,
                    const std::vector<double>& want, const char* what) {
  const double tol = 2e-5 * std::sqrt(double(l.K)) * std::max(1.0f, l.alpha) + 1e-6;
  double worst = 0;
  for (int64_t i = 0; i < l.M; ++i) {
    for (int64_t j = 0; j < l.N; ++j) {
      worst =
          std::max(worst, std::abs(double(got[size_t(i * o.ldc + j)]) - want[size_t(i * l.N + j)]));
    }
    // The padding of C's rows is never written.
    for (int64_t j = l.N; j < o.ldc; ++j) {
      ASSERT_EQ(got[size_t(i * o.ldc + j)], o.c0[size_t(i * o.ldc + j)]) << what;
    }
  }
  EXPECT_LE(worst, tol) << what << ": " << l.M << "x" << l.N << "x" << l.K
                        << (l.trans_a ? " A^T" : "") << (l.trans_b ? " B^T" : "") << " alpha "
                        << l.alpha << " beta " << l.beta;
}

void say_which_path() {
  const auto& cap = cpu::onednn::capability();
  std::printf("bf16 tile products here: %s\n",
              cap.bf16_matmul ? ("oneDNN " + cap.bf16_impl).c_str()
                              : ("widened for OpenBLAS (" + cap.reason + ")").c_str());
}

TEST(GemmBf16, Bf16OperandsMatchTheF64ProductOfTheirValues) {
  say_which_path();
  uint64_t seed = 10;
  for (const Layout& l : kLayouts) {
    Operands o = make(l, seed += 10);
    const std::vector<bf16_t> a16 = to_bf16(o.a), b16 = to_bf16(o.b);
    std::vector<float> c = o.c0;
    cpu::gemm(l.trans_a, l.trans_b, l.M, l.N, l.K, l.alpha, a16.data(), o.lda, b16.data(), o.ldb,
              l.beta, c.data(), o.ldc);
    expect_matches(l, o, c, reference(l, o, rounded(o.a), rounded(o.b)), "bf16 x bf16");
  }
}

TEST(GemmBf16, F32TimesBf16MatchesTheProductThePathComputes) {
  say_which_path();
  // oneDNN multiplies bf16 by bf16, so A (attention's probabilities) is rounded first; the
  // OpenBLAS path keeps it exact. Each path is held to its own product, and the two differ by
  // far more than the tolerance, so a path that rounds when it should not (or the reverse)
  // fails.
  const bool rounds_a = cpu::onednn::capability().bf16_matmul;
  uint64_t seed = 100;
  for (const Layout& l : kLayouts) {
    Operands o = make(l, seed += 10);
    const std::vector<bf16_t> b16 = to_bf16(o.b);
    std::vector<float> c = o.c0;
    cpu::gemm(l.trans_a, l.trans_b, l.M, l.N, l.K, l.alpha, o.a.data(), o.lda, b16.data(), o.ldb,
              l.beta, c.data(), o.ldc);
    const std::vector<float> a_used = rounds_a ? rounded(o.a) : o.a;
    expect_matches(l, o, c, reference(l, o, a_used, rounded(o.b)), "f32 x bf16");
    if (l.K >= 64) {  // the other path's product is measurably different
      const std::vector<double> other =
          reference(l, o, rounds_a ? o.a : rounded(o.a), rounded(o.b));
      double apart = 0;
      for (int64_t i = 0; i < l.M; ++i) {
        for (int64_t j = 0; j < l.N; ++j) {
          apart = std::max(apart,
                           std::abs(double(c[size_t(i * o.ldc + j)]) - other[size_t(i * l.N + j)]));
        }
      }
      EXPECT_GT(apart, 1e-3) << "the other rounding of A is indistinguishable here";
    }
  }
}

// cpu::matmul on bf16 tensors (what the matmul op runs where oneDNN has bf16 products): row
// blocks, column blocks (short, wide outputs), batches with a broadcast operand, a transposed
// operand and split-K (K = 4096 over a 16 x 16 output), each against the f64 product of the same
// bf16 values; the answer is rounded to bf16 once (2^-8 relative).
TEST(GemmBf16, MatmulOfBf16TensorsMatchesTheF64Product) {
  say_which_path();
  struct Shapes {
    const char* name;
    Shape a, b;
    bool transpose_b;
  };
  const Shapes cases[] = {
      {"row blocks", {300, 64}, {64, 40}, false},
      {"batched, b broadcast", {3, 70, 32}, {32, 24}, false},
      {"b transposed (linear's weight)", {90, 48}, {56, 48}, true},
      {"split-K", {16, 4096}, {4096, 16}, false},
      {"column blocks", {8, 40}, {40, 700}, false},
      {"column blocks, b transposed", {32, 96}, {2352, 96}, true},
  };
  uint64_t seed = 300;
  for (const Shapes& c : cases) {
    Generator g(++seed, "gemm_bf16_matmul");
    Tensor a = to(normal(c.a, 0, 1, g), DType::bf16);
    Tensor b = to(normal(c.b, 0, 1, g), DType::bf16);
    if (c.transpose_b) b = transpose(b, 0, 1);
    Shape out_shape = c.a;
    out_shape.back() = b.size(-1);
    Tensor out = Tensor::empty(out_shape, DType::bf16);
    cpu::matmul(a, b, out);
    Tensor want = matmul(to(a, DType::f64), to(b, DType::f64));
    Tensor err = abs(sub(to(out, DType::f64), want));
    // Rounding to bf16 (half an ulp: 2^-9 relative) plus f32 accumulation.
    Tensor bound = add(mul(abs(want), 1.0 / 256), 1e-4 * std::sqrt(double(c.a.back())));
    EXPECT_EQ(sum(gt(err, bound)).item<double>(), 0.0) << c.name;
  }
}

TEST(GemmBf16, EmptyProductsTouchNothingAndKZeroScalesC) {
  std::vector<bf16_t> a(4, float_to_bf16(1.0f)), b(4, float_to_bf16(1.0f));
  std::vector<float> c = {3.0f, 4.0f};
  cpu::gemm(false, false, 0, 2, 2, 1.0f, a.data(), 2, b.data(), 2, 0.0f, c.data(), 2);
  EXPECT_EQ(c, (std::vector<float>{3.0f, 4.0f}));
  // K = 0: C = beta * C (BLAS semantics), which oneDNN cannot express; both paths agree.
  cpu::gemm(false, false, 1, 2, 0, 1.0f, a.data(), 1, b.data(), 2, 0.0f, c.data(), 2);
  EXPECT_EQ(c, (std::vector<float>{0.0f, 0.0f}));
}

}  // namespace
}  // namespace hd
