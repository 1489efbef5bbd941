#include "autograd/random.h"

#include <gtest/gtest.h>

#include <cmath>

#include "ops/elementwise.h"
#include "ops/factory.h"
#include "ops/reduce.h"
#include "ops/shape.h"

namespace hd {
namespace {

TEST(Philox, KnownAnswerVectors) {
  // Random123's kat_vectors for philox4x32_10.
  auto zero = philox4x32({0, 0, 0, 0}, {0, 0});
  EXPECT_EQ(zero, (std::array<uint32_t, 4>{0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}));
  auto ones = philox4x32({0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu},
                         {0xffffffffu, 0xffffffffu});
  EXPECT_EQ(ones, (std::array<uint32_t, 4>{0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}));
  auto pi = philox4x32({0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u},
                       {0xa4093822u, 0x299f31d0u});
  EXPECT_EQ(pi, (std::array<uint32_t, 4>{0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}));
}

TEST(Random, SameKeySameValuesDifferentStreamDifferentValues) {
  Generator a(42, "blocks.0.attn.qkv.weight"), b(42, "blocks.0.attn.qkv.weight"),
      c(42, "blocks.1.attn.qkv.weight");
  Tensor ta = normal({1000}, 0, 1, a), tb = normal({1000}, 0, 1, b), tc = normal({1000}, 0, 1, c);
  EXPECT_EQ(ta.to_vector<float>(), tb.to_vector<float>());
  EXPECT_NE(ta.to_vector<float>(), tc.to_vector<float>());
  // Successive draws from one generator do not overlap.
  Tensor t2 = normal({1000}, 0, 1, a);
  EXPECT_NE(ta.to_vector<float>(), t2.to_vector<float>());
  EXPECT_EQ(a.offset, 1000u);  // 2 values per block, 2 draws of 1000
}

TEST(Random, ElementDependsOnlyOnItsIndex) {
  // The first 10 elements of a 10-element draw equal the first 10 of a 100000-element draw
  // (which is split over threads): values do not depend on how the work is divided.
  Generator g1(7, 3), g2(7, 3);
  Tensor small = uniform({10}, -1, 1, g1), big = uniform({100000}, -1, 1, g2);
  EXPECT_EQ(small.to_vector<float>(), narrow(big, 0, 0, 10).to_vector<float>());
}

TEST(Random, MomentsAreRight) {
  Generator g(1, 0);
  Tensor n = normal({200000}, 2.0, 3.0, g, DType::f64);
  double m = mean(n).item<double>();
  double var = mean(square(sub(n, m))).item<double>();
  EXPECT_NEAR(m, 2.0, 0.03);
  EXPECT_NEAR(std::sqrt(var), 3.0, 0.03);
  Tensor u = uniform({200000}, -2.0, 4.0, g);
  EXPECT_NEAR(mean(u).item<float>(), 1.0, 0.02);
  EXPECT_GE(amax(u).item<float>(), 3.99f);
  EXPECT_LT(amax(u).item<float>(), 4.0f);
}

}  // namespace
}  // namespace hd
