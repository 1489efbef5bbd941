// Indexing ops: values, gradients (f64 finite differences, incl. non-contiguous inputs),
// duplicate indices, i32 indices, and out-of-range errors that name the op, value and size.
#include "ops/index.h"

#include <gtest/gtest.h>

#include "ops/elementwise.h"
#include "ops/factory.h"
#include "ops/shape.h"
#include "tests/testing/gradcheck.h"

namespace hd {
namespace {

using testing::check_gradients;
using testing::random_leaf;

Tensor ids(const std::vector<int64_t>& v, const Shape& shape) {
  return from_vector(v, shape);
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

TEST(Index, IndexSelectValues) {
  Tensor x = from_vector<float>({0, 1, 2, 3, 4, 5}, {2, 3});
  EXPECT_EQ(index_select(x, 1, ids({2, 0, 2}, {3})).to_vector<float>(),
            (std::vector<float>{2, 0, 2, 5, 3, 5}));
  EXPECT_EQ(index_select(x, 0, ids({1}, {1})).to_vector<float>(), (std::vector<float>{3, 4, 5}));
  // i32 indices are accepted.
  Tensor i32 = from_vector<int32_t>({1, 1}, {2}, DType::i32);
  EXPECT_EQ(index_select(x, -1, i32).to_vector<float>(), (std::vector<float>{1, 1, 4, 4}));
}

TEST(Index, GatherValues) {
  Tensor x = from_vector<float>({1, 2, 3, 4, 5, 6}, {2, 3});
  EXPECT_EQ(gather(x, 1, ids({2, 2, 0, 1}, {2, 2})).to_vector<float>(),
            (std::vector<float>{3, 3, 4, 5}));
  EXPECT_EQ(gather(x, 0, ids({1, 0, 1}, {1, 3})).to_vector<float>(), (std::vector<float>{4, 2, 6}));
  // An expanded (stride-0) index works without a copy.
  Tensor e = expand(ids({1, 0}, {2, 1}), {2, 3});
  EXPECT_EQ(gather(x, 1, e).to_vector<float>(), (std::vector<float>{2, 2, 2, 4, 4, 4}));
}

TEST(Index, AddsAccumulateDuplicates) {
  Tensor x = zeros({3, 2});
  Tensor src = from_vector<float>({1, 2, 10, 20, 100, 200}, {3, 2});
  EXPECT_EQ(index_add(x, 0, ids({2, 0, 2}, {3}), src).to_vector<float>(),
            (std::vector<float>{10, 20, 0, 0, 101, 202}));
  Tensor s = scatter_add(zeros({2, 3}), 1, ids({0, 0, 2, 1, 1, 1}, {2, 3}),
                         from_vector<float>({1, 2, 3, 4, 5, 6}, {2, 3}));
  EXPECT_EQ(s.to_vector<float>(), (std::vector<float>{3, 0, 3, 0, 15, 0}));
  // The input is not modified (out-of-place ops).
  EXPECT_EQ(x.to_vector<float>(), std::vector<float>(6, 0.f));
}

TEST(Index, ScatterAddIsDeterministicOnLargeInputs) {
  // Many duplicates across a parallel-sized input: two runs give identical bits, and the sum
  // matches a serial loop.
  int64_t n = 200000, bins = 7, cols = 3;
  std::vector<int64_t> idx(size_t(n * cols));
  for (size_t i = 0; i < idx.size(); ++i) idx[i] = int64_t((i * 2654435761u) % bins);
  Tensor index = ids(idx, {n, cols});
  Generator gen(5, "scatter");
  Tensor src = uniform({n, cols}, -1, 1, gen);
  Tensor a = scatter_add(zeros({bins, cols}), 0, index, src);
  Tensor b = scatter_add(zeros({bins, cols}), 0, index, src);
  EXPECT_EQ(a.to_vector<float>(), b.to_vector<float>());
  std::vector<float> sv = src.to_vector<float>(), want(size_t(bins * cols), 0.f);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t c = 0; c < cols; ++c)
      want[size_t(idx[size_t(i * cols + c)] * cols + c)] += sv[size_t(i * cols + c)];
  EXPECT_EQ(a.to_vector<float>(), want);
}

TEST(Index, ScatterRowsAndEmbedding) {
  Tensor src = from_vector<float>({1, 2, 3, 4, 5, 6, 7, 8}, {2, 2, 2});
  Tensor out = scatter_rows(src, ids({2, 0, 1, 3}, {2, 2}), 4);
  EXPECT_EQ(out.shape(), (Shape{2, 4, 2}));
  EXPECT_EQ(out.to_vector<float>(), (std::vector<float>{3, 4, 0, 0, 1, 2, 0, 0,  //
                                                        0, 0, 5, 6, 0, 0, 7, 8}));
  Tensor w = from_vector<float>({0, 1, 10, 11, 20, 21}, {3, 2});
  Tensor e = embedding(w, ids({2, 0, 2, 1}, {2, 2}));
  EXPECT_EQ(e.shape(), (Shape{2, 2, 2}));
  EXPECT_EQ(e.to_vector<float>(), (std::vector<float>{20, 21, 0, 1, 20, 21, 10, 11}));
}

TEST(Index, Gradients) {
  Tensor x = random_leaf({4, 5, 3}, 1);
  check_gradients(
      [](const std::vector<Tensor>& in) {
        return index_select(in[0], 1, ids({4, 0, 4, 2}, {4}));
      },
      {x});
  // Non-contiguous input (transposed view).
  check_gradients(
      [](const std::vector<Tensor>& in) {
        return index_select(transpose(in[0], 0, 2), 2, ids({3, 3, 1}, {3}));
      },
      {x});
  check_gradients(
      [](const std::vector<Tensor>& in) {
        return gather(permute(in[0], {2, 0, 1}), 2, ids({0, 4, 4, 1, 2, 2}, {1, 2, 3}));
      },
      {x});
  Tensor src = random_leaf({4, 2, 3}, 2);
  check_gradients(
      [](const std::vector<Tensor>& in) {
        return index_add(in[0], 1, ids({3, 3}, {2}), in[1]);
      },
      {x, src});
  // scatter_add with an index smaller than src: the unscattered part of src gets zero grad.
  Tensor src2 = random_leaf({4, 6, 3}, 3);
  check_gradients(
      [](const std::vector<Tensor>& in) {
        Tensor index = ids({0, 1, 2, 4, 4, 0, 1, 1, 3, 0, 2, 2,  //
                            4, 3, 2, 1, 0, 0, 0, 0, 0, 1, 1, 1},
                           {4, 2, 3});
        return scatter_add(in[0], 1, index, in[1]);
      },
      {x, src2});
  Tensor rows = random_leaf({2, 3, 4}, 4);
  check_gradients(
      [](const std::vector<Tensor>& in) {
        return scatter_rows(slice(in[0], 2, 0, 4, 2), ids({4, 1, 0, 2, 3, 5}, {2, 3}), 6);
      },
      {rows});
  Tensor w = random_leaf({6, 3}, 5);
  check_gradients(
      [](const std::vector<Tensor>& in) {
        return embedding(in[0], ids({5, 0, 5, 5, 2, 1}, {3, 2}));
      },
      {w});
}

TEST(Index, OutOfRangeErrorsNameOpValueAndSize) {
  Tensor x = zeros({3, 4});
  EXPECT_NE(error_of([&] {
              index_select(x, 1, ids({0, 4}, {2}));
            }).find("index_select: index 4 is out of range for dim 1 of size 4"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              gather(x, 0, ids({-1}, {1, 1}));
            }).find("gather: index -1 is out of range for dim 0 of size 3"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              embedding(x, ids({7}, {1}));
            }).find("embedding: index 7 is out of range for dim 0 of size 3"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              scatter_rows(zeros({1, 2, 4}), ids({0, 9}, {1, 2}), 5);
            }).find("scatter_rows: index 9 is out of range"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              index_add(x, 0, ids({0}, {1}), zeros({2, 4}));
            }).find("index_add: src [2, 4] must be [1, 4]"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              index_select(x, 0, zeros({1}));
            }).find("index_select: index must be i64 or i32"),
            std::string::npos);
}

}  // namespace
}  // namespace hd
