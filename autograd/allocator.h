// Allocators hand out raw device memory and count it. The byte counters are what the metrics
// exporter reports as host/device memory current and peak.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "autograd/device.h"

namespace hd {

struct MemoryStats {
  int64_t current_bytes = 0;
  int64_t peak_bytes = 0;
  int64_t allocations = 0;  // total number of allocate() calls so far
};

class Allocator {
 public:
  virtual ~Allocator() = default;
  virtual void* allocate(size_t nbytes) = 0;
  virtual void deallocate(void* ptr, size_t nbytes) = 0;
  virtual MemoryStats stats() const = 0;
  virtual void reset_peak() = 0;
};

// 64-byte aligned host memory (a cache line and one AVX-512 register), so vector loads in the
// kernels never straddle lines at the start of a buffer.
class CpuAllocator final : public Allocator {
 public:
  static constexpr size_t kAlignment = 64;
  void* allocate(size_t nbytes) override;
  void deallocate(void* ptr, size_t nbytes) override;
  MemoryStats stats() const override;
  void reset_peak() override;

 private:
  std::atomic<int64_t> current_{0}, peak_{0}, allocations_{0};
};

// The process-wide allocator for a device: part of the device registry, the one piece of
// global state the design allows.
Allocator& allocator_for(Device device);

}  // namespace hd
