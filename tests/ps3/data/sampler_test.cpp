// Image-unique batches across ranks, determinism, and resume (also onto a different rank count).
#include <gtest/gtest.h>

#include <set>

#include "ps3/data/sampler.h"

namespace hd::data {
namespace {

Sampler make(int64_t n, int64_t gb, uint64_t seed = 5) {
  std::vector<int64_t> boxes;
  std::vector<bool> global;
  for (int64_t i = 0; i < n; ++i)
    boxes.push_back(i % 5), global.push_back(i % 5 == 0 || i % 7 != 3);
  return Sampler(boxes, global, gb, seed);
}

TEST(Sampler, ImageUniqueAndDisjointAcrossRanks) {
  Sampler s = make(997, 12);  // 83 global batches per epoch
  for (int world = 1; world <= 4; ++world) {
    if (12 % world) continue;
    for (int64_t epoch = 0; epoch < 4; ++epoch) {
      std::set<int64_t> epoch_seen;
      for (int64_t b = 0; b < s.batches_per_epoch(); ++b) {
        std::set<int64_t> in_batch;
        size_t total = 0;
        for (int r = 0; r < world; ++r)
          for (const SampleSpec& x : s.batch(epoch, b, r, world)) {
            in_batch.insert(x.image), ++total;
            EXPECT_TRUE(epoch_seen.insert(x.image).second) << "image twice in an epoch";
          }
        EXPECT_EQ(total, 12u);
        EXPECT_EQ(in_batch.size(), 12u)
            << "world " << world << " epoch " << epoch << " batch " << b;
      }
    }
  }
  // 3 ranks need a divisible global batch.
  Sampler s3 = make(97, 9);
  for (int64_t b = 0; b < s3.batches_per_epoch(); ++b) {
    std::set<int64_t> ids;
    for (int r = 0; r < 3; ++r)
      for (const auto& x : s3.batch(1, b, r, 3)) ids.insert(x.image);
    EXPECT_EQ(ids.size(), 9u);
  }
}

TEST(Sampler, GlobalOrderIndependentOfWorldSize) {
  Sampler s = make(50, 12);
  for (int64_t b = 0; b < s.batches_per_epoch(); ++b) {
    std::vector<int64_t> one, four;
    for (const auto& x : s.batch(2, b, 0, 1)) one.push_back(x.image);
    for (int r = 0; r < 4; ++r)
      for (const auto& x : s.batch(2, b, r, 4)) four.push_back(x.image);
    EXPECT_EQ(one, four);
  }
}

TEST(Sampler, DeterministicAndEpochsDiffer) {
  Sampler a = make(64, 8), b = make(64, 8), c = make(64, 8, 6);
  EXPECT_EQ(a.permutation(3), b.permutation(3));
  std::vector<int64_t> e3 = a.permutation(3);  // a copy: the reference is to a one-epoch cache
  EXPECT_NE(e3, a.permutation(4));
  EXPECT_NE(a.permutation(3), c.permutation(3));
}

TEST(Sampler, GlobalCaptionProbabilityAndChoices) {
  std::vector<int64_t> boxes(4000, 3);
  std::vector<bool> global(4000, true);
  Sampler s(boxes, global, 8, 1);
  int64_t g = 0;
  for (int64_t i = 0; i < 4000; ++i) {
    SampleSpec x = s.spec(i, 0);
    g += x.is_global;
    if (!x.is_global) {
      EXPECT_TRUE(x.box >= 0 && x.box < 3);
    }
  }
  EXPECT_NEAR(double(g) / 4000, 0.25, 0.03);
  // Only one kind present: it is always used.
  Sampler only(std::vector<int64_t>{0, 2}, std::vector<bool>{true, false}, 1, 1);
  for (int64_t e = 0; e < 20; ++e) {
    EXPECT_TRUE(only.spec(0, e).is_global);
    EXPECT_FALSE(only.spec(1, e).is_global);
  }
}

std::vector<int64_t> flatten(Sampler& s, int world, int64_t steps) {
  std::vector<int64_t> out;
  for (int64_t i = 0; i < steps; ++i) {
    // Every rank computes its share from the same state; advance once per global batch.
    Sampler probe = s;
    for (int r = 0; r < world; ++r) {
      Sampler rs = probe;
      for (const auto& x : rs.next(r, world)) out.push_back(x.image * 10 + x.box + 1);
    }
    s.next(0, world);
  }
  return out;
}

TEST(Sampler, ResumeEqualsUninterruptedAlsoOnOtherRankCount) {
  Sampler full = make(40, 12);  // 3 batches per epoch: steps cross epochs
  std::vector<int64_t> expect = flatten(full, 4, 10);
  for (int before : {1, 2, 3, 4})
    for (int after : {1, 2, 3, 4}) {
      Sampler first = make(40, 12);
      std::vector<int64_t> got = flatten(first, before, 4);
      SamplerState saved = first.state();
      Sampler resumed = make(40, 12);
      resumed.load_state(saved);
      auto rest = flatten(resumed, after, 6);
      got.insert(got.end(), rest.begin(), rest.end());
      EXPECT_EQ(got, expect) << before << " -> " << after << " ranks";
    }
  EXPECT_THROW(make(40, 12, 9).load_state(full.state()), std::exception);
}

TEST(Sampler, RejectsImpossibleConfigs) {
  EXPECT_THROW(make(5, 8), std::exception);
  Sampler s = make(20, 8);
  EXPECT_THROW(s.batch(0, 0, 0, 3), std::exception);
}

}  // namespace
}  // namespace hd::data
