// The differentiable all-gather and the cross-rank sigmoid contrast, at 1 and 2 ranks.
//
// all_gather_rows: rank r holds r + 1 rows (unequal on purpose) filled with closed-form values;
// the forward must be their concatenation and the backward the reduce-scatter (sum over ranks)
// of each rank's upstream gradient, both checked against formulas. The contrast: ranks split one
// global batch (any split, unequal included); the mean over ranks of the per-rank losses must
// equal the one-process loss of the whole batch, and each rank's input gradients divided by N
// (what FSDP's averaging applies) must equal the whole-batch gradient rows it owns.
#include <gtest/gtest.h>

#include <cmath>

#include "ops/elementwise.h"
#include "ops/factory.h"
#include "ops/loss.h"
#include "ops/reduce.h"
#include "ops/shape.h"
#include "ops/similarity.h"
#include "parallel/autograd_collectives.h"
#include "ps3/contrastive_loss.h"
#include "tests/parallel/mpi_main.h"
#include "tests/testing/gradcheck.h"

namespace hd::ps3 {
namespace {

using parallel::testing::world;

constexpr int64_t kCols = 3;

// Row i of rank r: value 100 (r + 1) + 10 i + k in column k.
double value(int r, int64_t i, int64_t k) {
  return 100.0 * (r + 1) + 10.0 * double(i) + double(k);
}

TEST(AllGatherRows, ForwardAndBackwardClosedForms) {
  const int n = world().world_size(), rank = world().rank();
  const int64_t mine = rank + 1;
  std::vector<double> v;
  for (int64_t i = 0; i < mine; ++i)
    for (int64_t k = 0; k < kCols; ++k) v.push_back(value(rank, i, k));
  Tensor x = from_vector<double>(v, {mine, kCols});
  x.requires_grad_(true);
  parallel::GatheredRows g = parallel::all_gather_rows(x, world());
  const int64_t total = int64_t(n) * (n + 1) / 2;
  ASSERT_EQ(g.all.shape(), (Shape{total, kCols}));
  std::vector<double> all = g.all.to_vector<double>();
  int64_t row = 0;
  for (int r = 0; r < n; ++r) {
    EXPECT_EQ(g.counts[size_t(r)], r + 1);
    EXPECT_EQ(g.offset(r), row);
    for (int64_t i = 0; i <= r; ++i, ++row)
      for (int64_t k = 0; k < kCols; ++k)
        EXPECT_EQ(all[size_t(row * kCols + k)], value(r, i, k)) << "rank " << r << " row " << i;
  }
  // Rank q's loss: sum_j (q + 1)(j + 1) * sum_k all[j, k]. The gradient reaching global row j
  // is (j + 1) sum_q (q + 1) = (j + 1) N (N + 1) / 2.
  Tensor c = mul(add(arange(0, double(total), 1, DType::f64), 1.0), double(rank + 1));
  sum(mul(g.all, reshape(c, {total, 1}))).backward();
  std::vector<double> gx = x.grad().to_vector<double>();
  const int64_t off = g.offset(rank);
  for (int64_t i = 0; i < mine; ++i)
    for (int64_t k = 0; k < kCols; ++k)
      EXPECT_EQ(gx[size_t(i * kCols + k)], double(off + i + 1) * n * (n + 1) / 2.0);
}

// Global batch: kTotal pairs, identical on every rank (fixed seeds).
constexpr int64_t kTotal = 6, kDim = 5;

void check_split(const std::vector<int64_t>& counts) {
  const int n = world().world_size(), rank = world().rank();
  Tensor gx_full = testing::random_leaf({kTotal, kDim}, 11);
  Tensor gt_full = testing::random_leaf({kTotal, kDim}, 12);
  Tensor s = full({}, 1.7, DType::f64), b = full({}, -3.0, DType::f64);
  s.requires_grad_(true);
  b.requires_grad_(true);
  Tensor ref = siglip_loss(l2_normalize(gx_full), l2_normalize(gt_full), s, b, true);
  ref.backward();
  const double ref_s = s.grad().item<double>(), ref_b = b.grad().item<double>();

  int64_t begin = 0;
  for (int r = 0; r < rank; ++r) begin += counts[size_t(r)];
  const int64_t mine = counts[size_t(rank)];
  Tensor x = contiguous(narrow(gx_full.detach(), 0, begin, mine)).requires_grad_(true);
  Tensor t = contiguous(narrow(gt_full.detach(), 0, begin, mine)).requires_grad_(true);
  Tensor s2 = full({}, 1.7, DType::f64), b2 = full({}, -3.0, DType::f64);
  s2.requires_grad_(true);
  b2.requires_grad_(true);
  Tensor loss = distributed_sigmoid_loss(l2_normalize(x), l2_normalize(t), s2, b2, &world());
  loss.backward();

  // mean over ranks of the losses and of the scalar gradients (FSDP's avg).
  Tensor sums = from_vector<double>(
      {loss.item<double>(), s2.grad().item<double>(), b2.grad().item<double>()}, {3});
  world().all_reduce(sums, parallel::ReduceOp::sum).wait();
  std::vector<double> m = sums.to_vector<double>();
  EXPECT_NEAR(m[0] / n, ref.item<double>(), 1e-12);
  EXPECT_NEAR(m[1] / n, ref_s, 1e-11);
  EXPECT_NEAR(m[2] / n, ref_b, 1e-11);
  if (mine == 0) return;
  Tensor want_gx = narrow(gx_full.grad(), 0, begin, mine);
  Tensor want_gt = narrow(gt_full.grad(), 0, begin, mine);
  EXPECT_LT(testing::max_abs_diff(div(x.grad(), double(n)), want_gx), 1e-12);
  EXPECT_LT(testing::max_abs_diff(div(t.grad(), double(n)), want_gt), 1e-12);
}

TEST(DistributedContrast, EqualSplitMatchesWholeBatch) {
  const int n = world().world_size();
  if (kTotal % n != 0) GTEST_SKIP() << kTotal << " pairs do not split evenly over " << n;
  check_split(std::vector<int64_t>(size_t(n), kTotal / n));
}

TEST(DistributedContrast, UnequalSplitMatchesWholeBatch) {
  HD_REQUIRE_RANKS(2);
  if (world().world_size() != 2) GTEST_SKIP() << "written for 2 ranks";
  check_split({1, 5});
  check_split({0, 6});  // a rank whose loader dropped every sample still joins the exchange
}

}  // namespace
}  // namespace hd::ps3
