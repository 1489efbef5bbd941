// FSDP schedule and state machine; see the notes in fsdp.h.
#include "parallel/fsdp.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "autograd/error.h"
#include "autograd/node.h"
#include "ops/shape.h"

namespace hd::parallel {

// --- FSDPUnit --------------------------------------------------------------------------------

void FSDPUnit::unshard_async() {
  if (state_ != State::sharded) return;
  const int n = owner_.pg_->world_size();
  Tensor in = Tensor::empty({shard_numel_});
  float* dst = in.data<float>();
  for (const FSDPParam& p : params_) {
    std::memcpy(dst + p.unit_offset, p.shard.data<float>(),
                size_t(p.info.padded_length) * sizeof(float));
  }
  gather_out_ = Tensor::empty({shard_numel_ * n});
  gather_work_ = owner_.pg_->all_gather(in, gather_out_);
  state_ = State::gathering;
  owner_.track_unsharded(+1);
}

void FSDPUnit::wait_unshard() {
  if (state_ == State::sharded) unshard_async();
  if (state_ != State::gathering) return;
  gather_work_.wait();
  const int n = owner_.pg_->world_size();
  const float* src = gather_out_.data<float>();
  for (FSDPParam& p : params_) {
    p.param.storage()->resize(size_t(p.info.global_numel()) * sizeof(float));
    float* full = p.param.data<float>();
    for (int r = 0; r < n; ++r) {
      copy_rows_in(p.info, r, src + int64_t(r) * shard_numel_ + p.unit_offset, full);
    }
  }
  gather_out_ = Tensor();
  gather_work_ = Work();
  state_ = State::unsharded;
}

void FSDPUnit::reshard() {
  if (state_ == State::sharded) return;
  if (state_ == State::gathering) gather_work_.wait();  // a prefetch nobody used
  gather_out_ = Tensor();
  gather_work_ = Work();
  for (FSDPParam& p : params_) p.param.storage()->resize(0);
  state_ = State::sharded;
  owner_.track_unsharded(-1);
}

Tensor FSDPUnit::forward(const Tensor& input, const std::function<Tensor(const Tensor&)>& body) {
  owner_.on_pre_forward(*this);
  wait_unshard();
  // Issue the next unit's all-gather now so it runs (on the communication thread) while this
  // unit computes. The order is last step's; the first step has none.
  if (FSDPUnit* next = owner_.neighbour(*this, +1)) next->unshard_async();
  Tensor out = body(input);
  if (options_.reshard_after_forward) reshard();
  if (out.defined() && out.requires_grad() && out.grad_fn()) {
    out.grad_fn()->add_pre_hook([this](std::vector<Tensor>&) { pre_backward(); });
  }
  owner_.on_post_forward(*this);
  return out;
}

void FSDPUnit::pre_backward() {
  wait_unshard();
  // The engine runs later units first, so the unit before this one in forward order is next.
  // The root (first in forward order) starts backward before every inner unit: its next is
  // the last unit of the forward.
  FSDPUnit* prev = owner_.neighbour(*this, -1);
  if (!prev && !owner_.order_.empty() && owner_.order_.front() == this) prev = owner_.order_.back();
  if (prev && prev != this) prev->unshard_async();
}

void FSDPUnit::on_grad_arrival() {
  grads_pending_ = true;
  int expected = 0;
  for (const FSDPParam& p : params_) expected += p.param.requires_grad();
  if (++arrivals_ == expected) post_backward();
}

void FSDPUnit::post_backward() {
  arrivals_ = 0;
  reshard();
  if (!owner_.sync_grads_ || !grads_pending_) return;  // accumulate full grads locally
  grads_pending_ = false;
  // One reduce-scatter buffer in flight at a time (FSDP2's contract): finish the previous one.
  if (owner_.pending_reduce_ && owner_.pending_reduce_ != this) {
    owner_.pending_reduce_->finish_reduce();
  }
  if (reduce_work_.valid()) finish_reduce();
  const int n = owner_.pg_->world_size();
  reduce_in_ = Tensor::empty({shard_numel_ * n});
  float* buf = reduce_in_.data<float>();
  for (FSDPParam& p : params_) {
    Tensor g = p.param.grad();
    for (int r = 0; r < n; ++r) {
      float* dst = buf + int64_t(r) * shard_numel_ + p.unit_offset;
      if (g.defined()) {
        Tensor gc = contiguous(g);
        copy_rows_out(p.info, r, gc.data<float>(), dst);
      } else {
        std::fill(dst, dst + p.info.padded_length, 0.0f);
      }
    }
    p.param.zero_grad();  // the full gradient is not needed any more
  }
  reduce_out_ = Tensor::empty({shard_numel_});
  reduce_work_ = owner_.pg_->reduce_scatter(reduce_in_, reduce_out_, ReduceOp::avg);
  owner_.pending_reduce_ = this;
}

void FSDPUnit::finish_reduce() {
  if (!reduce_work_.valid()) return;
  reduce_work_.wait();
  const float* src = reduce_out_.data<float>();
  for (FSDPParam& p : params_) {
    Tensor g = p.shard.grad();
    if (!g.defined()) {
      g = Tensor::empty(p.info.shard_shape());
      std::memcpy(g.data<float>(), src + p.unit_offset,
                  size_t(p.info.padded_length) * sizeof(float));
      p.shard.set_grad(g);
    } else {
      float* d = g.data<float>();
      for (int64_t i = 0; i < p.info.padded_length; ++i) d[i] += src[p.unit_offset + i];
    }
  }
  reduce_work_ = Work();
  reduce_in_ = reduce_out_ = Tensor();
  if (owner_.pending_reduce_ == this) owner_.pending_reduce_ = nullptr;
}

// --- FSDP ------------------------------------------------------------------------------------

FSDP::FSDP(Module& root, std::shared_ptr<ProcessGroup> pg) : root_(root), pg_(std::move(pg)) {
  HD_CHECK(pg_, "FSDP: a process group is required");
  for (auto& [name, t] : root_.named_parameters()) names_[t.impl_ptr().get()] = name;
}

FSDPUnit& FSDP::fully_shard(const Module& module, FSDPOptions options) {
  HD_CHECK(options.mixed_precision.param_dtype == DType::f32 &&
               options.mixed_precision.reduce_dtype == DType::f32,
           "fully_shard: the CPU path is fp32 only (mixed precision applies to device units)");
  std::string unit_name = "?";
  for (auto& [path, m] : root_.named_modules()) {
    if (m == &module) unit_name = path.empty() ? "<root>" : path;
  }
  HD_CHECK(unit_name != "?", "fully_shard: the module is not part of the root module");
  auto unit = std::unique_ptr<FSDPUnit>(new FSDPUnit(*this, unit_name, options));
  const int rank = pg_->rank(), n = pg_->world_size();
  for (auto& [local, t] : module.named_parameters()) {
    const TensorImpl* key = t.impl_ptr().get();
    if (owner_of_.count(key)) continue;  // sharded by an inner unit already
    const std::string& full = names_.at(key);
    // The unit buffers are staged through host memory (memcpy); device parameters need the
    // device-buffer path (NCCL + device copies), which is not written yet (docs/parallel.md).
    HD_CHECK(t.device().is_cpu(), "fully_shard: parameter '", full, "' is on ", t.device().str(),
             "; FSDP shards host (CPU) parameters only in this version");
    HD_CHECK(t.dtype() == DType::f32 && t.is_contiguous() && t.offset() == 0 &&
                 t.storage()->nbytes() == t.nbytes(),
             "fully_shard: parameter '", full, "' ", t.str(),
             " must be an f32 tensor owning its whole storage");
    FSDPParam p;
    p.info = make_shard_info(full, t.shape(), rank, n);
    p.param = t;
    p.shard = Tensor::empty(p.info.shard_shape());
    copy_rows_out(p.info, rank, t.data<float>(), p.shard.data<float>());
    p.shard.requires_grad_(true).set_name(full);
    p.unit_offset = unit->shard_numel_;
    unit->shard_numel_ += p.info.padded_length;
    FSDPUnit* u = unit.get();
    t.register_post_accumulate_hook([u](Tensor&) { u->on_grad_arrival(); });
    t.storage()->resize(0);
    owner_of_[key] = u;
    unit->params_.push_back(std::move(p));
  }
  units_.push_back(std::move(unit));
  return *units_.back();
}

void FSDP::on_pre_forward(FSDPUnit& unit) {
  if (forward_depth_++ == 0) recording_.clear();
  recording_.push_back(&unit);
}

void FSDP::on_post_forward(FSDPUnit&) {
  if (--forward_depth_ == 0) order_ = recording_;
}

FSDPUnit* FSDP::neighbour(const FSDPUnit& unit, int step) const {
  auto it = std::find(order_.begin(), order_.end(), &unit);
  if (it == order_.end()) return nullptr;
  int64_t i = (it - order_.begin()) + step;
  return i >= 0 && i < int64_t(order_.size()) ? order_[size_t(i)] : nullptr;
}

void FSDP::track_unsharded(int delta) {
  unsharded_ += delta;
  max_unsharded_ = std::max(max_unsharded_, unsharded_);
}

void FSDP::finish_backward() {
  for (auto& u : units_) {
    if (u->grads_pending_ && sync_grads_) u->post_backward();
    u->arrivals_ = 0;
    u->reshard();
  }
  if (pending_reduce_) pending_reduce_->finish_reduce();
}

std::vector<Tensor> FSDP::shards() const {
  std::vector<Tensor> out;
  for (auto& u : units_) {
    for (auto& p : u->params_) out.push_back(p.shard);
  }
  return out;
}

std::vector<ShardInfo> FSDP::shard_infos() const {
  std::vector<ShardInfo> out;
  for (auto& u : units_) {
    for (auto& p : u->params_) out.push_back(p.info);
  }
  return out;
}

std::vector<ParamGroup> FSDP::param_groups(double weight_decay, const DecayRule& rule) const {
  DecayGroups groups(weight_decay, rule);
  for (auto& u : units_) {
    // The rule looks at the parameter's rank; the module tensor keeps the global shape.
    for (auto& p : u->params_) groups.add(p.info.name, p.param, p.shard);
  }
  return groups.take();
}

double FSDP::clip_grad_norm(double max_norm) {
  std::vector<Tensor> s = shards();
  Tensor total = Tensor::empty({1}, DType::f64);
  total.data<double>()[0] = grad_norm_squared(s);  // padding rows hold zero gradients
  pg_->all_reduce(total, ReduceOp::sum).wait();
  double norm = std::sqrt(total.data<double>()[0]);
  if (!std::isfinite(norm)) return norm;
  double coef = max_norm / (norm + 1e-6);
  if (coef < 1.0) scale_grads(s, coef);
  return norm;
}

std::map<std::string, Tensor> FSDP::full_parameters() {
  std::map<std::string, Tensor> out;
  const int n = pg_->world_size();
  for (auto& u : units_) {
    Tensor in = Tensor::empty({u->shard_numel_});
    for (auto& p : u->params_) {
      std::memcpy(in.data<float>() + p.unit_offset, p.shard.data<float>(),
                  size_t(p.info.padded_length) * sizeof(float));
    }
    Tensor all = Tensor::empty({u->shard_numel_ * n});
    pg_->all_gather(in, all).wait();
    for (auto& p : u->params_) {
      Tensor full = Tensor::empty(p.info.global_shape);
      for (int r = 0; r < n; ++r) {
        copy_rows_in(p.info, r, all.data<float>() + int64_t(r) * u->shard_numel_ + p.unit_offset,
                     full.data<float>());
      }
      out[p.info.name] = full;
    }
  }
  return out;
}

}  // namespace hd::parallel
