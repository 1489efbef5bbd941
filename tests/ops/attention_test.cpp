#include "ops/attention.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "autograd/allocator.h"
#include "autograd/node.h"
#include "ops/cpu/attention.h"
#include "ops/cpu/onednn_matmul.h"
#include "ops/elementwise.h"
#include "ops/factory.h"
#include "ops/linalg.h"
#include "ops/reduce.h"
#include "ops/shape.h"
#include "tests/testing/child_process.h"
#include "tests/testing/fixtures.h"
#include "tests/testing/gradcheck.h"

namespace hd {
namespace {

using testing::check_gradients;
using testing::expect_close;
using testing::max_abs_diff;
using testing::random_leaf;

// Reference: explicit softmax(QK^T * scale, masked) V with existing ops. Masked scores become a
// large finite negative and P is multiplied by the visibility, so an all-masked row gives zeros
// and finite gradients instead of NaN (matching the op's contract).
Tensor visibility(int64_t B, int64_t Nq, int64_t Np, int64_t Nk, const AttentionOptions& o) {
  std::vector<bool> vis(size_t(B * Nq * (Np + Nk)));
  std::vector<uint8_t> mask = o.key_mask.defined() ? o.key_mask.to_vector<uint8_t>()
                                                   : std::vector<uint8_t>(size_t(B * (Np + Nk)), 1);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < Nq; ++i)
      for (int64_t j = 0; j < Np + Nk; ++j) {
        bool causal_ok = !o.causal || j < Np || j - Np <= i;
        vis[size_t((b * Nq + i) * (Np + Nk) + j)] = causal_ok && mask[size_t(b * (Np + Nk) + j)];
      }
  return from_vector(vis, {B, 1, Nq, Np + Nk});
}

Tensor reference_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                           const AttentionOptions& o) {
  Tensor K = o.prefix_k.defined() ? cat({o.prefix_k, k}, 2) : k;
  Tensor V = o.prefix_v.defined() ? cat({o.prefix_v, v}, 2) : v;
  double scale = o.scale != 0 ? o.scale : 1.0 / std::sqrt(double(q.size(3)));
  Tensor s = mul(matmul(q, transpose(K, -1, -2)), scale);
  int64_t Np = o.prefix_k.defined() ? o.prefix_k.size(2) : 0;
  Tensor vis = visibility(q.size(0), q.size(2), Np, k.size(2), o);
  s = where(vis, s, -1e30);
  Tensor p = exp(sub(s, logsumexp(s, -1, true)));
  p = mul(p, to(vis, q.dtype()));
  return matmul(p, V);
}

struct Case {
  const char* name;
  int64_t B, H, Nq, Nk, Np, Dh, Dv;
  bool mask, causal;
  double scale;
};

const Case kCases[] = {
    {"plain", 2, 2, 5, 7, 0, 4, 4, false, false, 0},
    {"dv_differs_scale", 1, 3, 6, 4, 0, 5, 3, false, false, 0.7},
    {"prefix", 2, 2, 5, 7, 3, 4, 3, false, false, 0},
    {"mask", 2, 2, 5, 7, 0, 4, 4, true, false, 0},
    {"causal", 2, 2, 7, 7, 0, 4, 4, false, true, 0},
    {"causal_nq_ne_nk", 1, 2, 6, 9, 0, 4, 4, false, true, 0},
    {"prefix_mask_causal", 2, 2, 7, 7, 4, 4, 3, true, true, 0},
};

struct Inputs {
  Tensor q, k, v;
  AttentionOptions o;
};

// f64 leaves for a case; the mask hides a few keys in each row (never all: see AllMaskedRow).
Inputs make_inputs(const Case& c, uint64_t seed, DType dt = DType::f64) {
  auto leaf = [&](const Shape& s, uint64_t sd) {
    Tensor t = random_leaf(s, seed * 100 + sd, -1.5, 1.5);
    if (dt != DType::f64) {
      t = to(t.detach(), dt);
      t.requires_grad_(true);
    }
    return t;
  };
  Inputs in;
  in.q = leaf({c.B, c.H, c.Nq, c.Dh}, 1);
  in.k = leaf({c.B, c.H, c.Nk, c.Dh}, 2);
  in.v = leaf({c.B, c.H, c.Nk, c.Dv}, 3);
  if (c.Np > 0) {
    in.o.prefix_k = leaf({c.B, c.H, c.Np, c.Dh}, 4);
    in.o.prefix_v = leaf({c.B, c.H, c.Np, c.Dv}, 5);
  }
  if (c.mask) {
    std::vector<bool> m(size_t(c.B * (c.Np + c.Nk)));
    for (size_t i = 0; i < m.size(); ++i) m[i] = (i * 7 + seed) % 5 != 0;
    m[size_t(c.Np)] = true;  // own key 0 stays visible so causal rows are never empty
    in.o.key_mask = from_vector(m, {c.B, c.Np + c.Nk});
  }
  in.o.causal = c.causal;
  in.o.scale = c.scale;
  return in;
}

// The differentiable inputs of a case: q, k, v and the prefix k/v when there is one.
std::vector<Tensor> leaves_of(const Inputs& in) {
  std::vector<Tensor> leaves = {in.q, in.k, in.v};
  if (in.o.prefix_k.defined()) {
    leaves.push_back(in.o.prefix_k);
    leaves.push_back(in.o.prefix_v);
  }
  return leaves;
}

// Tile sizes to try: tiny (partial tiles, tiles split at the prefix boundary) and default.
const std::pair<int64_t, int64_t> kTiles[] = {{2, 3}, {3, 2}, {64, 256}};

TEST(Attention, ForwardMatchesCompositeF32) {
  for (const Case& c : kCases) {
    Inputs in = make_inputs(c, 7, DType::f32);
    Tensor ref = reference_attention(in.q, in.k, in.v, in.o);
    for (auto [tq, tk] : kTiles) {
      Tensor out = detail::scaled_dot_product_attention_tiled(in.q, in.k, in.v, in.o, tq, tk);
      expect_close(out, ref, 2e-6, 2e-5,
                   std::string(c.name) + " tiles " + std::to_string(tq) + "x" + std::to_string(tk));
    }
  }
}

// f64 gradients of the flash kernel (both backward schemes) against autograd through the
// composite reference: tight tolerance, every combination of features.
TEST(Attention, GradientsMatchCompositeF64) {
  for (const Case& c : kCases) {
    Inputs in = make_inputs(c, 11);
    std::vector<Tensor> leaves = leaves_of(in);
    Tensor w = random_leaf({c.B, c.H, c.Nq, c.Dv}, 99).detach();
    sum(mul(reference_attention(in.q, in.k, in.v, in.o), w)).backward();
    std::vector<Tensor> ref;
    for (Tensor& l : leaves) {
      ref.push_back(l.grad());
      l.zero_grad();
    }
    for (int split : {0, 1}) {
      for (auto [tq, tk] : kTiles) {
        Tensor out =
            detail::scaled_dot_product_attention_tiled(in.q, in.k, in.v, in.o, tq, tk, split);
        sum(mul(out, w)).backward();
        for (size_t i = 0; i < leaves.size(); ++i) {
          ASSERT_TRUE(leaves[i].grad().defined()) << c.name << " input " << i;
          EXPECT_LT(max_abs_diff(leaves[i].grad(), ref[i]), 1e-12)
              << c.name << " input " << i << " split " << split << " tiles " << tq << "x" << tk;
          leaves[i].zero_grad();
        }
      }
    }
  }
}

// Finite differences for every case, with tiny tiles so each path (partial tiles, causal
// skipping, prefix boundary) is differentiated.
TEST(Attention, GradcheckAllCases) {
  for (const Case& c : kCases) {
    SCOPED_TRACE(c.name);
    Inputs in = make_inputs(c, 3);
    std::vector<Tensor> leaves = leaves_of(in);
    AttentionOptions o = in.o;
    for (int split : {0, 1}) {
      EXPECT_TRUE(check_gradients(
          [&](const std::vector<Tensor>& x) {
            AttentionOptions oo = o;
            if (x.size() > 3) {
              oo.prefix_k = x[3];
              oo.prefix_v = x[4];
            }
            return detail::scaled_dot_product_attention_tiled(x[0], x[1], x[2], oo, 2, 3, split);
          },
          leaves));
    }
  }
}

// q/k/v as permuted views of one [B, N, 3, H, Dh] projection (unit last stride, no copy), and
// a k whose last dim is strided (copied inside).
TEST(Attention, GradcheckNonContiguous) {
  const int64_t B = 2, N = 5, H = 2, Dh = 4;
  Tensor qkv = random_leaf({B, N, 3, H, Dh}, 21);
  Tensor kt = random_leaf({B, H, Dh, N}, 22);  // k stored transposed
  AttentionOptions o;
  o.causal = true;
  EXPECT_TRUE(check_gradients(
      [&](const std::vector<Tensor>& x) {
        Tensor q = permute(select(x[0], 2, 0), {0, 2, 1, 3});
        Tensor v = permute(select(x[0], 2, 2), {0, 2, 1, 3});
        Tensor k = add(transpose(x[1], 2, 3), permute(select(x[0], 2, 1), {0, 2, 1, 3}));
        return detail::scaled_dot_product_attention_tiled(q, transpose(x[1], 2, 3), v, o, 2, 3) +
               scaled_dot_product_attention(q, k, v);
      },
      {qkv, kt}));
}

// A row whose keys are all masked (prefix masked, causal hides the rest) gives exact zeros, no
// NaN, and zero gradient to its query; the other rows still match the reference.
TEST(Attention, AllMaskedRowIsZero) {
  Case c{"all_masked", 2, 2, 4, 4, 3, 4, 4, false, true, 0};
  Inputs in = make_inputs(c, 5);
  std::vector<bool> m = {false, false, false, false, true, true, true,  // b0: q0 sees nothing
                         true,  false, true,  true,  true, true, true};
  in.o.key_mask = from_vector(m, {2, 7});
  Tensor out = detail::scaled_dot_product_attention_tiled(in.q, in.k, in.v, in.o, 2, 2);
  Tensor row = select(select(out, 0, 0), 1, 0);  // [H, Dv]
  for (double x : row.to_vector<double>()) EXPECT_EQ(x, 0.0);
  sum(out).backward();
  for (const Tensor& g : {in.q.grad(), in.k.grad(), in.v.grad(), in.o.prefix_k.grad()}) {
    for (double x : g.to_vector<double>()) ASSERT_TRUE(std::isfinite(x));
  }
  for (double x : select(select(in.q.grad(), 0, 0), 1, 0).to_vector<double>()) EXPECT_EQ(x, 0.0);
  EXPECT_LT(max_abs_diff(out, reference_attention(in.q, in.k, in.v, in.o)), 1e-12);
  std::vector<Tensor> leaves = {in.q, in.k, in.v, in.o.prefix_k, in.o.prefix_v};
  AttentionOptions o = in.o;
  EXPECT_TRUE(check_gradients(
      [&](const std::vector<Tensor>& x) {
        AttentionOptions oo = o;
        oo.prefix_k = x[3];
        oo.prefix_v = x[4];
        return detail::scaled_dot_product_attention_tiled(x[0], x[1], x[2], oo, 2, 2);
      },
      leaves));
  // No keys at all: zeros too.
  Tensor q = random_leaf({1, 1, 3, 4}, 1);
  Tensor none = scaled_dot_product_attention(q, zeros({1, 1, 0, 4}, DType::f64),
                                             zeros({1, 1, 0, 2}, DType::f64));
  EXPECT_EQ(none.shape(), (Shape{1, 1, 3, 2}));
  for (double x : none.to_vector<double>()) EXPECT_EQ(x, 0.0);
}

// The two backward schemes (chosen by thread count in production) and the tile split of the
// forward must give the same bits; so must two runs.
std::vector<uint8_t> run_bits(const Case& c, int split, uint64_t seed) {
  Inputs in = make_inputs(c, seed, DType::f32);
  Tensor out = detail::scaled_dot_product_attention_tiled(in.q, in.k, in.v, in.o, 16, 32, split);
  Tensor w = to(random_leaf(out.shape(), 4).detach(), DType::f32);
  sum(mul(out, w)).backward();
  std::vector<uint8_t> bits;
  std::vector<Tensor> ts = {out};
  for (const Tensor& l : leaves_of(in)) ts.push_back(l.grad());
  for (const Tensor& t : ts) {
    Tensor cc = contiguous(t);
    const uint8_t* p = static_cast<const uint8_t*>(cc.raw_data());
    bits.insert(bits.end(), p, p + cc.nbytes());
  }
  return bits;
}

const Case kBig{"big", 1, 2, 70, 90, 40, 16, 8, true, true, 0};

TEST(Attention, BackwardSchemesAndRunsAreBitIdentical) {
  std::vector<uint8_t> fused = run_bits(kBig, 0, 1);
  EXPECT_TRUE(fused == run_bits(kBig, 1, 1));
  EXPECT_TRUE(fused == run_bits(kBig, 0, 1));
  EXPECT_TRUE(fused != run_bits(kBig, 0, 2));  // the comparison can fail
}

// Child mode for the next test: prints a hash of outputs and gradients.
// Not a test on its own: the child process of ThreadCountDoesNotChangeBits (disabled so that
// only that test runs it, with --gtest_also_run_disabled_tests).
TEST(Attention, DISABLED_PrintHashForThreadCheck) {
  std::vector<uint8_t> bits = run_bits(kBig, -1, 1);
  uint64_t h = 1469598103934665603ull;
  for (uint8_t b : bits) h = (h ^ b) * 1099511628211ull;
  std::printf("ATTN_HASH %016llx\n", (unsigned long long)h);
}

// HD_NUM_THREADS is read once, so each thread count runs in its own process (this binary).
TEST(Attention, ThreadCountDoesNotChangeBits) {
  const std::vector<std::string> hashes = testing::child_lines_by_thread_count(
      "Attention.DISABLED_PrintHashForThreadCheck", "ATTN_HASH ", {1, 2, 3});
  for (size_t i = 0; i < hashes.size(); ++i) {
    ASSERT_FALSE(hashes[i].empty()) << "child " << i << " printed no hash";
  }
  EXPECT_EQ(hashes[0], hashes[1]);
  EXPECT_EQ(hashes[0], hashes[2]);
}

TEST(Attention, ErrorsNameOpAndShapes) {
  auto expect_error = [](auto&& fn, const std::string& needle) {
    try {
      fn();
      ADD_FAILURE() << "expected an error containing " << needle;
    } catch (const Error& e) {
      std::string msg = e.what();
      EXPECT_NE(msg.find("scaled_dot_product_attention"), std::string::npos) << msg;
      EXPECT_NE(msg.find(needle), std::string::npos) << msg;
    }
  };
  Tensor q = zeros({2, 3, 5, 4}), k = zeros({2, 3, 7, 4}), v = zeros({2, 3, 7, 6});
  expect_error([&] { scaled_dot_product_attention(q, zeros({2, 2, 7, 4}), v); }, "[2, 2, 7, 4]");
  expect_error([&] { scaled_dot_product_attention(q, zeros({2, 3, 7, 5}), v); }, "[2, 3, 7, 5]");
  expect_error([&] { scaled_dot_product_attention(q, k, zeros({2, 3, 6, 6})); }, "[2, 3, 6, 6]");
  expect_error([&] { scaled_dot_product_attention(zeros({3, 5, 4}), k, v); }, "[3, 5, 4]");
  expect_error(
      [&] {
        scaled_dot_product_attention(q, k, zeros({2, 3, 7, 6}, DType::f64));
      },
      "dtype");
  AttentionOptions o;
  o.key_mask = ones({2, 8}, DType::boolean);
  expect_error([&] { scaled_dot_product_attention(q, k, v, o); }, "[2, 8]");
  o.key_mask = ones({2, 7});
  expect_error([&] { scaled_dot_product_attention(q, k, v, o); }, "bool");
  o = {};
  o.prefix_k = zeros({2, 3, 4, 5});
  o.prefix_v = zeros({2, 3, 4, 6});
  expect_error([&] { scaled_dot_product_attention(q, k, v, o); }, "[2, 3, 4, 5]");
  o.prefix_k = zeros({2, 3, 4, 4});
  o.prefix_v = zeros({2, 3, 3, 6});
  expect_error([&] { scaled_dot_product_attention(q, k, v, o); }, "[2, 3, 3, 6]");
  o.prefix_v = Tensor();
  expect_error([&] { scaled_dot_product_attention(q, k, v, o); }, "together");
}

// Permuted q/k/v views go to the kernel without copies: the forward allocates only the output,
// the logsumexp and per-task tiles (a copy of any operand would add 4 MiB).
TEST(Attention, PermutedViewsAreNotCopied) {
  const int64_t B = 1, N = 1024, H = 8, Dh = 64;
  Generator gen(3, "attn");
  Tensor qkv = uniform({B, N, 3, H, Dh}, -1, 1, gen);
  auto part = [&](int64_t i) { return permute(select(qkv, 2, i), {0, 2, 1, 3}); };
  Allocator& alloc = allocator_for(Device::cpu());
  NoGradGuard no_grad;
  int64_t before = alloc.stats().current_bytes;
  alloc.reset_peak();
  Tensor out = scaled_dot_product_attention(part(0), part(1), part(2));
  int64_t extra = alloc.stats().peak_bytes - before;
  EXPECT_LT(extra, int64_t(out.nbytes()) + (2 << 20)) << "peak extra bytes " << extra;
  EXPECT_GE(extra, int64_t(out.nbytes()));
}

// On the CPU the op returns its output heads-last ([B, N, H, D] memory behind the [B, H, N, D]
// view), so merging the heads is a view; the kernel writes the same bits in either layout, and
// reads either in backward (the output enters the row sums D = rowsum(dO * O)).
TEST(Attention, OutputIsHeadsLastAndEqualsTheContiguousLayout) {
  const int64_t B = 2, H = 3, N = 37, Dh = 8;
  for (DType dt : {DType::f64, DType::f32, DType::bf16}) {
    Generator gen(21, "attn-layout");
    auto operand = [&] { return to(uniform({B, H, N, Dh}, -1, 1, gen), dt); };
    Tensor q = operand(), k = operand(), v = operand(), g = operand();
    NoGradGuard no_grad;
    Tensor out = scaled_dot_product_attention(q, k, v);
    // (bf16 on a CPU without oneDNN bf16 products runs on f32 copies: a contiguous output.)
    const bool widened = dt == DType::bf16 && !cpu::onednn::capability().bf16_matmul;
    EXPECT_EQ(transpose(out, 1, 2).is_contiguous(), !widened) << dtype_name(dt);
    cpu::AttentionArgs a;
    a.q = q;
    a.k = k;
    a.v = v;
    a.scale = 1.0 / std::sqrt(double(Dh));
    Tensor plain = Tensor::empty({B, H, N, Dh}, dt);
    Tensor lse = Tensor::empty({B, H, N}, dt == DType::f64 ? DType::f64 : DType::f32);
    cpu::attention_forward(a, plain, lse);
    EXPECT_EQ(to(out, DType::f64).to_vector<double>(), to(plain, DType::f64).to_vector<double>())
        << dtype_name(dt);
    // Backward from each layout of the same output values: the same gradients.
    auto grads = [&](const Tensor& o) {
      Tensor dq = Tensor::empty(q.shape(), dt), dk = Tensor::empty(k.shape(), dt),
             dv = Tensor::empty(v.shape(), dt), none1, none2;
      cpu::attention_backward(a, o, lse, g, dq, dk, dv, none1, none2);
      return to(cat({dq, dk, dv}, 0), DType::f64).to_vector<double>();
    };
    EXPECT_EQ(grads(out), grads(plain)) << dtype_name(dt);
  }
}

// PS3 stage-3 scale: 2560 queries against 729 prefix + 2560 own keys, 16 heads, Dh 72. The
// score matrix would be 2560 * 3289 * 16 * 4 B = 539 MB; forward + backward must stay far below.
TEST(Attention, Ps3ScaleMemoryStaysFlat) {
  const int64_t H = 16, N = 2560, Np = 729, Dh = 72;
  Generator gen(9, "attn-ps3");
  auto leaf = [&](int64_t n) { return uniform({1, H, n, Dh}, -1, 1, gen).requires_grad_(true); };
  Tensor q = leaf(N), k = leaf(N), v = leaf(N);
  AttentionOptions o;
  o.prefix_k = leaf(Np);
  o.prefix_v = leaf(Np);
  Allocator& alloc = allocator_for(Device::cpu());
  int64_t before = alloc.stats().current_bytes;
  alloc.reset_peak();
  auto t0 = std::chrono::steady_clock::now();
  Tensor out = scaled_dot_product_attention(q, k, v, o);
  sum(out).backward();
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  int64_t extra = alloc.stats().peak_bytes - before;
  std::printf("PS3 scale fwd+bwd: %.2f s, peak extra %.1f MB (scores would be %.1f MB)\n", secs,
              extra / 1e6, double(N * (N + Np) * H * 4) / 1e6);
  EXPECT_LT(extra, 100'000'000);
  // Sanity: gradients arrived everywhere, including the prefix (the KV cache is not detached).
  EXPECT_TRUE(o.prefix_k.grad().defined() && o.prefix_v.grad().defined());
  EXPECT_GT(max_abs_diff(o.prefix_v.grad(), zeros_like(o.prefix_v)), 0.0);
}

}  // namespace
}  // namespace hd
