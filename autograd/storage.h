// Storage: one allocation shared by every tensor that views it. The version counter lives here
// because all views of a buffer see the same in-place writes (autograd checks it on unpack).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "autograd/allocator.h"
#include "autograd/device.h"

namespace hd {

class Storage {
 public:
  Storage(size_t nbytes, Device device)
      : nbytes_(nbytes), device_(device), allocator_(&allocator_for(device)) {
    data_ = allocator_->allocate(nbytes);
  }
  // Host memory from another allocator than the device's (pinned staging buffers).
  Storage(size_t nbytes, Device device, Allocator& allocator)
      : nbytes_(nbytes), device_(device), allocator_(&allocator) {
    data_ = allocator_->allocate(nbytes);
  }
  ~Storage() { allocator_->deallocate(data_, nbytes_); }
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  size_t nbytes() const { return nbytes_; }
  Device device() const { return device_; }
  Allocator& allocator() const { return *allocator_; }
  // Frees or re-creates the bytes while keeping this Storage object, so every view and saved
  // tensor that shares it stays valid (FSDP2's resize-to-0: an unsharded parameter exists only
  // between its all-gather and its reshard). Contents after growing are uninitialised.
  void resize(size_t nbytes) {
    if (nbytes == nbytes_) return;
    allocator_->deallocate(data_, nbytes_);
    data_ = nullptr;
    nbytes_ = 0;
    data_ = allocator_->allocate(nbytes);
    nbytes_ = nbytes;
  }
  uint64_t version() const { return version_; }
  void bump_version() { ++version_; }
  // Only for PreserveVersion below.
  void restore_version(uint64_t v) { version_ = v; }

 private:
  void* data_ = nullptr;
  size_t nbytes_;
  Device device_;
  Allocator* allocator_;
  uint64_t version_ = 0;
};

// Keeps a storage's version counter across writes that put back the values it had when tensors
// saved for backward recorded it (PyTorch's _unsafe_preserve_version_counter, which FSDP2 uses
// for the same purpose): FSDP's all-gather before a unit's backward refills the parameter bytes
// that forward saved, and that must not read as "modified by an in-place operation".
class PreserveVersion {
 public:
  explicit PreserveVersion(Storage& s) : storage_(s), version_(s.version()) {}
  ~PreserveVersion() { storage_.restore_version(version_); }
  PreserveVersion(const PreserveVersion&) = delete;
  PreserveVersion& operator=(const PreserveVersion&) = delete;

 private:
  Storage& storage_;
  uint64_t version_;
};

}  // namespace hd
