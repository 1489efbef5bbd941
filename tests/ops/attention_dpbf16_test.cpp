// The bf16 dot-product attention kernel, head dims 16, 32, 64 (ops/cpu/attention_dpbf16.h): held to
// the f64 kernel on the same bf16 values in every case the semantics have (prefix, key mask,
// causal, ragged and odd lengths, more keys than one score tile, a row with no visible key), to the
// tiled bf16 path, and to itself across thread counts and operand layouts.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "autograd/node.h"
#include "autograd/random.h"
#include "ops/attention.h"
#include "ops/cpu/isa.h"
#include "ops/elementwise.h"
#include "ops/factory.h"
#include "ops/reduce.h"
#include "ops/shape.h"
#include "tests/testing/bf16_attention_inputs.h"
#include "tests/testing/child_process.h"
#include "tests/testing/fixtures.h"

namespace hd {
namespace {

using testing::expect_close;

bool kernel_runs_here() {
  return cpu::vector_isa().avx512_bf16;
}

#define SKIP_WITHOUT_AVX512_BF16()                                                               \
  if (!kernel_runs_here()) {                                                                     \
    GTEST_SKIP() << "the bf16 dot-product attention kernel needs AVX512_BF16 and this CPU runs " \
                 << cpu::vector_isa().name << " (" << cpu::vector_isa().reason                   \
                 << "); bf16 attention here takes the tiled path, tested in attention_bf16";     \
  }

using Case = testing::Bf16AttentionCase;
using Inputs = testing::Bf16AttentionInputs;

const Case kCases[] = {
    {"plain_odd_lengths", 2, 2, 37, 41, 0, 16, false, false},
    {"prefix", 1, 3, 29, 29, 11, 16, false, false},
    {"mask_causal", 2, 1, 33, 33, 0, 16, true, true},
    {"prefix_mask_causal", 1, 2, 21, 21, 9, 16, true, true},
    // More keys than one 1024-key score tile: the online softmax's rescaling across tiles.
    {"two_key_tiles_prefix_mask", 1, 2, 45, 1100, 200, 16, true, false},
    // Query tiles past the first key tile: causal tiles skipped, partly hidden ones masked.
    {"two_key_tiles_causal", 1, 1, 1090, 1090, 0, 16, false, true},
    // Wider heads: dK and dV from interleaved row pairs, 2 and 4 vectors per row.
    {"d32_plain_odd_lengths", 2, 2, 37, 41, 0, 32, false, false},
    {"d32_prefix_mask_causal", 1, 2, 21, 21, 9, 32, true, true},
    {"d64_plain_odd_lengths", 2, 3, 37, 41, 0, 64, false, false},
    {"d64_prefix_mask_causal", 1, 2, 21, 21, 9, 64, true, true},
    {"d64_two_key_tiles_prefix_mask", 1, 1, 45, 1100, 200, 64, true, false},
    // One query (PS3's MAP pooling head): a group of one row, a query pair padded with zeros.
    {"one_query_prefix", 2, 4, 1, 29, 7, 16, false, false},
};

Inputs make_inputs(const Case& c, uint64_t seed) {
  return testing::make_bf16_attention_inputs(c, seed, "attention_dpbf16_test");
}

struct Result {
  Tensor out;
  std::vector<Tensor> grads;
};

enum class Path { f64_reference, dpbf16, tiled_bf16 };

Result run(const Inputs& in, Path path) {
  std::vector<Tensor> x;
  for (const Tensor& l : in.leaves) {
    x.push_back(path == Path::f64_reference ? to(l.detach(), DType::f64).requires_grad_(true) : l);
  }
  AttentionOptions o = in.o;
  if (x.size() == 5) {
    o.prefix_k = x[3];
    o.prefix_v = x[4];
  }
  Tensor out = path == Path::f64_reference ? scaled_dot_product_attention(x[0], x[1], x[2], o)
                                           : detail::scaled_dot_product_attention_dpbf16(
                                                 x[0], x[1], x[2], o, path == Path::dpbf16);
  sum(mul(to(out, DType::f32), to(in.weight, DType::f32))).backward();
  Result r{out.detach(), {}};
  for (Tensor& t : x) {
    r.grads.push_back(t.grad());
    t.zero_grad();
  }
  return r;
}

double max_abs_diff(const Tensor& a, const Tensor& b) {
  const std::vector<double> x = a.to_vector<double>(), y = b.to_vector<double>();
  double m = 0;
  for (size_t i = 0; i < x.size(); ++i) m = std::max(m, std::abs(x[i] - y[i]));
  return m;
}

bool same_bits(const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape() || a.dtype() != b.dtype()) return false;
  Tensor ca = contiguous(a), cb = contiguous(b);
  return std::memcmp(ca.raw_data(), cb.raw_data(), ca.nbytes()) == 0;
}

TEST(AttentionDpbf16, MatchesTheF64KernelAndTheTiledPathOnTheSameValues) {
  SKIP_WITHOUT_AVX512_BF16();
  uint64_t seed = 1;
  for (const Case& c : kCases) {
    const Inputs in = make_inputs(c, ++seed);
    const Result want = run(in, Path::f64_reference);
    const Result got = run(in, Path::dpbf16);
    const Result tiled = run(in, Path::tiled_bf16);
    ASSERT_EQ(got.out.dtype(), DType::bf16) << c.name;
    // Outputs in [-1.5, 1.5]: bf16 rounding of P, dS and the results (2^-8 relative).
    expect_close(got.out, want.out, 2e-2, 2e-2, std::string(c.name) + " out vs f64");
    expect_close(got.out, tiled.out, 2e-2, 2e-2, std::string(c.name) + " out vs tiled");
    for (size_t i = 0; i < got.grads.size(); ++i) {
      const std::string what = std::string(c.name) + " grad of input " + std::to_string(i);
      ASSERT_TRUE(got.grads[i].defined()) << what;
      ASSERT_EQ(got.grads[i].dtype(), DType::bf16) << what;
      expect_close(got.grads[i], want.grads[i], 3e-2, 3e-2, what + " vs f64");
      expect_close(got.grads[i], tiled.grads[i], 3e-2, 3e-2, what + " vs tiled");
    }
    // The comparison can fail: k with its two halves of head dims swapped (a wrong pairing of
    // dims) is caught.
    Inputs swapped = in;
    swapped.leaves[1] = contiguous(cat({narrow(in.leaves[1].detach(), 3, c.Dh / 2, c.Dh / 2),
                                        narrow(in.leaves[1].detach(), 3, 0, c.Dh / 2)},
                                       3))
                            .requires_grad_(true);
    const Result wrong = run(swapped, Path::dpbf16);
    EXPECT_GT(max_abs_diff(wrong.out, want.out), 5e-2) << c.name;
  }
}

// Production takes this kernel for bf16 heads of 16, 32, 64 on such CPUs: the default op's bits.
TEST(AttentionDpbf16, IsWhatTheOpRunsByDefault) {
  SKIP_WITHOUT_AVX512_BF16();
  const Inputs in = make_inputs(kCases[3], 7);
  AttentionOptions o = in.o;
  o.prefix_k = in.leaves[3];
  o.prefix_v = in.leaves[4];
  NoGradGuard no_grad;
  Tensor by_default = scaled_dot_product_attention(in.leaves[0], in.leaves[1], in.leaves[2], o);
  Tensor forced = detail::scaled_dot_product_attention_dpbf16(in.leaves[0], in.leaves[1],
                                                              in.leaves[2], o, true);
  Tensor tiled = detail::scaled_dot_product_attention_dpbf16(in.leaves[0], in.leaves[1],
                                                             in.leaves[2], o, false);
  EXPECT_TRUE(same_bits(by_default, forced));
  EXPECT_FALSE(same_bits(by_default, tiled));  // the two paths round differently
}

// A query whose keys are all masked gets zeros and zero gradients (no NaN), as in every path.
TEST(AttentionDpbf16, RowWithNoVisibleKeyIsZero) {
  SKIP_WITHOUT_AVX512_BF16();
  Case c{"all_masked_batch", 2, 2, 19, 23, 0, 16, false, false};
  Inputs in = make_inputs(c, 3);
  std::vector<bool> m(size_t(2 * 23), true);
  for (int64_t j = 0; j < 23; ++j) m[size_t(23 + j)] = false;  // batch 1 sees nothing
  in.o.key_mask = from_vector(m, {2, 23});
  const Result got = run(in, Path::dpbf16);
  const Result want = run(in, Path::f64_reference);
  Tensor hidden = narrow(to(got.out, DType::f32), 0, 1, 1);
  for (float x : hidden.to_vector<float>()) ASSERT_EQ(x, 0.0f);
  for (const Tensor& g : got.grads) {
    for (float x : to(g, DType::f32).to_vector<float>()) ASSERT_TRUE(std::isfinite(x));
    for (float x : narrow(to(g, DType::f32), 0, 1, 1).to_vector<float>()) ASSERT_EQ(x, 0.0f);
  }
  expect_close(got.out, want.out, 2e-2, 2e-2, "out");
}

// No keys at all: zeros, and zero gradients for q (as the other kernels give).
TEST(AttentionDpbf16, NoKeysGiveZeros) {
  SKIP_WITHOUT_AVX512_BF16();
  for (int64_t d : {16, 64}) {
    Tensor q = zeros({2, 3, 5, d}, DType::bf16).requires_grad_(true);
    Tensor none = zeros({2, 3, 0, d}, DType::bf16).requires_grad_(true);
    Tensor out = detail::scaled_dot_product_attention_dpbf16(q, none, none, {}, true);
    ASSERT_EQ(out.shape(), (Shape{2, 3, 5, d}));
    for (float x : to(out, DType::f32).to_vector<float>()) ASSERT_EQ(x, 0.0f);
    sum(to(out, DType::f32)).backward();
    for (float x : to(q.grad(), DType::f32).to_vector<float>()) ASSERT_EQ(x, 0.0f);
  }
}

// q, k, v as permuted views of one packed [B, N, 3, H, 16] projection (rows 3 H 16 apart) give
// the bits of contiguous copies.
TEST(AttentionDpbf16, PermutedViewsGiveTheBitsOfContiguousCopies) {
  SKIP_WITHOUT_AVX512_BF16();
  const int64_t B = 2, N = 53, H = 4;
  Generator gen(11, "attention_dpbf16_views");
  Tensor qkv = uniform({B, N, 3, H, 16}, -1.5, 1.5, gen, DType::bf16);
  auto part = [&](int64_t i) { return permute(select(qkv, 2, i), {0, 2, 1, 3}); };
  Tensor g = uniform({B, H, N, 16}, -1, 1, gen, DType::bf16);
  auto grads_of = [&](bool views) {
    std::vector<Tensor> x;
    for (int64_t i = 0; i < 3; ++i) {
      x.push_back((views ? part(i) : contiguous(part(i))).detach().requires_grad_(true));
    }
    Tensor out = detail::scaled_dot_product_attention_dpbf16(x[0], x[1], x[2], {}, true);
    out.backward(g);
    std::vector<Tensor> r = {out.detach()};
    for (Tensor& t : x) r.push_back(t.grad());
    return r;
  };
  const std::vector<Tensor> a = grads_of(true), b = grads_of(false);
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(same_bits(a[i], b[i])) << "tensor " << i;
}

// [Note: gradients laid out like packed q, k, v] (ops/attention.cpp): q, k, v unbound from one
// packed projection, as SelfAttention makes them (with a prefix, as PS3's look-close steps), get
// gradients that are views of one buffer in the projection's layout, and the projection's
// gradient is that buffer: the bits of the gradient computed from contiguous copies. Views that
// do not fill one block (slots 0, 1, 3 of four) take the copying path, with the same bits.
TEST(AttentionDpbf16, GradientsOfPackedViewsComeBackInThePackedLayout) {
  SKIP_WITHOUT_AVX512_BF16();
  const int64_t B = 2, N = 37, H = 3, Np = 11;
  Generator gen(12, "attention_dpbf16_packed");
  Tensor g = uniform({B, H, N, 16}, -1, 1, gen, DType::bf16);
  AttentionOptions prefix;
  prefix.prefix_k = uniform({B, H, Np, 16}, -1, 1, gen, DType::bf16);
  prefix.prefix_v = uniform({B, H, Np, 16}, -1, 1, gen, DType::bf16);
  for (int64_t slots : {3, 4}) {
    Tensor packed = uniform({B, N, slots, H, 16}, -1.5, 1.5, gen, DType::bf16);
    const std::vector<int64_t> used =
        slots == 3 ? std::vector<int64_t>{0, 1, 2} : std::vector<int64_t>{0, 1, 3};
    // The gradient of `packed` through unbind (views) or through contiguous copies.
    auto gradient = [&](bool views) {
      Tensor leaf = packed.detach().requires_grad_(true);
      std::vector<Tensor> heads = unbind(permute(leaf, {2, 0, 3, 1, 4}), 0);
      std::vector<Tensor> qkv;
      for (int64_t i : used) qkv.push_back(views ? heads[size_t(i)] : contiguous(heads[size_t(i)]));
      scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], prefix).backward(g);
      return leaf.grad();
    };
    EXPECT_TRUE(same_bits(gradient(true), gradient(false))) << slots << " slots";
  }
}

// Child mode of the next test: a hash of the outputs and gradients of the widest case.
TEST(AttentionDpbf16, DISABLED_PrintHashForThreadCheck) {
  if (!kernel_runs_here()) return;
  uint64_t h = 1469598103934665603ull;
  for (const Case* c : {&kCases[4], &kCases[10]}) {  // two key tiles, head dims 16 and 64
    const Inputs in = make_inputs(*c, 5);
    const Result r = run(in, Path::dpbf16);
    std::vector<Tensor> ts = {r.out};
    ts.insert(ts.end(), r.grads.begin(), r.grads.end());
    for (const Tensor& t : ts) {
      Tensor ct = contiguous(t);
      const uint8_t* p = static_cast<const uint8_t*>(ct.raw_data());
      for (int64_t i = 0; i < ct.nbytes(); ++i) h = (h ^ p[i]) * 1099511628211ull;
    }
  }
  std::printf("DPBF16_HASH %016llx\n", (unsigned long long)h);
}

TEST(AttentionDpbf16, ThreadCountDoesNotChangeBits) {
  SKIP_WITHOUT_AVX512_BF16();
  const std::vector<std::string> hashes = testing::child_lines_by_thread_count(
      "AttentionDpbf16.DISABLED_PrintHashForThreadCheck", "DPBF16_HASH ", {1, 2, 3});
  for (size_t i = 0; i < hashes.size(); ++i) {
    ASSERT_FALSE(hashes[i].empty()) << "child " << i << " printed no hash";
  }
  EXPECT_EQ(hashes[0], hashes[1]);
  EXPECT_EQ(hashes[0], hashes[2]);
}

TEST(AttentionDpbf16, ForcingItOnOtherOperandsNamesWhy) {
  Tensor q = zeros({1, 1, 4, 8}, DType::bf16);
  try {
    detail::scaled_dot_product_attention_dpbf16(q, q, q, {}, true);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("Dh = Dv in {16, 32, 64}"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("bf16[1, 1, 4, 8]"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace hd
