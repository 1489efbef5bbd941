// topk: order and tie rule, NaN, k bounds, values' gradient (f64 finite differences) and the
// parallel path on many rows.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "ops/elementwise.h"
#include "ops/factory.h"
#include "ops/index.h"
#include "ops/shape.h"
#include "tests/testing/gradcheck.h"

namespace hd {
namespace {

using testing::check_gradients;
using testing::random_leaf;

TEST(Topk, LargestFirst) {
  Tensor x = from_vector<float>({3, 9, 1, 7, 5, 2, 8, 0}, {2, 4});
  ValuesIndices r = topk(x, 2);
  EXPECT_EQ(r.values.to_vector<float>(), (std::vector<float>{9, 7, 8, 5}));
  EXPECT_EQ(r.indices.to_vector<int64_t>(), (std::vector<int64_t>{1, 3, 2, 0}));
  EXPECT_EQ(r.indices.dtype(), DType::i64);
}

TEST(Topk, TiesTakeLowerIndexFirst) {
  // Constant blocks, as after nearest upsampling of a selection map.
  Tensor x = from_vector<float>({0.5f, 0.9f, 0.5f, 0.9f, 0.9f, 0.1f, 0.5f}, {7});
  ValuesIndices r = topk(x, 5);
  EXPECT_EQ(r.indices.to_vector<int64_t>(), (std::vector<int64_t>{1, 3, 4, 0, 2}));
  EXPECT_EQ(r.values.to_vector<float>(), (std::vector<float>{0.9f, 0.9f, 0.9f, 0.5f, 0.5f}));
  // All equal: the first k indices in order.
  EXPECT_EQ(topk(ones({1, 6}), 3).indices.to_vector<int64_t>(), (std::vector<int64_t>{0, 1, 2}));
}

TEST(Topk, NanCountsAsLargest) {
  Tensor x = from_vector<float>({1, NAN, 3}, {3});
  EXPECT_EQ(topk(x, 2).indices.to_vector<int64_t>(), (std::vector<int64_t>{1, 2}));
}

TEST(Topk, KBounds) {
  Tensor x = zeros({2, 4});
  EXPECT_EQ(topk(x, 0).values.shape(), (Shape{2, 0}));
  EXPECT_EQ(topk(x, 4).values.shape(), (Shape{2, 4}));
  try {
    topk(x, 5);
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("topk: k = 5 is out of range for the last dim of size 4"),
              std::string::npos)
        << e.what();
  }
}

TEST(Topk, ManyRowsMatchSerialRule) {
  // Enough rows for the parallel path; values on a coarse grid so ties are frequent.
  int64_t rows = 300, n = 257, k = 40;
  std::vector<float> grid(size_t(rows * n));
  for (size_t i = 0; i < grid.size(); ++i) grid[i] = float((i * 2654435761u >> 7) % 8);
  Tensor x = from_vector(grid, {rows, n});
  ValuesIndices r = topk(x, k);
  std::vector<float> xv = x.to_vector<float>();
  std::vector<int64_t> iv = r.indices.to_vector<int64_t>();
  for (int64_t row = 0; row < rows; ++row) {
    std::vector<int64_t> order(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) order[size_t(i)] = i;
    const float* v = xv.data() + row * n;
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return v[a] > v[b]; });
    for (int64_t j = 0; j < k; ++j) ASSERT_EQ(iv[size_t(row * k + j)], order[size_t(j)]) << row;
  }
}

TEST(Topk, ValuesGradient) {
  Tensor x = random_leaf({3, 6}, 1);
  check_gradients([](const std::vector<Tensor>& in) { return topk(in[0], 3).values; }, {x});
  // Non-contiguous: top-k over the first dim of x (transposed view).
  check_gradients(
      [](const std::vector<Tensor>& in) { return topk(transpose(in[0], 0, 1), 2).values; }, {x});
}

}  // namespace
}  // namespace hd
