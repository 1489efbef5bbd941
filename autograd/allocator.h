// Allocators hand out raw device memory and count it. The byte counters are what the metrics
// exporter reports as host/device memory current and peak.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "autograd/device.h"

namespace hd {

struct MemoryStats {
  int64_t current_bytes = 0;  // bytes in live tensors
  int64_t peak_bytes = 0;     // max of current_bytes since start or reset_peak()
  int64_t cached_bytes = 0;   // freed blocks kept for reuse (not counted in current)
  int64_t allocations = 0;    // total number of allocate() calls so far
};

class Allocator {
 public:
  virtual ~Allocator() = default;
  virtual void* allocate(size_t nbytes) = 0;
  virtual void deallocate(void* ptr, size_t nbytes) = 0;
  virtual MemoryStats stats() const = 0;
  virtual void reset_peak() = 0;
  // Returns cached blocks to the system.
  virtual void empty_cache() {}
};

// 64-byte aligned host memory (a cache line and one AVX-512 register), so vector loads in the
// kernels never straddle lines at the start of a buffer.
//
// Blocks of 64 KiB and more are cached by size class (1/8-power-of-two steps, so at most 12.5 %
// slack) and reused: a training step allocates the same large activations every time, and
// returning them to the system costs a page fault per 4 KiB on the next step (measured: softmax
// on [24, 729, 729] 15 ms in the kernel, 42 ms with fresh pages). The cache is capped by
// HD_CPU_CACHE_BYTES (default 8 GiB); allocation failures empty it and retry once.
class CpuAllocator final : public Allocator {
 public:
  static constexpr size_t kAlignment = 64;
  static constexpr size_t kCacheMin = 64 * 1024;
  CpuAllocator();
  ~CpuAllocator() override;
  void* allocate(size_t nbytes) override;
  void deallocate(void* ptr, size_t nbytes) override;
  MemoryStats stats() const override;
  void reset_peak() override;
  void empty_cache() override;
  // The block size actually reserved for a request of nbytes.
  static size_t size_class(size_t nbytes);

 private:
  std::atomic<int64_t> current_{0}, peak_{0}, allocations_{0};
  mutable std::mutex mutex_;
  std::unordered_map<size_t, std::vector<void*>> free_blocks_;  // by size class
  int64_t cached_bytes_ = 0;
  int64_t cache_limit_;
};

// The process-wide allocator for a device: part of the device registry, the one piece of
// global state the design allows.
Allocator& allocator_for(Device device);

}  // namespace hd
