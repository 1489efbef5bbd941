// NCCL collectives on device tensors with closed-form results (the MPI collectives test's
// formulas: rank r contributes (r + 1) * (i % 7 + 1), so each expected value is a formula in the
// world size N). Sizes are uneven on purpose (1, 7, 1001 elements); f32, f64 and bf16 (every
// value involved is exactly representable in bf16).
//
// Every rank needs its own GPU (device = local rank); HD_REQUIRE_NCCL (mpi_main.h) skips
// otherwise, on every rank alike.
#include <gtest/gtest.h>

#include <vector>

#include "ops/factory.h"
#include "parallel/process_group.h"
#include "tests/parallel/mpi_main.h"

namespace hd::parallel {
namespace {

using testing::world;

const std::vector<int64_t> kSizes = {1, 7, 1001};
const DType kDtypes[] = {DType::f32, DType::f64, DType::bf16};

ProcessGroup& nccl() {
  return *testing::nccl_ptr();
}

Device my_device() {
  return Device::cuda(world().local_rank());
}

std::vector<double> contribution(int64_t r, int64_t n, int64_t first = 0) {
  std::vector<double> v(static_cast<size_t>(n), 0.0);
  for (int64_t i = 0; i < n; ++i) v[size_t(i)] = double((r + 1) * ((first + i) % 7 + 1));
  return v;
}

Tensor on_device(const std::vector<double>& v, DType dt) {
  return from_vector<double>(v, {int64_t(v.size())}, dt, my_device());
}

TEST(Nccl, AllReduceSumAvgMax) {
  HD_REQUIRE_NCCL();
  const int64_t r = world().rank(), N = world().world_size();
  for (DType dt : kDtypes) {
    for (int64_t n : kSizes) {
      for (ReduceOp op : {ReduceOp::sum, ReduceOp::avg, ReduceOp::max}) {
        Tensor t = on_device(contribution(r, n), dt);
        nccl().all_reduce(t, op).wait();
        std::vector<double> got = t.to_vector<double>();
        for (int64_t i = 0; i < n; ++i) {
          const double k = double(i % 7 + 1), sum = double(N * (N + 1) / 2) * k;
          double expected = op == ReduceOp::sum   ? sum
                            : op == ReduceOp::avg ? sum / double(N)
                                                  : double(N) * k;
          ASSERT_EQ(got[size_t(i)], expected)
              << dtype_name(dt) << " " << reduce_op_name(op) << " n=" << n << " i=" << i;
        }
      }
    }
  }
}

TEST(Nccl, AllGather) {
  HD_REQUIRE_NCCL();
  const int64_t r = world().rank(), N = world().world_size();
  for (DType dt : kDtypes) {
    for (int64_t n : kSizes) {
      Tensor in = on_device(contribution(r, n), dt);
      Tensor out = Tensor::empty({N * n}, dt, my_device());
      nccl().all_gather(in, out).wait();
      std::vector<double> got = out.to_vector<double>();
      for (int64_t q = 0; q < N; ++q)
        for (int64_t i = 0; i < n; ++i)
          ASSERT_EQ(got[size_t(q * n + i)], double((q + 1) * (i % 7 + 1)))
              << dtype_name(dt) << " n=" << n;
    }
  }
}

TEST(Nccl, ReduceScatterSum) {
  HD_REQUIRE_NCCL();
  const int64_t r = world().rank(), N = world().world_size();
  for (DType dt : kDtypes) {
    for (int64_t n : kSizes) {
      Tensor in = on_device(contribution(r, N * n), dt);
      Tensor out = Tensor::empty({n}, dt, my_device());
      nccl().reduce_scatter(in, out, ReduceOp::sum).wait();
      std::vector<double> got = out.to_vector<double>();
      for (int64_t i = 0; i < n; ++i) {
        double k = double((r * n + i) % 7 + 1);
        ASSERT_EQ(got[size_t(i)], double(N * (N + 1) / 2) * k) << dtype_name(dt) << " n=" << n;
      }
    }
  }
}

TEST(Nccl, BroadcastFromEveryRoot) {
  HD_REQUIRE_NCCL();
  const int64_t r = world().rank(), N = world().world_size();
  for (int root = 0; root < N; ++root) {
    for (int64_t n : kSizes) {
      Tensor t = on_device(r == root ? contribution(root, n) : std::vector<double>(size_t(n), -1.0),
                           DType::f32);
      nccl().broadcast(t, root).wait();
      EXPECT_EQ(t.to_vector<double>(), contribution(root, n)) << "root " << root << " n=" << n;
    }
  }
}

TEST(Nccl, RejectsHostTensorsNamingTheOp) {
  HD_REQUIRE_NCCL();
  Tensor host = ones({4});
  try {
    nccl().all_reduce(host, ReduceOp::sum);
    FAIL() << "a host tensor must be rejected";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("all_reduce"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace hd::parallel
