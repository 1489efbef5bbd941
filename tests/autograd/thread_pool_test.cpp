// ThreadPool (autograd/thread_pool.h): every index runs exactly once, on every thread count and
// both waiting modes (spin then block, block at once), across many back-to-back calls (a lost
// wake-up would hang or skip a chunk); task exceptions reach the caller; nested calls run
// serially; a bad HD_POOL_SPIN_US is refused with its name.
#include "autograd/thread_pool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "autograd/error.h"

namespace hd {
namespace {

struct PoolCase {
  int threads;
  int64_t spin_us;
};

class ThreadPoolModes : public ::testing::TestWithParam<PoolCase> {};

TEST_P(ThreadPoolModes, EveryIndexRunsOnceOverManyCalls) {
  ThreadPool pool(GetParam().threads, GetParam().spin_us);
  EXPECT_EQ(pool.num_threads(), GetParam().threads);
  std::vector<std::atomic<int>> hits(1000);
  for (int call = 0; call < 2000; ++call) {
    const int64_t n = 1 + call % 997;
    pool.parallel_for(0, n, 1 + call % 7, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) hits[size_t(i)].fetch_add(1);
    });
    for (int64_t i = 0; i < n; ++i) {
      ASSERT_EQ(hits[size_t(i)].exchange(0), 1) << "index " << i << " of call " << call;
    }
    if (call % 500 == 0) {  // idle long enough for spinning sides to block
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  }
}

TEST_P(ThreadPoolModes, TaskExceptionsReachTheCaller) {
  ThreadPool pool(GetParam().threads, GetParam().spin_us);
  for (int rep = 0; rep < 20; ++rep) {
    EXPECT_THROW(pool.parallel_for(0, 100, 1,
                                   [&](int64_t b, int64_t) {
                                     if (b > 0 || GetParam().threads == 1)
                                       throw std::runtime_error("task failed");
                                   }),
                 std::runtime_error);
    int64_t sum = 0;  // the pool still works after a failed call
    std::atomic<int64_t> total{0};
    pool.parallel_for(0, 100, 1, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) total += i;
    });
    for (int64_t i = 0; i < 100; ++i) sum += i;
    EXPECT_EQ(total.load(), sum);
  }
}

TEST_P(ThreadPoolModes, NestedCallsRunSeriallyInsideATask) {
  ThreadPool pool(GetParam().threads, GetParam().spin_us);
  std::atomic<int64_t> inner{0};
  pool.parallel_for(0, 8, 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      pool.parallel_for(0, 10, 1, [&](int64_t ib, int64_t ie) { inner += ie - ib; });
    }
  });
  EXPECT_EQ(inner.load(), 80);
}

INSTANTIATE_TEST_SUITE_P(Pools, ThreadPoolModes,
                         ::testing::Values(PoolCase{1, 0}, PoolCase{2, 0}, PoolCase{2, 50},
                                           PoolCase{4, 0}, PoolCase{4, 50}, PoolCase{3, 200}),
                         [](const auto& info) {
                           return std::to_string(info.param.threads) + "threads_spin" +
                                  std::to_string(info.param.spin_us) + "us";
                         });

TEST(ThreadPool, BadSpinSettingIsRefusedWithItsName) {
  for (const char* bad : {"-1", "fast", "5000000", "10us"}) {
    setenv("HD_POOL_SPIN_US", bad, 1);
    try {
      ThreadPool pool(2);
      ADD_FAILURE() << "HD_POOL_SPIN_US=" << bad << " was accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("HD_POOL_SPIN_US"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(bad), std::string::npos) << e.what();
    }
  }
  setenv("HD_POOL_SPIN_US", "0", 1);
  EXPECT_NO_THROW(ThreadPool(2));
  unsetenv("HD_POOL_SPIN_US");
}

}  // namespace
}  // namespace hd
