// The pinned host allocator's caching policy ([Note: pinned host memory]): a freed block is
// handed out again only after every queued reader of it has finished. The readers here are
// fences the test completes by hand (on a GPU they are CUDA events, see
// PinnedHost.CopiesFromPinnedTensorsReachTheDevice); the backend is ordinary host memory that
// counts what it hands out.
#include "autograd/pinned_host.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>

#include "autograd/tensor.h"
#include "ops/factory.h"
#include "ops/shape.h"
#include "tests/testing/errors.h"
#ifdef HD_HAVE_CUDA
#include "ops/cuda/runtime.h"
#endif

namespace hd {
namespace {

class ManualFence final : public ReadFence {
 public:
  bool done() const override { return finished; }
  bool finished = false;
};

struct CountingBackend {
  int allocated = 0, released = 0;
  PinnedHostAllocator::Backend backend() {
    return {[this](size_t n) {
              ++allocated;
              return std::aligned_alloc(64, n);
            },
            [this](void* p) {
              ++released;
              std::free(p);
            },
            false, "test backend"};
  }
};

TEST(PinnedHost, AFreedBlockWithoutReadersIsReusedForTheSameSizeClass) {
  CountingBackend counts;
  PinnedHostAllocator alloc(counts.backend());
  void* a = alloc.allocate(1000);
  alloc.deallocate(a, 1000);
  EXPECT_EQ(alloc.stats().cached_bytes, int64_t(CpuAllocator::size_class(1000)));
  EXPECT_EQ(alloc.allocate(1000), a);  // same class: the cached block
  void* b = alloc.allocate(1 << 20);   // another class: a new one
  EXPECT_NE(b, a);
  EXPECT_EQ(counts.allocated, 2);
  alloc.deallocate(a, 1000);
  alloc.deallocate(b, 1 << 20);
}

TEST(PinnedHost, ABlockIsNotReusedWhileACopyStillReadsIt) {
  CountingBackend counts;
  PinnedHostAllocator alloc(counts.backend());
  void* a = alloc.allocate(4096);
  std::memset(a, 7, 4096);
  auto first = std::make_shared<ManualFence>(), second = std::make_shared<ManualFence>();
  alloc.record_read(a, first);
  alloc.record_read(a, second);
  alloc.deallocate(a, 4096);  // the host is done with it; two copies are still queued

  void* b = alloc.allocate(4096);
  EXPECT_NE(b, a) << "handed out a block two queued copies still read";
  first->finished = true;
  void* c = alloc.allocate(4096);
  EXPECT_NE(c, a) << "handed out a block one queued copy still reads";
  EXPECT_EQ(static_cast<unsigned char*>(a)[4095], 7);  // untouched while being read
  second->finished = true;
  void* d = alloc.allocate(4096);
  EXPECT_EQ(d, a) << "a block whose readers are done should be reused";
  EXPECT_EQ(counts.allocated, 3);
  for (void* p : {b, c, d}) alloc.deallocate(p, 4096);
}

TEST(PinnedHost, TheOldestSettledBlockIsReusedFirst) {
  CountingBackend counts;
  PinnedHostAllocator alloc(counts.backend());
  void* a = alloc.allocate(256);
  void* b = alloc.allocate(256);
  auto busy = std::make_shared<ManualFence>();
  alloc.record_read(a, busy);
  alloc.deallocate(a, 256);
  alloc.deallocate(b, 256);
  EXPECT_EQ(alloc.allocate(256), b);  // a is older but still read
  busy->finished = true;
  EXPECT_EQ(alloc.allocate(256), a);
  alloc.deallocate(a, 256);
  alloc.deallocate(b, 256);
}

TEST(PinnedHost, StatsCountLiveAndCachedBytes) {
  CountingBackend counts;
  PinnedHostAllocator alloc(counts.backend());
  void* a = alloc.allocate(100'000);
  void* b = alloc.allocate(50'000);
  EXPECT_EQ(alloc.stats().current_bytes, 150'000);
  EXPECT_EQ(alloc.stats().peak_bytes, 150'000);
  alloc.deallocate(a, 100'000);
  MemoryStats s = alloc.stats();
  EXPECT_EQ(s.current_bytes, 50'000);
  EXPECT_EQ(s.peak_bytes, 150'000);
  EXPECT_EQ(s.cached_bytes, int64_t(CpuAllocator::size_class(100'000)));
  EXPECT_EQ(s.allocations, 2);
  alloc.reset_peak();
  EXPECT_EQ(alloc.stats().peak_bytes, 50'000);
  alloc.deallocate(b, 50'000);
}

TEST(PinnedHost, EmptyCacheKeepsBlocksThatAreStillRead) {
  CountingBackend counts;
  PinnedHostAllocator alloc(counts.backend());
  void* a = alloc.allocate(512);
  void* b = alloc.allocate(512);
  auto busy = std::make_shared<ManualFence>();
  alloc.record_read(b, busy);
  alloc.deallocate(a, 512);
  alloc.deallocate(b, 512);
  alloc.empty_cache();
  EXPECT_EQ(counts.released, 1);  // a; b is still read
  EXPECT_EQ(alloc.stats().cached_bytes, int64_t(CpuAllocator::size_class(512)));
  busy->finished = true;
  alloc.empty_cache();
  EXPECT_EQ(counts.released, 2);
  EXPECT_EQ(alloc.stats().cached_bytes, 0);
}

TEST(PinnedHost, RecordingAReadOnMemoryItDidNotAllocateIsAnError) {
  CountingBackend counts;
  PinnedHostAllocator alloc(counts.backend());
  int on_stack = 0;
  testing::expect_error([&] { alloc.record_read(&on_stack, std::make_shared<ManualFence>()); },
                        "not a live pinned block");
  void* a = alloc.allocate(64);
  EXPECT_TRUE(alloc.owns(a));
  alloc.deallocate(a, 64);
  EXPECT_FALSE(alloc.owns(a));  // cached, not live
  testing::expect_error([&] { alloc.record_read(a, std::make_shared<ManualFence>()); },
                        "not a live pinned block");
}

TEST(PinnedHost, PinnedTensorsComeFromTheRegistrysAllocator) {
  PinnedHostAllocator& registry = pinned_host_allocator();
  const int64_t before = registry.stats().current_bytes;
  {
    Tensor t = Tensor::empty_pinned({3, 5}, DType::i32);
    EXPECT_TRUE(t.is_pinned());
    EXPECT_TRUE(t.device().is_cpu());
    EXPECT_EQ(registry.stats().current_bytes, before + 60);
    EXPECT_TRUE(registry.owns(t.storage()->data()));
    for (int i = 0; i < 15; ++i) t.data<int32_t>()[i] = i;
    Tensor view = narrow(t, 0, 1, 2);  // views share the pinned storage
    EXPECT_TRUE(view.is_pinned());
    EXPECT_EQ(view.to_vector<int32_t>()[0], 5);
    EXPECT_FALSE(zeros({3, 5}).is_pinned());
    EXPECT_FALSE(contiguous(transpose(t, 0, 1)).is_pinned());  // a copy: ordinary memory
  }
  EXPECT_EQ(registry.stats().current_bytes, before);
#ifdef HD_HAVE_CUDA
  EXPECT_EQ(registry.page_locked(), cuda::available()) << registry.description();
  if (!cuda::available()) {
    EXPECT_NE(registry.description().find("no CUDA device"), std::string::npos)
        << registry.description();
  }
#else
  EXPECT_FALSE(registry.page_locked());
#endif
}

// On a GPU: copies from pinned tensors are queued, not waited for; the source block stays out of
// reuse until they have run, so overwriting the freshly allocated buffers of the next batches
// never changes what the device received.
TEST(PinnedHost, CopiesFromPinnedTensorsReachTheDevice) {
#ifndef HD_HAVE_CUDA
  GTEST_SKIP() << "this build has no CUDA backend";
#else
  if (!cuda::available()) GTEST_SKIP() << "no CUDA device: " << cuda::unavailable_reason();
  const Device gpu = Device::cuda(0);
  std::vector<Tensor> on_device;
  for (int batch = 0; batch < 8; ++batch) {
    Tensor host = Tensor::empty_pinned({1 << 20});
    float* p = host.data<float>();
    for (int64_t i = 0; i < host.numel(); ++i) p[i] = float(batch * 10 + i % 7);
    on_device.push_back(to(host, gpu));
    // Dropping `host` now is what a training loop does; the next empty_pinned must not get this
    // block while the copy may still be queued.
  }
  for (int batch = 0; batch < 8; ++batch) {
    std::vector<float> got = to(on_device[size_t(batch)], Device::cpu()).to_vector<float>();
    for (int64_t i = 0; i < int64_t(got.size()); i += 4099) {
      ASSERT_EQ(got[size_t(i)], float(batch * 10 + i % 7)) << "batch " << batch << " element " << i;
    }
  }
  EXPECT_TRUE(pinned_host_allocator().page_locked());
#endif
}

}  // namespace
}  // namespace hd
