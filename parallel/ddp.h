// DDP: replicated parameters, gradients averaged by bucketed all-reduces that start during
// backward. For small models (no sharding overhead) and as FSDP's parity reference.
//
// Buckets hold parameters in reverse registration order (the order backward produces their
// gradients) up to bucket_bytes each. A parameter's post-accumulate hook marks it ready; when
// the last parameter of a bucket is ready, the bucket's gradients are packed and its all-reduce
// is issued on the group's communication thread, overlapping the rest of backward. Memory:
// every rank holds 16 Psi bytes (parameters, gradients, m, v) plus one flat buffer per bucket
// in flight. Communication: 2 Psi (N-1)/N elements per step in bus bytes.
#pragma once
#include <memory>
#include <vector>

#include "autograd/module.h"
#include "parallel/process_group.h"

namespace hd::parallel {

struct DDPOptions {
  int64_t bucket_bytes = 25 << 20;   // PyTorch's default
  bool broadcast_parameters = true;  // copy rank 0's parameters at construction
};

class DDP {
 public:
  DDP(Module& module, std::shared_ptr<ProcessGroup> pg, DDPOptions options = {});
  DDP(const DDP&) = delete;
  DDP& operator=(const DDP&) = delete;

  // Accumulation: with sync off, gradients accumulate locally and no all-reduce runs.
  void set_requires_gradient_sync(bool sync) { sync_grads_ = sync; }
  // After backward, before clipping/the optimizer: launches buckets that are not complete
  // (parameters without gradients count as zeros) and waits for every all-reduce.
  void finish_backward();
  size_t num_buckets() const { return buckets_.size(); }

 private:
  struct Bucket {
    std::vector<Tensor> params;
    int64_t numel = 0;
    int ready = 0;
    Tensor flat;
    Work work;
  };
  void on_ready(size_t bucket);
  void launch(Bucket& b);

  std::shared_ptr<ProcessGroup> pg_;
  std::vector<Bucket> buckets_;
  bool sync_grads_ = true;
};

}  // namespace hd::parallel
