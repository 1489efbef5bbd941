// Closed-form collective results: rank r contributes values built from r+1, so every expected
// value is a formula in the world size N. Run at 1, 2, 3 and 4 ranks (tests/parallel/
// CMakeLists.txt); sizes are uneven on purpose (1, 7, 1001 elements).
#include <gtest/gtest.h>

#include <vector>

#include "ops/factory.h"
#include "ops/shape.h"
#include "parallel/broadcast_tensors.h"
#include "parallel/process_group.h"
#include "tests/parallel/mpi_main.h"
#include "tests/testing/errors.h"

namespace hd::parallel {
namespace {

using testing::world;

const std::vector<int64_t> kSizes = {1, 7, 1001};

template <class T>
class CollectivesTest : public ::testing::Test {};
using Types = ::testing::Types<float, double, int64_t>;
TYPED_TEST_SUITE(CollectivesTest, Types);

template <class T>
Tensor make(int64_t n) {
  return Tensor::empty({n}, dtype_of<T>());
}

TYPED_TEST(CollectivesTest, AllReduceSumAvgMax) {
  using T = TypeParam;
  const int64_t r = world().rank(), N = world().world_size();
  for (int64_t n : kSizes) {
    for (ReduceOp op : {ReduceOp::sum, ReduceOp::avg, ReduceOp::max}) {
      Tensor t = make<T>(n);
      for (int64_t i = 0; i < n; ++i) t.data<T>()[i] = T((r + 1) * (i % 7 + 1));
      world().all_reduce(t, op).wait();
      for (int64_t i = 0; i < n; ++i) {
        const int64_t k = i % 7 + 1;
        T sum = T(N * (N + 1) / 2 * k);
        T expected = op == ReduceOp::sum ? sum : op == ReduceOp::avg ? T(sum / T(N)) : T(N * k);
        ASSERT_EQ(t.data<T>()[i], expected)
            << reduce_op_name(op) << " n=" << n << " i=" << i << " N=" << N;
      }
    }
  }
}

TYPED_TEST(CollectivesTest, AllGatherIntoFlatBuffer) {
  using T = TypeParam;
  const int64_t r = world().rank(), N = world().world_size();
  for (int64_t n : kSizes) {
    Tensor in = make<T>(n), out = make<T>(n * N);
    for (int64_t i = 0; i < n; ++i) in.data<T>()[i] = T((r + 1) * 1000 + i);
    world().all_gather(in, out).wait();
    for (int64_t q = 0; q < N; ++q) {
      for (int64_t i = 0; i < n; ++i) {
        ASSERT_EQ(out.data<T>()[q * n + i], T((q + 1) * 1000 + i)) << "n=" << n << " q=" << q;
      }
    }
  }
}

TYPED_TEST(CollectivesTest, ReduceScatter) {
  using T = TypeParam;
  const int64_t r = world().rank(), N = world().world_size();
  for (int64_t n : kSizes) {
    for (ReduceOp op : {ReduceOp::sum, ReduceOp::avg, ReduceOp::max}) {
      Tensor in = make<T>(n * N), out = make<T>(n);
      for (int64_t j = 0; j < n * N; ++j) in.data<T>()[j] = T((r + 1) * (j % 11 + 1));
      world().reduce_scatter(in, out, op).wait();
      for (int64_t i = 0; i < n; ++i) {
        const int64_t k = (r * n + i) % 11 + 1;
        T sum = T(N * (N + 1) / 2 * k);
        T expected = op == ReduceOp::sum ? sum : op == ReduceOp::avg ? T(sum / T(N)) : T(N * k);
        ASSERT_EQ(out.data<T>()[i], expected) << reduce_op_name(op) << " n=" << n << " i=" << i;
      }
    }
  }
}

TYPED_TEST(CollectivesTest, BroadcastFromLastRank) {
  using T = TypeParam;
  const int64_t r = world().rank(), N = world().world_size();
  for (int64_t n : kSizes) {
    Tensor t = make<T>(n);
    for (int64_t i = 0; i < n; ++i) t.data<T>()[i] = T(r * 10 + i);
    world().broadcast(t, int(N - 1)).wait();
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(t.data<T>()[i], T((N - 1) * 10 + i));
  }
}

// [Note: buffer lifetime] (parallel/mpi_backend.cpp): a collective whose buffer the caller
// dropped before wait() is an error here, because on a GPU NCCL would still be using it.
TEST(Collectives, ABufferFreedBeforeWaitIsAnError) {
  const int64_t N = world().world_size();
  Work reduce, gather;
  Tensor kept = ones({3 * N});
  {
    Tensor dropped = ones({3}), dropped_input = ones({3});
    reduce = world().all_reduce(dropped, ReduceOp::sum);
    gather = world().all_gather(dropped_input, kept);  // input dropped, output kept
  }
  hd::testing::expect_error([&] { reduce.wait(); }, "a buffer of all_reduce was freed before");
  hd::testing::expect_error([&] { gather.wait(); }, "a buffer of all_gather was freed before");
  // Kept through a view of the same storage: fine.
  Tensor whole = ones({4});
  Work viewed;
  {
    Tensor handle = whole;
    viewed = world().all_reduce(handle, ReduceOp::sum);
  }
  viewed.wait();
  EXPECT_EQ(whole.to_vector<float>()[0], float(N));
}

// bf16 and f16 (FSDP's mixed-precision all-gather and reduce-scatter): MPI carries the bits and
// our user ops combine in f32. Every value below is a small integer (or a half) that both formats
// hold exactly, so the closed forms are exact; a bit-pattern sum (MPI_SUM on uint16) would not be.
TEST(Collectives, SixteenBitFloatsReduceAsNumbers) {
  const int64_t r = world().rank(), N = world().world_size();
  auto filled = [](int64_t n, DType dt, auto&& f) {
    Tensor t = Tensor::empty({n});
    for (int64_t i = 0; i < n; ++i) t.data<float>()[i] = float(f(i));
    return contiguous(to(t, dt));
  };
  for (DType dt : {DType::bf16, DType::f16}) {
    for (int64_t n : kSizes) {
      for (ReduceOp op : {ReduceOp::sum, ReduceOp::avg, ReduceOp::max}) {
        Tensor t = filled(n, dt, [&](int64_t i) { return (r + 1) * (i % 7 + 1); });
        world().all_reduce(t, op).wait();
        Tensor in = filled(n * N, dt, [&](int64_t j) { return (r + 1) * (j % 11 + 1); });
        Tensor out = Tensor::empty({n}, dt);
        world().reduce_scatter(in, out, op).wait();
        Tensor t32 = to(t, DType::f32), out32 = to(out, DType::f32);
        for (int64_t i = 0; i < n; ++i) {
          for (auto [got, k] : {std::pair{t32.data<float>()[i], i % 7 + 1},
                                std::pair{out32.data<float>()[i], (r * n + i) % 11 + 1}}) {
            const double sum = double(N * (N + 1) / 2 * k);
            const double expected = op == ReduceOp::sum   ? sum
                                    : op == ReduceOp::avg ? sum / double(N)
                                                          : double(N * k);
            ASSERT_EQ(got, float(expected)) << dtype_name(dt) << " " << reduce_op_name(op)
                                            << " n=" << n << " i=" << i << " N=" << N;
          }
        }
      }
      // At most 4 * 16 + 7 = 71: exact in bf16's 8 significant bits.
      Tensor in = filled(n, dt, [&](int64_t i) { return (r + 1) * 16 + i % 8; });
      Tensor all = Tensor::empty({n * N}, dt);
      world().all_gather(in, all).wait();
      Tensor all32 = to(all, DType::f32);
      for (int64_t q = 0; q < N; ++q) {
        for (int64_t i = 0; i < n; ++i) {
          ASSERT_EQ(all32.data<float>()[q * n + i], float((q + 1) * 16 + i % 8)) << dtype_name(dt);
        }
      }
    }
  }
}

TEST(Collectives, AsyncHandlesCompleteInIssueOrder) {
  const int64_t r = world().rank(), N = world().world_size();
  std::vector<Tensor> ts;
  std::vector<Work> works;
  for (int k = 0; k < 8; ++k) {
    Tensor t = Tensor::empty({64 + k});
    for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = float((r + 1) * (k + 1));
    works.push_back(world().all_reduce(t, ReduceOp::sum));
    ts.push_back(t);
  }
  works.push_back(world().barrier());
  for (int k = 7; k >= 0; --k) {  // waiting out of order is fine
    works[size_t(k)].wait();
    EXPECT_TRUE(works[size_t(k)].done());
    EXPECT_EQ(ts[size_t(k)].data<float>()[0], float(N * (N + 1) / 2 * (k + 1)));
  }
  works.back().wait();
}

TEST(Collectives, StatsCountBytesAndBusBytes) {
  const int N = world().world_size();
  world().barrier().wait();
  world().reset_stats();
  Tensor a = Tensor::empty({1000});
  for (int64_t i = 0; i < 1000; ++i) a.data<float>()[i] = 1;
  world().all_reduce(a, ReduceOp::sum).wait();
  Tensor out = Tensor::empty({1000 * N});
  world().all_gather(a, out).wait();
  Tensor rs = Tensor::empty({1000});
  world().reduce_scatter(out, rs, ReduceOp::sum).wait();
  CollectiveStats s = world().stats();
  EXPECT_EQ(s[Collective::all_reduce].calls, 1);
  EXPECT_EQ(s[Collective::all_reduce].bytes, 4000);
  EXPECT_DOUBLE_EQ(s[Collective::all_reduce].bus_bytes, 4000.0 * 2 * (N - 1) / N);
  EXPECT_EQ(s[Collective::all_gather].bytes, 4000 * N);
  EXPECT_DOUBLE_EQ(s[Collective::all_gather].bus_bytes, 4000.0 * (N - 1));
  EXPECT_EQ(s[Collective::reduce_scatter].bytes, 4000 * N);
  EXPECT_GE(s[Collective::all_reduce].seconds, 0.0);
}

TEST(Collectives, ShapeMismatchIsAnErrorNotAHang) {
  Tensor in = Tensor::empty({3}), out = Tensor::empty({3 * world().world_size() + 1});
  EXPECT_THROW(world().all_gather(in, out), Error);
  Tensor b = Tensor::empty({2}, DType::boolean);
  EXPECT_THROW(world().all_reduce(b, ReduceOp::sum).wait(), Error);
}

// Every rank in turn sends a list whose shapes only it knows: rank r sends r + 1 tensors of
// varied dtypes and ranks (an empty one and an undefined one among them); values are formulas in
// r, so each receiver checks exactly what the root built.
TEST(Collectives, BroadcastTensorListCarriesShapesFromTheRoot) {
  const int N = world().world_size();
  for (int root = 0; root < N; ++root) {
    std::vector<Tensor> list;
    if (world().rank() == root) {
      list.push_back(full({root + 1, 3}, 0.5 + root, DType::f32));
      list.push_back(arange(0, 5 + root, 1, DType::i64));
      list.push_back(Tensor());
      list.push_back(Tensor::empty({0, 4}));
      list.push_back(full({2, 1, 2}, -root, DType::f64));
    } else {
      list.push_back(full({9}, 1.0));  // replaced whole, whatever the receiver held
    }
    broadcast_tensor_list(world(), list, root);
    ASSERT_EQ(list.size(), 5u) << "root " << root;
    EXPECT_EQ(list[0].shape(), (Shape{root + 1, 3}));
    for (float v : list[0].to_vector<float>()) EXPECT_EQ(v, 0.5f + float(root));
    EXPECT_EQ(list[1].dtype(), DType::i64);
    const std::vector<int64_t> ids = list[1].to_vector<int64_t>();
    ASSERT_EQ(ids.size(), size_t(5 + root));
    for (size_t i = 0; i < ids.size(); ++i) EXPECT_EQ(ids[i], int64_t(i));
    EXPECT_FALSE(list[2].defined());
    EXPECT_EQ(list[3].shape(), (Shape{0, 4}));
    EXPECT_EQ(list[4].dtype(), DType::f64);
    EXPECT_EQ(list[4].shape(), (Shape{2, 1, 2}));
    for (double v : list[4].to_vector<double>()) EXPECT_EQ(v, -double(root));
  }
  std::vector<Tensor> none;
  EXPECT_THROW(broadcast_tensor_list(world(), none, N), Error);
}

TEST(Collectives, LaunchInfoFromOpenMpiEnvironment) {
  LaunchInfo info = launch_info_from_env();
  EXPECT_EQ(info.rank, world().rank());
  EXPECT_EQ(info.world_size, world().world_size());
  EXPECT_GE(world().local_rank(), 0);
  EXPECT_LT(world().local_rank(), world().world_size());
}

}  // namespace
}  // namespace hd::parallel
