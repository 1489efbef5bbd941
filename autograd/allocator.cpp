#include "autograd/allocator.h"

#include <bit>
#include <cstdlib>
#include <string>

#include "autograd/error.h"
#ifdef HD_HAVE_CUDA
#include "ops/cuda/runtime.h"
#endif

namespace hd {

CpuAllocator::CpuAllocator() : cache_limit_(int64_t(8) << 30) {
  if (const char* env = std::getenv("HD_CPU_CACHE_BYTES")) {
    try {
      cache_limit_ = std::stoll(env);
    } catch (const std::exception&) {
      throw Error(detail::concat("HD_CPU_CACHE_BYTES must be a byte count, got '", env, "'"));
    }
  }
}

CpuAllocator::~CpuAllocator() { empty_cache(); }

size_t CpuAllocator::size_class(size_t nbytes) {
  size_t rounded = (std::max<size_t>(nbytes, 1) + kAlignment - 1) / kAlignment * kAlignment;
  if (rounded < kCacheMin) return rounded;
  // Round up to the next multiple of 1/8 of the enclosing power of two.
  size_t top = std::bit_floor(rounded);
  size_t step = std::max<size_t>(top / 8, kAlignment);
  return (rounded + step - 1) / step * step;
}

void* CpuAllocator::allocate(size_t nbytes) {
  size_t block = size_class(nbytes);
  void* p = nullptr;
  if (block >= kCacheMin) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = free_blocks_.find(block);
    if (it != free_blocks_.end() && !it->second.empty()) {
      p = it->second.back();
      it->second.pop_back();
      cached_bytes_ -= int64_t(block);
    }
  }
  if (!p) p = std::aligned_alloc(kAlignment, block);
  if (!p) {
    empty_cache();
    p = std::aligned_alloc(kAlignment, block);
  }
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
  current_.fetch_sub(int64_t(nbytes));
  size_t block = size_class(nbytes);
  if (block >= kCacheMin) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (cached_bytes_ + int64_t(block) <= cache_limit_) {
      free_blocks_[block].push_back(ptr);
      cached_bytes_ += int64_t(block);
      return;
    }
  }
  std::free(ptr);
}

MemoryStats CpuAllocator::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return {current_.load(), peak_.load(), cached_bytes_, allocations_.load()};
}

void CpuAllocator::reset_peak() { peak_.store(current_.load()); }

void CpuAllocator::empty_cache() {
  std::lock_guard<std::mutex> lock(mutex_);
  for (auto& [block, ptrs] : free_blocks_) {
    for (void* p : ptrs) std::free(p);
  }
  free_blocks_.clear();
  cached_bytes_ = 0;
}

Allocator& allocator_for(Device device) {
  static CpuAllocator cpu;
  if (device.is_cpu()) return cpu;
#ifdef HD_HAVE_CUDA
  // Throws "no CUDA device for cuda:N (<probe reason>)" on a machine without a GPU.
  return cuda::device_allocator(device.index);
#else
  throw Error(detail::concat("allocator_for: no allocator for ", device.str(),
                             " (this build has no CUDA backend: configured with HD_CUDA=OFF)"));
#endif
}

}  // namespace hd
