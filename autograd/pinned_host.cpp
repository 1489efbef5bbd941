#include "autograd/pinned_host.h"

#include <algorithm>
#include <cstdlib>

#include "autograd/error.h"
#ifdef HD_HAVE_CUDA
#include <cuda_runtime.h>

#include "ops/cuda/runtime.h"
#endif

namespace hd {

bool PinnedHostAllocator::Block::settled() {
  std::erase_if(readers, [](const std::shared_ptr<ReadFence>& f) { return f->done(); });
  return readers.empty();
}

PinnedHostAllocator::PinnedHostAllocator(Backend backend) : backend_(std::move(backend)) {}

PinnedHostAllocator::~PinnedHostAllocator() {
  // At exit: give the cached blocks back (live ones still belong to their storages).
  for (auto& [size, blocks] : cached_) {
    for (auto& [ptr, block] : blocks) backend_.release(ptr);
  }
}

void* PinnedHostAllocator::allocate(size_t nbytes) {
  const size_t size = CpuAllocator::size_class(nbytes);
  std::lock_guard<std::mutex> lock(mutex_);
  void* ptr = nullptr;
  auto it = cached_.find(size);
  if (it != cached_.end()) {
    auto& blocks = it->second;
    // The oldest freed block first: its readers are the likeliest to have finished.
    auto ready = std::find_if(blocks.begin(), blocks.end(),
                              [](std::pair<void*, Block>& b) { return b.second.settled(); });
    if (ready != blocks.end()) {
      ptr = ready->first;
      blocks.erase(ready);
      cached_bytes_ -= int64_t(size);
    }
  }
  if (!ptr) ptr = backend_.allocate(size);
  if (!ptr) {
    throw Error(detail::concat("pinned host allocator (", backend_.description,
                               "): out of memory allocating ", nbytes, " bytes (in use: ", current_,
                               " bytes, cached: ", cached_bytes_, " bytes)"));
  }
  live_[ptr] = Block{size, {}};
  current_ += int64_t(nbytes);
  peak_ = std::max(peak_, current_);
  ++allocations_;
  return ptr;
}

void PinnedHostAllocator::deallocate(void* ptr, size_t nbytes) {
  if (!ptr) return;
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = live_.find(ptr);
  if (it == live_.end()) return;  // not ours: never happens through Storage
  Block block = std::move(it->second);
  live_.erase(it);
  current_ -= int64_t(nbytes);
  cached_bytes_ += int64_t(block.size_class);
  cached_[block.size_class].emplace_back(ptr, std::move(block));
}

MemoryStats PinnedHostAllocator::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return {current_, peak_, cached_bytes_, allocations_};
}

void PinnedHostAllocator::reset_peak() {
  std::lock_guard<std::mutex> lock(mutex_);
  peak_ = current_;
}

void PinnedHostAllocator::empty_cache() {
  std::lock_guard<std::mutex> lock(mutex_);
  for (auto& [size, blocks] : cached_) {
    std::erase_if(blocks, [&](std::pair<void*, Block>& b) {
      if (!b.second.settled()) return false;
      backend_.release(b.first);
      cached_bytes_ -= int64_t(b.second.size_class);
      return true;
    });
  }
}

void PinnedHostAllocator::record_read(const void* block, std::shared_ptr<ReadFence> fence) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = live_.find(const_cast<void*>(block));
  HD_CHECK(it != live_.end(), "pinned host allocator: record_read on ", block,
           ", which is not a live pinned block");
  it->second.readers.push_back(std::move(fence));
}

bool PinnedHostAllocator::owns(const void* block) const {
  std::lock_guard<std::mutex> lock(mutex_);
  return live_.count(const_cast<void*>(block)) > 0;
}

namespace {

PinnedHostAllocator::Backend ordinary_host_backend(std::string why) {
  return {[](size_t n) { return std::aligned_alloc(CpuAllocator::kAlignment, n); },
          [](void* p) { std::free(p); }, false, std::move(why)};
}

PinnedHostAllocator::Backend registry_backend() {
#ifdef HD_HAVE_CUDA
  if (cuda::available()) {
    return {[](size_t n) -> void* {
              void* p = nullptr;
              return cudaHostAlloc(&p, n, cudaHostAllocPortable) == cudaSuccess ? p : nullptr;
            },
            [](void* p) { cudaFreeHost(p); }, true, "page-locked, cudaHostAlloc"};
  }
  return ordinary_host_backend("ordinary host memory: no CUDA device (" +
                               cuda::unavailable_reason() + ")");
#else
  return ordinary_host_backend("ordinary host memory: this build has no CUDA backend");
#endif
}

}  // namespace

PinnedHostAllocator& pinned_host_allocator() {
  static PinnedHostAllocator allocator(registry_backend());
  return allocator;
}

}  // namespace hd
