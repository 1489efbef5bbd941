// Checkpoint I/O on shards that live on a device.
//
// The writer (HDF5), the async snapshot and the reader all move shard bytes through host
// pointers. Shards on another device than the host (a GPU; the second host device of the
// placement tests, autograd/device.h) are staged: before a save, copied into host tensors that
// the I/O reads; for a load, the I/O fills host tensors that are then copied to the device.
// Host shards pass through untouched (no copy, no extra memory). The staging buffers are pinned
// host memory ([Note: pinned host memory], autograd/pinned_host.h): device-to-host copies from a
// GPU run at full DMA bandwidth straight into them (one copy, no pageable temporary), and the
// host-to-device copies of a resume are queued without blocking. Freed buffers stay in the
// pinned allocator's cache, so the next save reuses them instead of pinning fresh pages; that
// cache is the price, one rank's checkpointed bytes of pinned host memory.
#pragma once
#include <vector>

#include "parallel/checkpoint/checkpoint.h"

namespace hd::parallel::ckpt {

class HostStaging {
 public:
  explicit HostStaging(const std::vector<ShardRef>& shards);
  // What the checkpoint I/O should see: the host shards themselves, or their host copies.
  const std::vector<ShardRef>& host() const { return host_; }
  // Device -> host copies (before a save).
  void to_host();
  // Host -> device copies (after a load into host()).
  void to_devices();
  bool staged() const { return !staged_.empty(); }

 private:
  std::vector<ShardRef> original_, host_;
  std::vector<size_t> staged_;  // indices of the shards that are not on the host
};

}  // namespace hd::parallel::ckpt
