#include "parallel/checkpoint/host_staging.h"

#include "autograd/node.h"
#include "ops/elementwise.h"
#include "ops/shape.h"

namespace hd::parallel::ckpt {

HostStaging::HostStaging(const std::vector<ShardRef>& shards) : original_(shards), host_(shards) {
  for (size_t i = 0; i < shards.size(); ++i) {
    const Tensor& s = shards[i].shard;
    if (s.device() == Device::cpu()) continue;
    host_[i].shard = Tensor::empty(s.shape(), s.dtype(), Device::cpu());
    staged_.push_back(i);
  }
}

void HostStaging::to_host() {
  NoGradGuard no_grad;
  for (size_t i : staged_) {
    Tensor& dst = host_[i].shard;
    copy_(dst, to(original_[i].shard.detach(), Device::cpu()));
  }
}

void HostStaging::to_devices() {
  NoGradGuard no_grad;
  for (size_t i : staged_) {
    Tensor dst = original_[i].shard.detach();
    copy_(dst, to(host_[i].shard, dst.device()));
  }
}

}  // namespace hd::parallel::ckpt
