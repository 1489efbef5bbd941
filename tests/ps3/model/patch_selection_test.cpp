// Budget split, per-step top-k with exclusion, carry-over and GT forcing (patch_selection.h),
// and the configuration checks (config.cpp).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <set>

#include "ops/factory.h"
#include "ops/shape.h"
#include "ps3/config.h"
#include "ps3/patch_selection.h"
#include "ps3/vision_model.h"
#include "tests/testing/errors.h"

namespace hd::ps3 {
namespace {

using hd::testing::expect_error;

TEST(SplitBudget, PaperNumbers) {
  EXPECT_EQ(split_budget({756, 1512, 3780}, 2560), (std::vector<int64_t>{85, 341, 2134}));
  EXPECT_EQ(split_budget({756, 1512}, 2560), (std::vector<int64_t>{512, 2048}));
  EXPECT_EQ(split_budget({756, 1512, 3780}, 256), (std::vector<int64_t>{8, 34, 214}));
  EXPECT_EQ(split_budget({756}, 100), (std::vector<int64_t>{100}));
  EXPECT_TRUE(split_budget({}, 10).empty());
  expect_error([] { split_budget({756}, -1); }, "negative");
}

// Probabilities as a [B, g, g] tensor from a flat list per instance.
Tensor map_of(const std::vector<float>& v, int64_t B, int64_t g) {
  return from_vector<float>(v, {B, g, g});
}

TEST(PatchSelector, TopKWithTieRuleAndSortedOutput) {
  PatchSelector sel({2}, 2);
  // Instance 0: 0.9 at 3 and 1, tie broken by lower index; instance 1: all equal -> first k.
  Tensor p = map_of({0.1f, 0.9f, 0.3f, 0.9f, 0.5f, 0.5f, 0.5f, 0.5f}, 2, 2);
  StepSelection s = sel.select({p}, Tensor(), {3});
  EXPECT_EQ(s.counts, (std::vector<int64_t>{3}));
  EXPECT_EQ(s.indices[0][0], (std::vector<int64_t>{1, 2, 3}));  // {0.9@1, 0.9@3, 0.3@2}, sorted
  EXPECT_EQ(s.indices[0][1], (std::vector<int64_t>{0, 1, 2}));
  // Second step: only the remaining position, the rest of the budget is dropped (last scale).
  StepSelection s2 = sel.select({p}, Tensor(), {3});
  EXPECT_EQ(s2.counts, (std::vector<int64_t>{1}));
  EXPECT_EQ(s2.indices[0][0], (std::vector<int64_t>{0}));
  EXPECT_EQ(s2.indices[0][1], (std::vector<int64_t>{3}));
  EXPECT_EQ(sel.select({p}, Tensor(), {3}).total(), 0);
  std::vector<Tensor> maps = sel.selection_maps(DType::f32);
  EXPECT_EQ(maps[0].to_vector<float>(), std::vector<float>(8, 1.f));
}

TEST(PatchSelector, CarryOverWhenAScaleRunsOut) {
  // Grids 2 (4 cells) and 4 (16 cells), budget {3, 5} per step.
  PatchSelector sel({2, 4}, 1);
  Generator gen(7, "probs");
  Tensor p0 = uniform({1, 2, 2}, 0, 1, gen), p1 = uniform({1, 4, 4}, 0, 1, gen);
  std::vector<std::vector<int64_t>> counts;
  std::set<int64_t> seen0, seen1;
  for (int step = 0; step < 5; ++step) {
    StepSelection s = sel.select({p0, p1}, Tensor(), {3, 5});
    counts.push_back(s.counts);
    for (int64_t i : s.indices[0][0]) EXPECT_TRUE(seen0.insert(i).second) << "repeat " << i;
    for (int64_t i : s.indices[1][0]) EXPECT_TRUE(seen1.insert(i).second) << "repeat " << i;
  }
  // Step 2: scale 0 has 1 left, its deficit of 2 goes to scale 1 (7); step 3: 3 + 6 wanted,
  // 4 left at scale 1; then nothing.
  EXPECT_EQ(counts, (std::vector<std::vector<int64_t>>{{3, 5}, {1, 7}, {0, 4}, {0, 0}, {0, 0}}));
  EXPECT_EQ(seen0.size(), 4u);
  EXPECT_EQ(seen1.size(), 16u);
}

TEST(PatchSelector, ExclusionPicksTheNextBestEachStep) {
  PatchSelector sel({3}, 1);
  std::vector<float> v = {0.2f, 0.8f, 0.5f, 0.9f, 0.1f, 0.7f, 0.3f, 0.6f, 0.4f};
  Tensor p = map_of(v, 1, 3);
  EXPECT_EQ(sel.select({p}, Tensor(), {2}).indices[0][0], (std::vector<int64_t>{1, 3}));
  EXPECT_EQ(sel.select({p}, Tensor(), {2}).indices[0][0], (std::vector<int64_t>{5, 7}));
  EXPECT_EQ(sel.select({p}, Tensor(), {2}).indices[0][0], (std::vector<int64_t>{2, 8}));
}

TEST(PatchSelector, GtForcingTakesEveryGtPatchFirst) {
  // Grids 2 and 4; GT on grid-0 cell (1, 0) -> cells {8, 9, 12, 13} of the 4 x 4 grid. The GT
  // cells get the lowest probabilities, so only forcing can select them.
  PatchSelector sel({2, 4}, 1);
  Tensor p0 = map_of({0.9f, 0.8f, 0.01f, 0.7f}, 1, 2);
  std::vector<float> v1(16);
  for (int i = 0; i < 16; ++i) v1[size_t(i)] = 0.5f + 0.01f * float(i);
  for (int i : {8, 9, 12, 13}) v1[size_t(i)] = 0.001f;
  Tensor p1 = map_of(v1, 1, 4);
  Tensor gt = map_of({0, 0, 1, 0}, 1, 2);
  StepSelection s = sel.select({p0, p1}, gt, {1, 6});
  EXPECT_EQ(s.indices[0][0], (std::vector<int64_t>{2}));
  // 4 forced, then the two best of the rest: 15 (0.65) and 14 (0.64).
  EXPECT_EQ(s.indices[1][0], (std::vector<int64_t>{8, 9, 12, 13, 14, 15}));
  // Without forcing the same maps give the top probabilities.
  PatchSelector plain({2, 4}, 1);
  StepSelection q = plain.select({p0, p1}, Tensor(), {1, 6});
  EXPECT_EQ(q.indices[0][0], (std::vector<int64_t>{0}));
  std::vector<int64_t> expect = {6, 7, 10, 11, 14, 15};
  EXPECT_EQ(q.indices[1][0], expect);
}

// The rule spelled out the slow way: every unpicked cell sorted by (value descending, NaN
// first; index ascending), the first k taken, returned in ascending order.
std::vector<int64_t> brute_force_top_k(const std::vector<double>& v, const std::set<int64_t>& taken,
                                       int64_t k) {
  std::vector<int64_t> order;
  for (int64_t i = 0; i < int64_t(v.size()); ++i) {
    if (!taken.count(i)) order.push_back(i);
  }
  auto key = [&](int64_t i) { return std::isnan(v[size_t(i)]) ? INFINITY : v[size_t(i)]; };
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return key(a) > key(b); });
  order.resize(size_t(std::min<int64_t>(k, int64_t(order.size()))));
  std::sort(order.begin(), order.end());
  return order;
}

TEST(PatchSelector, LargeMapsWithTiesAndNaNMatchTheRuleSpelledOut) {
  // A 270 x 270 map (the demo's 3780 scale) of 64 distinct values, so ties cross the k-th
  // place, with NaN, negative values and -0.0 beside +0.0 (the level that the fourth step's
  // k-th place falls in: they must tie); bf16 and f64 maps; five steps.
  const int64_t g = 270, cells = g * g, B = 2;
  Generator gen(11, "ties");
  std::vector<double> u = uniform({B * cells}, 0, 1, gen).to_vector<double>();
  std::vector<double> v(u.size());
  for (size_t i = 0; i < v.size(); ++i) {
    const double x = std::floor(u[i] * 64) / 32 - 54.0 / 32;  // level 54 is 0.0
    v[i] = i % 997 == 3 ? NAN : i % 389 == 5 ? -0.0 : x;
  }
  // A budget per step that puts the fourth step's k-th place inside the zero level (checked
  // below): the cells above zero (and NaN) plus half the zeros, over four steps.
  int64_t above = 0, zeros_at = 0;
  for (int64_t i = 0; i < cells; ++i) {
    above += std::isnan(v[size_t(i)]) || v[size_t(i)] > 0;
    zeros_at += v[size_t(i)] == 0;
  }
  const int64_t k = (above + zeros_at / 2) / 4;
  for (DType dt : {DType::bf16, DType::f64}) {
    Tensor p = to(from_vector<double>(v, {B, g, g}), dt);
    const std::vector<double> seen = to(p, DType::f64).to_vector<double>();
    PatchSelector sel({g}, B);
    std::vector<std::set<int64_t>> taken(B);
    for (int step = 0; step < 5; ++step) {
      StepSelection s = sel.select({p}, Tensor(), {k});
      ASSERT_EQ(s.counts, (std::vector<int64_t>{k}));
      for (int64_t b = 0; b < B; ++b) {
        std::vector<double> vb(seen.begin() + b * cells, seen.begin() + (b + 1) * cells);
        EXPECT_EQ(s.indices[0][size_t(b)], brute_force_top_k(vb, taken[size_t(b)], k))
            << dtype_name(dt) << " step " << step << " instance " << b;
        taken[size_t(b)].insert(s.indices[0][size_t(b)].begin(), s.indices[0][size_t(b)].end());
        if (step == 3) {  // the premise: -0.0 and +0.0 cells on both sides of the k-th place
          int64_t taken_neg = 0, left_pos = 0;
          for (int64_t i = 0; i < cells; ++i) {
            const double x = vb[size_t(i)];
            if (x != 0) continue;
            if (std::signbit(x) && taken[size_t(b)].count(i)) ++taken_neg;
            if (!std::signbit(x) && !taken[size_t(b)].count(i)) ++left_pos;
          }
          EXPECT_GT(taken_neg, 0) << "instance " << b;
          EXPECT_GT(left_pos, 0) << "instance " << b;
        }
      }
    }
  }
}

TEST(PatchSelector, BadInputsNameTheMap) {
  PatchSelector sel({2, 4}, 1);
  expect_error(
      [&] {
        sel.select({zeros({1, 2, 2}), zeros({1, 3, 3})}, Tensor(), {1, 1});
      },
      "probs[1]");
  expect_error(
      [&] {
        sel.select({zeros({1, 2, 2}), zeros({1, 4, 4})}, zeros({1, 4, 4}), {1, 1});
      },
      "gt_maps[0]");
}

TEST(PS3Config, ValidateNamesTheField) {
  PS3Config c = PS3Config::demo(100);
  c.validate();
  EXPECT_EQ(split_budget(c.vision.scales, c.vision.max_select), (std::vector<int64_t>{8, 34, 214}));
  PS3Config bad = c;
  bad.vision.select_layers = {0, 7};
  expect_error([&] { bad.validate(); }, "vision.select_layers: 7 is not below vision.depth = 4");
  bad = c;
  bad.vision.scales = {756, 700};
  expect_error([&] { bad.validate(); }, "vision.scales[1]");
  bad = c;
  bad.vision.heads = 5;
  expect_error([&] { bad.validate(); }, "vision.heads");
  bad = c;
  bad.text.width = 32;
  expect_error([&] { bad.validate(); }, "text.width");
  bad = c;
  bad.vision.selection_res = 1500;
  expect_error([&] { bad.validate(); }, "vision.selection_res");
  PS3Config p4 = PS3Config::paper_4k();
  p4.validate();
  EXPECT_EQ(p4.vision.width, 1152);
  EXPECT_EQ(p4.vision.mlp_hidden, 4304);
  EXPECT_EQ(p4.text.vocab, 32000);
  EXPECT_EQ(p4.text.context, 64);
  EXPECT_EQ(PS3Config::paper_1p5k().vision.scales, (std::vector<int64_t>{756, 1512}));
}

}  // namespace
}  // namespace hd::ps3
