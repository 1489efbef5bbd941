// The CPU attention on bf16 tensors, both ways its kernel can take them (ops/cpu/attention.h):
// read in place by bf16 tile products (oneDNN's on CPUs with bf16 arithmetic, widened per tile
// elsewhere) or widened to f32 copies up front. Both are held to the f64 kernel on the same
// (bf16) values; where the tile products are widened for OpenBLAS the two ways multiply the
// same f32 numbers in the same order and must agree bit for bit.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "autograd/allocator.h"
#include "autograd/node.h"
#include "autograd/random.h"
#include "ops/attention.h"
#include "ops/cpu/onednn_matmul.h"
#include "ops/elementwise.h"
#include "ops/factory.h"
#include "ops/reduce.h"
#include "ops/shape.h"
#include "tests/testing/bf16_attention_inputs.h"
#include "tests/testing/fixtures.h"

namespace hd {
namespace {

using testing::expect_close;

using Case = testing::Bf16AttentionCase;
using Inputs = testing::Bf16AttentionInputs;

const Case kCases[] = {
    {"plain", 2, 2, 37, 41, 0, 16, false, false},
    {"prefix", 1, 3, 29, 29, 11, 8, false, false},
    {"mask_causal", 2, 1, 33, 33, 0, 8, true, true},
    {"prefix_mask_causal", 1, 2, 21, 21, 9, 16, true, true},
};

const std::pair<int64_t, int64_t> kTiles[] = {{5, 7}, {64, 256}};

Inputs make_inputs(const Case& c, uint64_t seed) {
  return testing::make_bf16_attention_inputs(c, seed, "attention_bf16_test");
}

struct Result {
  Tensor out;                 // in the leaves' dtype
  std::vector<Tensor> grads;  // one per leaf
};

// Output and input gradients. in_tiles < 0: the f64 kernel on the leaves' values.
Result run(const Inputs& in, int in_tiles, int64_t tq, int64_t tk) {
  std::vector<Tensor> x;
  for (const Tensor& l : in.leaves) {
    x.push_back(in_tiles < 0 ? to(l.detach(), DType::f64).requires_grad_(true) : l);
  }
  AttentionOptions o = in.o;
  if (x.size() == 5) {
    o.prefix_k = x[3];
    o.prefix_v = x[4];
  }
  Tensor out =
      in_tiles < 0
          ? detail::scaled_dot_product_attention_tiled(x[0], x[1], x[2], o, tq, tk)
          : detail::scaled_dot_product_attention_bf16(x[0], x[1], x[2], o, in_tiles > 0, tq, tk);
  sum(mul(to(out, DType::f32), to(in.weight, DType::f32))).backward();
  Result r{out.detach(), {}};
  for (Tensor& t : x) {
    r.grads.push_back(t.grad());
    t.zero_grad();
  }
  return r;
}

bool same_bits(const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape() || a.dtype() != b.dtype()) return false;
  Tensor ca = contiguous(a), cb = contiguous(b);
  return std::memcmp(ca.raw_data(), cb.raw_data(), ca.nbytes()) == 0;
}

bool tiles_on_onednn() {
  return cpu::onednn::capability().bf16_matmul;
}

TEST(AttentionBf16, BothWaysMatchTheF64KernelOnTheSameValues) {
  std::printf("bf16 tile products: %s\n", tiles_on_onednn() ? "oneDNN" : "widened for OpenBLAS");
  uint64_t seed = 1;
  for (const Case& c : kCases) {
    Inputs in = make_inputs(c, ++seed);
    for (auto [tq, tk] : kTiles) {
      const Result want = run(in, -1, tq, tk);
      for (int in_tiles : {0, 1}) {
        const Result got = run(in, in_tiles, tq, tk);
        const std::string what = std::string(c.name) + (in_tiles ? " in tiles" : " up front") +
                                 " tiles " + std::to_string(tq) + "x" + std::to_string(tk);
        ASSERT_EQ(got.out.dtype(), DType::bf16) << what;
        // Outputs in [-1.5, 1.5], rounded to bf16 (2^-8 relative) at the end, and on oneDNN
        // after P is rounded to bf16 too.
        expect_close(got.out, want.out, 2e-2, 2e-2, what + " out");
        for (size_t i = 0; i < got.grads.size(); ++i) {
          ASSERT_TRUE(got.grads[i].defined()) << what << " input " << i;
          ASSERT_EQ(got.grads[i].dtype(), DType::bf16) << what << " input " << i;
          expect_close(got.grads[i], want.grads[i], 3e-2, 3e-2,
                       what + " grad of input " + std::to_string(i));
        }
      }
    }
  }
}

TEST(AttentionBf16, InTilesEqualsUpFrontWhereTilesAreWidened) {
  if (tiles_on_onednn()) {
    GTEST_SKIP() << "this CPU multiplies bf16 tiles on oneDNN (rounding P), so the two ways "
                    "differ within bf16 tolerance (checked by the test above); the bit-for-bit "
                    "case runs in this test's .without_onednn_bf16 CTest entry";
  }
  uint64_t seed = 20;
  for (const Case& c : kCases) {
    Inputs in = make_inputs(c, ++seed);
    for (auto [tq, tk] : kTiles) {
      const Result tiles = run(in, 1, tq, tk), copies = run(in, 0, tq, tk);
      const std::string what =
          std::string(c.name) + " tiles " + std::to_string(tq) + "x" + std::to_string(tk);
      EXPECT_TRUE(same_bits(tiles.out, copies.out)) << what << " out";
      for (size_t i = 0; i < tiles.grads.size(); ++i) {
        EXPECT_TRUE(same_bits(tiles.grads[i], copies.grads[i])) << what << " grad " << i;
      }
    }
  }
}

// The point of reading bf16 in place: no f32 copies of q, k and v. At a ViT block's size the
// forward's transient peak drops by those copies (3 x 4.5 MB here), whichever products run.
TEST(AttentionBf16, InTilesMakesNoF32CopiesOfTheOperands) {
  const int64_t B = 8, N = 729, H = 3, Dh = 64;
  Generator gen(5, "attention_bf16_memory");
  Tensor qkv = uniform({B, N, 3, H, Dh}, -1, 1, gen, DType::bf16);
  auto part = [&](int64_t i) { return permute(select(qkv, 2, i), {0, 2, 1, 3}); };
  Allocator& alloc = allocator_for(Device::cpu());
  NoGradGuard no_grad;
  auto peak_extra = [&](bool in_tiles) {
    const int64_t before = alloc.stats().current_bytes;
    alloc.reset_peak();
    Tensor out = detail::scaled_dot_product_attention_bf16(part(0), part(1), part(2), {}, in_tiles);
    return alloc.stats().peak_bytes - before;
  };
  const int64_t copies = 3 * B * N * H * Dh * 4;  // f32 q, k, v
  const int64_t up_front = peak_extra(false), in_tiles = peak_extra(true);
  std::printf("forward peak extra: up front %.1f MB, in tiles %.1f MB (f32 copies %.1f MB)\n",
              up_front / 1e6, in_tiles / 1e6, copies / 1e6);
  EXPECT_LE(in_tiles, up_front - copies + (1 << 20));
}

}  // namespace
}  // namespace hd
