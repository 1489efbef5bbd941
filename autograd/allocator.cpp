#include "autograd/allocator.h"

#include <cstdlib>
#include <new>

#include "autograd/error.h"

namespace hd {

void* CpuAllocator::allocate(size_t nbytes) {
  size_t rounded = (nbytes + kAlignment - 1) / kAlignment * kAlignment;
  if (rounded == 0) rounded = kAlignment;
  void* p = std::aligned_alloc(kAlignment, rounded);
  if (!p) {
    throw Error(detail::concat("cpu allocator: out of memory allocating ", nbytes,
                               " bytes (currently allocated: ", current_.load(), " bytes)"));
  }
  int64_t now = current_.fetch_add(int64_t(nbytes)) + int64_t(nbytes);
  int64_t peak = peak_.load();
  while (now > peak && !peak_.compare_exchange_weak(peak, now)) {
  }
  allocations_.fetch_add(1);
  return p;
}

void CpuAllocator::deallocate(void* ptr, size_t nbytes) {
  if (!ptr) return;
  std::free(ptr);
  current_.fetch_sub(int64_t(nbytes));
}

MemoryStats CpuAllocator::stats() const {
  return {current_.load(), peak_.load(), allocations_.load()};
}

void CpuAllocator::reset_peak() { peak_.store(current_.load()); }

Allocator& allocator_for(Device device) {
  static CpuAllocator cpu;
  HD_CHECK(device.is_cpu(), "allocator_for: no allocator registered for device ", device.str(),
           " (this build has no CUDA backend, or it is not initialised)");
  return cpu;
}

}  // namespace hd
