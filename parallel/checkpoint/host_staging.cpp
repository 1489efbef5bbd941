#include "parallel/checkpoint/host_staging.h"

#include "autograd/node.h"
#include "ops/elementwise.h"
#include "ops/shape.h"

namespace hd::parallel::ckpt {

HostStaging::HostStaging(const std::vector<ShardRef>& shards) : original_(shards), host_(shards) {
  for (size_t i = 0; i < shards.size(); ++i) {
    const Tensor& s = shards[i].shard;
    if (s.device() == Device::cpu()) continue;
    host_[i].shard = Tensor::empty_pinned(s.shape(), s.dtype());
    staged_.push_back(i);
  }
}

void HostStaging::to_host() {
  NoGradGuard no_grad;
  for (size_t i : staged_) {
    copy_to_device_(host_[i].shard, original_[i].shard);
  }
}

void HostStaging::to_devices() {
  NoGradGuard no_grad;
  for (size_t i : staged_) {
    Tensor dst = original_[i].shard.detach();
    copy_to_device_(dst, host_[i].shard);
  }
}

}  // namespace hd::parallel::ckpt
