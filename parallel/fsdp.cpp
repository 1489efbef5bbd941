// FSDP schedule and state machine; see the notes in fsdp.h.
#include "parallel/fsdp.h"

#include <algorithm>
#include <cmath>

#include "autograd/checkpoint.h"
#include "autograd/error.h"
#include "autograd/node.h"
#include "ops/elementwise.h"
#include "ops/factory.h"
#include "ops/shape.h"

namespace hd::parallel {
namespace {

bool is_16bit(DType t) {
  return t == DType::bf16 || t == DType::f16;
}

void check_policy(const MixedPrecisionPolicy& mp) {
  for (auto [what, t] :
       {std::pair{"param_dtype", mp.param_dtype}, std::pair{"reduce_dtype", mp.reduce_dtype}}) {
    HD_CHECK(t == DType::f32 || is_16bit(t), "fully_shard: mixed_precision.", what, " is ",
             dtype_name(t), "; expected f32, bf16 or f16");
  }
}

}  // namespace

// --- FSDPUnit --------------------------------------------------------------------------------

void FSDPUnit::unshard_async() {
  if (state_ != State::sharded) return;
  const int n = owner_.pg_->world_size();
  const DType dt = options_.mixed_precision.param_dtype;
  // The fp32 masters are rounded here, before the gather: the wire carries param_dtype.
  gather_in_ = pack_shards(params_, shard_numel_, dt, device_);
  gather_out_ = Tensor::empty({shard_numel_ * n}, dt, device_);
  gather_work_ = owner_.pg_->all_gather(gather_in_, gather_out_);
  state_ = State::gathering;
  owner_.track_unsharded(+1);
}

void FSDPUnit::wait_unshard() {
  if (state_ == State::sharded) unshard_async();
  if (state_ != State::gathering) return;
  gather_work_.wait();
  unpack_gathered(gather_out_, params_, shard_numel_);
  gather_in_ = gather_out_ = Tensor();
  gather_work_ = Work();
  state_ = State::unsharded;
}

void FSDPUnit::reshard() {
  if (state_ == State::sharded) return;
  if (state_ == State::gathering) gather_work_.wait();  // a prefetch nobody used
  gather_in_ = gather_out_ = Tensor();
  gather_work_ = Work();
  for (FSDPParam& p : params_) p.param.storage()->resize(0);
  state_ = State::sharded;
  owner_.track_unsharded(-1);
}

Tensor FSDPUnit::forward(const Tensor& input, const std::function<Tensor(const Tensor&)>& body) {
  owner_.on_pre_forward(*this);
  backward_done_ = false;
  wait_unshard();
  // Issue the next unit's all-gather now so it runs (on the communication thread) while this
  // unit computes. The order is last step's; the first step has none.
  if (FSDPUnit* next = owner_.neighbour(*this, +1)) next->unshard_async();
  // As FSDP2 (cast_forward_inputs): a floating input enters the unit in param_dtype, so the
  // unit's matmuls see one dtype. The cast is differentiable; the output stays in param_dtype.
  const DType dt = options_.mixed_precision.param_dtype;
  const bool cast =
      input.defined() && is_floating(input.dtype()) && input.dtype() != dt && dt != DType::f32;
  Tensor out = body(cast ? to(input, dt) : input);
  if (options_.reshard_after_forward) reshard();
  if (out.defined() && out.requires_grad() && out.grad_fn()) {
    out.grad_fn()->add_pre_hook([this](std::vector<Tensor>&) { pre_backward(); });
    if (is_recomputed_in_backward(out)) {
      ++recomputed_runs_;
    } else {
      plain_run_ = true;
    }
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
  // A unit whose gradients have all arrived is done for this step (the root when its only
  // parameters are the head's, used last in forward): gathering it again would be wasted bytes.
  if (prev && prev != this && !prev->backward_done_) prev->unshard_async();
}

void FSDPUnit::on_grad_arrival() {
  grads_pending_ = true;
  int expected = 0;
  for (const FSDPParam& p : params_) expected += p.param.requires_grad();
  // [Note: recomputed units]: one firing per recomputed run, one for all plain runs together.
  expected *= std::max(1, recomputed_runs_ + (plain_run_ ? 1 : 0));
  if (++arrivals_ == expected) post_backward();
}

void FSDPUnit::post_backward() {
  arrivals_ = 0;
  recomputed_runs_ = 0;
  plain_run_ = false;
  backward_done_ = true;
  reshard();
  if (!owner_.sync_grads_ || !grads_pending_) return;  // accumulate full grads locally
  grads_pending_ = false;
  // One reduce-scatter buffer in flight at a time (FSDP2's contract): finish the previous one.
  if (owner_.pending_reduce_ && owner_.pending_reduce_ != this) {
    owner_.pending_reduce_->finish_reduce();
  }
  if (reduce_work_.valid()) finish_reduce();
  const int n = owner_.pg_->world_size();
  const DType dt = options_.mixed_precision.reduce_dtype;
  reduce_in_ = pack_grads(params_, shard_numel_, n, dt, device_);
  for (FSDPParam& p : params_) p.param.zero_grad();  // the full gradients are not needed any more
  reduce_out_ = Tensor::empty({shard_numel_}, dt, device_);
  reduce_work_ = owner_.pg_->reduce_scatter(reduce_in_, reduce_out_, ReduceOp::avg);
  owner_.pending_reduce_ = this;
}

void FSDPUnit::finish_reduce() {
  if (!reduce_work_.valid()) return;
  reduce_work_.wait();
  accumulate_reduced(reduce_out_, params_);
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
  check_policy(options.mixed_precision);
  std::string unit_name = "?";
  for (auto& [path, m] : root_.named_modules()) {
    if (m == &module) unit_name = path.empty() ? "<root>" : path;
  }
  HD_CHECK(unit_name != "?", "fully_shard: the module is not part of the root module");
  auto unit = std::unique_ptr<FSDPUnit>(new FSDPUnit(*this, unit_name, options, pg_->device()));
  const int rank = pg_->rank(), n = pg_->world_size();
  for (auto& [local, t] : module.named_parameters()) {
    const TensorImpl* key = t.impl_ptr().get();
    if (owner_of_.count(key)) continue;  // sharded by an inner unit already
    const std::string& full = names_.at(key);
    // [Note: devices]: the collectives move tensors of one device kind; the unit's buffers live
    // where its parameters do.
    HD_CHECK(pg_->moves(t.device()) && (unit->params_.empty() || unit->device_ == t.device()),
             "fully_shard: parameter '", full, "' is on ", t.device().str(), " but the ",
             pg_->backend(), " process group moves tensors on ", pg_->device().str(),
             " (move the model there first, or use ",
             t.device().is_cpu() ? "the MPI group" : "the NCCL group",
             "; every parameter of a unit on one device)");
    if (unit->params_.empty()) unit->device_ = t.device();
    HD_CHECK(t.dtype() == DType::f32 && t.is_contiguous() && t.offset() == 0 &&
                 t.storage()->nbytes() == t.nbytes(),
             "fully_shard: parameter '", full, "' ", t.str(),
             " must be an f32 tensor owning its whole storage (the fp32 masters are cut from it; "
             "mixed_precision.param_dtype converts the module's copy)");
    FSDPParam p;
    p.info = make_shard_info(full, t.shape(), rank, n);
    p.param = t;
    p.shard = zeros(p.info.shard_shape(), DType::f32, t.device());  // padding rows stay 0
    if (p.info.length > 0) {
      NoGradGuard no_grad;
      Tensor valid = narrow(view(p.shard, {p.info.padded_length}), 0, 0, p.info.length);
      copy_(valid, narrow(view(t.detach(), {t.numel()}), 0, p.info.offset, p.info.length));
    }
    p.shard.requires_grad_(true).set_name(full);
    p.unit_offset = unit->shard_numel_;
    unit->shard_numel_ += p.info.padded_length;
    FSDPUnit* u = unit.get();
    t.register_post_accumulate_hook([u](Tensor&) { u->on_grad_arrival(); });
    t.storage()->resize(0);
    // From here the module's tensor is the compute copy: param_dtype, bytes only while the
    // unit is unsharded (same TensorImpl, so the module and its views stay valid).
    t.zero_grad();
    t.impl().dtype = options.mixed_precision.param_dtype;
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
    u->arrivals_ = u->recomputed_runs_ = 0;
    u->plain_run_ = false;
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
  // f64 on the shards' device: one all-reduce and one host read per step (padding rows hold zero
  // gradients).
  Tensor total =
      grad_norm_squared_tensor(s, units_.empty() ? pg_->device() : units_.front()->device_);
  pg_->all_reduce(total, ReduceOp::sum).wait();
  double norm = std::sqrt(total.item<double>());
  if (!std::isfinite(norm)) return norm;
  double coef = max_norm / (norm + 1e-6);
  if (coef < 1.0) scale_grads(s, coef);
  return norm;
}

std::map<std::string, Tensor> FSDP::full_parameters() {
  std::map<std::string, Tensor> out;
  const int n = pg_->world_size();
  for (auto& u : units_) {
    Tensor in = pack_shards(u->params_, u->shard_numel_, DType::f32, u->device_);
    Tensor all = Tensor::empty({u->shard_numel_ * n}, DType::f32, u->device_);
    pg_->all_gather(in, all).wait();
    for (auto& p : u->params_) {
      Tensor full = Tensor::empty(p.info.global_shape, DType::f32, u->device_);
      copy_gathered_rows(all, p, u->shard_numel_, full);
      out[p.info.name] = full;
    }
  }
  return out;
}

}  // namespace hd::parallel
