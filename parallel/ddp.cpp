#include "parallel/ddp.h"

#include <cstring>

#include "autograd/error.h"
#include "ops/shape.h"

namespace hd::parallel {

DDP::DDP(Module& module, std::shared_ptr<ProcessGroup> pg, DDPOptions options)
    : pg_(std::move(pg)) {
  HD_CHECK(pg_, "DDP: a process group is required");
  std::vector<Tensor> params;
  for (auto& [name, t] : module.named_parameters()) {
    HD_CHECK(t.dtype() == DType::f32 && t.is_contiguous(), "DDP: parameter '", name, "' ", t.str(),
             " must be a contiguous f32 tensor");
    if (options.broadcast_parameters) pg_->broadcast(t, 0).wait();
    if (t.requires_grad()) params.push_back(t);
  }
  for (auto it = params.rbegin(); it != params.rend(); ++it) {
    if (buckets_.empty() || buckets_.back().numel * 4 >= options.bucket_bytes) {
      buckets_.emplace_back();
    }
    buckets_.back().params.push_back(*it);
    buckets_.back().numel += it->numel();
  }
  for (size_t b = 0; b < buckets_.size(); ++b) {
    for (Tensor& t : buckets_[b].params) {
      t.register_post_accumulate_hook([this, b](Tensor&) { on_ready(b); });
    }
  }
}

void DDP::on_ready(size_t index) {
  if (!sync_grads_) return;
  Bucket& b = buckets_[index];
  if (++b.ready == int(b.params.size())) launch(b);
}

void DDP::launch(Bucket& b) {
  b.flat = Tensor::empty({b.numel});
  float* dst = b.flat.data<float>();
  for (Tensor& t : b.params) {
    Tensor g = t.grad();
    if (g.defined()) {
      std::memcpy(dst, contiguous(g).data<float>(), t.nbytes());
    } else {
      std::memset(dst, 0, t.nbytes());
    }
    dst += t.numel();
  }
  b.work = pg_->all_reduce(b.flat, ReduceOp::avg);
}

void DDP::finish_backward() {
  if (!sync_grads_) return;
  for (Bucket& b : buckets_) {
    if (!b.work.valid()) launch(b);
  }
  for (Bucket& b : buckets_) {
    b.work.wait();
    const float* src = b.flat.data<float>();
    for (Tensor& t : b.params) {
      Tensor g = Tensor::empty(t.shape());
      std::memcpy(g.data<float>(), src, t.nbytes());
      t.set_grad(g);
      src += t.numel();
    }
    b.flat = Tensor();
    b.work = Work();
    b.ready = 0;
  }
}

}  // namespace hd::parallel
