// Pinned host memory: the staging buffers that host->device copies read from.
//
// [Note: pinned host memory]
// A host->device copy from ordinary (pageable) memory makes the driver stage the bytes through
// its own page-locked buffer, and cudaMemcpyAsync returns only once that is done: the host
// waits for every batch it sends. From page-locked memory the copy is a DMA the stream runs
// later, and the host goes on at once (PyTorch's DataLoader(pin_memory=True) + non_blocking).
// The catch is lifetime: the host may drop its tensor while the copy is still queued, so a
// freed block must not be handed out again (and overwritten) until every copy that read it has
// finished. PyTorch's CachingHostAllocator solves it with an event per use; so do we:
//
//   - `to(host tensor, cuda:N)` records a ReadFence (a CUDA event on the copying stream) on the
//     source's block when the block comes from this allocator (ops/shape.cpp);
//   - a freed block goes to a cache with its fences, and allocate() reuses a cached block only
//     once all of them are done; otherwise it takes a new one from the backend.
//
// The caching policy is host logic, tested on the CPU (tests/autograd/pinned_host_test.cpp) with
// fences the test completes by hand; only the backend (cudaHostAlloc/cudaFreeHost) and the
// fence (cudaEventQuery) are CUDA. Without a CUDA device the registry's allocator hands out
// ordinary aligned host memory through the same cache (page_locked() is false), so code that
// asks for pinned buffers runs unchanged on the CPU machines.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "autograd/allocator.h"

namespace hd {

// Something that will be done once a queued reader of a block has finished (a CUDA event).
class ReadFence {
 public:
  virtual ~ReadFence() = default;
  virtual bool done() const = 0;
};

class PinnedHostAllocator final : public Allocator {
 public:
  struct Backend {
    std::function<void*(size_t)> allocate;  // nullptr on failure
    std::function<void(void*)> release;
    bool page_locked = false;
    std::string description;  // for `hdtrain info` and errors: "cudaHostAlloc", ...
  };
  explicit PinnedHostAllocator(Backend backend);
  ~PinnedHostAllocator() override;

  void* allocate(size_t nbytes) override;
  void deallocate(void* ptr, size_t nbytes) override;
  MemoryStats stats() const override;
  void reset_peak() override;
  // Releases every cached block whose readers have finished (the others stay cached).
  void empty_cache() override;

  // A queued reader of the live block that starts at `block` (a Storage's data pointer).
  // Throws if `block` is not a live block of this allocator.
  void record_read(const void* block, std::shared_ptr<ReadFence> fence);
  bool owns(const void* block) const;
  bool page_locked() const { return backend_.page_locked; }
  const std::string& description() const { return backend_.description; }

 private:
  struct Block {
    size_t size_class = 0;
    std::vector<std::shared_ptr<ReadFence>> readers;  // not yet known to be done
    bool settled();                                   // drops done readers; true when none left
  };
  Backend backend_;
  mutable std::mutex mutex_;
  std::unordered_map<void*, Block> live_;
  std::unordered_map<size_t, std::vector<std::pair<void*, Block>>> cached_;  // by size class
  int64_t current_ = 0, peak_ = 0, cached_bytes_ = 0, allocations_ = 0;
};

// The registry's pinned host allocator: page-locked through CUDA when a device is present,
// else ordinary host memory (see the note).
PinnedHostAllocator& pinned_host_allocator();

}  // namespace hd
