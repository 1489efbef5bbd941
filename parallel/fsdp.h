// FSDP (ZeRO-3), FSDP2 style: parameters, gradients and optimizer state sharded per parameter.
//
// [Note: memory] Each rank keeps persistent fp32 state for its shards only: the shard (which is
// the optimizer's master copy), its gradient, and AdamW's m and v: 16 bytes x Psi / N plus the
// row padding (ZeRO paper, anchors C.7). Unsharded parameters exist only while a unit runs:
// the unit in use plus at most one prefetched unit (about two units, FSDP2's contract); the
// root stays unsharded through forward and backward when its reshard_after_forward is false.
// The unsharded gradients of the unit in backward live until its reduce-scatter is issued.
//
// [Note: communication] Per step and rank, in bus bytes: one all-gather of every unit before
// its forward, another before its backward when reshard_after_forward is true, and one
// reduce-scatter of its gradients after its backward: 3 Psi (N-1)/N elements (2 Psi without
// resharding, the price being the unit's full parameters kept from forward to backward). Each
// collective carries a whole unit (one flat buffer), not one parameter, so fixed costs are paid
// once per unit. With gradient sync off (accumulation), no reduce-scatter runs: the full
// gradients accumulate locally until the micro-batch with sync on.
//
// [Note: intercepting a unit] Our Module has no forward hooks (forward signatures vary by
// layer), so a unit's forward runs through FSDPUnit::forward(input, body): pre-forward
// all-gathers (waiting on a prefetch if one is in flight) and prefetches the next unit in the
// previous step's forward order; body runs the module; post-forward reshards and puts a
// pre-hook on the output's grad_fn, which all-gathers again before the unit's backward and
// prefetches the unit before it. Post-accumulate hooks on the unit's parameters count gradient
// arrivals; the last one issues the reduce-scatter. finish_backward() waits for it and covers
// parameters that received no gradient this step.
//
// [Note: recomputed units] A unit body wrapped in activation checkpointing (nn::recomputed) runs
// inside FSDPUnit::forward, so its recompute happens in the checkpoint node's backward, after
// the pre-hook's all-gather: the parameters are there. Each recompute is a nested backward pass
// of its own, in which every parameter's post-accumulate hook fires once, while all plain runs
// of the unit share one firing in the outer pass. A unit run several times per step (PS3's
// blocks: the low-res pass and each look-close step) would otherwise reach its arrival count
// after its first recomputed run and reduce-scatter a partial gradient (correct once summed, but
// one reduce-scatter and one all-gather more per extra run). So forward counts the recomputed
// runs, and the expected arrivals are (recomputed runs + 1 if any plain run) per parameter.
//
// [Note: storage] A parameter's TensorImpl and Storage objects are created once (by the module)
// and never replaced: resharding frees the bytes with Storage::resize(0) and unsharding
// re-creates them, so the module, views and tensors saved for backward all stay valid (FSDP2's
// resize-to-0). Between units a sharded parameter has no bytes: do not touch it outside the
// unit's forward/backward (use full_parameters() to read it).
//
// [Note: mixed precision] FSDP2's MixedPrecisionPolicy. The fp32 shard stays the master (the
// optimizer updates it; autograd/mixed_precision.h explains why bf16 weights cannot be updated
// directly). Before the all-gather each shard is rounded to param_dtype, so the gather moves
// 2 bytes per element with bf16 and the unsharded parameters (the module's tensors, converted to
// param_dtype by fully_shard) cost half the memory; a floating input is cast to param_dtype when
// it enters the unit. The full gradients come out of backward in param_dtype and are converted to
// reduce_dtype for the reduce-scatter: f32 (the default, and what we recommend) sums N ranks'
// bf16 gradients without compounding bf16 rounding at every hop of the ring; bf16 halves the
// traffic again. The reduced shard is added to the fp32 shard gradient. Communication per step is
// then Psi (N-1)/N x (2 or 1 gathers x sizeof(param_dtype) + sizeof(reduce_dtype)) bytes. On the
// CPU the bf16 kernels compute in f32 and round on store (as GPUs do), so the same policy runs
// and is tested here (tests/parallel/fsdp_mixed_precision_test.cpp).
//
// [Note: devices] One code path for host and device parameters: the unit buffers are packed and
// unpacked with tensor ops that run on the parameters' device (unit_buffers.h explains the
// stream ordering on a GPU), the shards live on the same device, and clipping reduces the squared
// norm on the device with one host read per step (not per tensor). So the CPU tests of this file's
// logic cover the device path; fully_shard only checks that the parameters are on the device the
// process group moves (host for MPI, the rank's GPU for NCCL). Prefetch overlap on a GPU: the
// next unit's all-gather is issued before this unit's forward, NCCL runs it on its own stream
// while the compute stream works, and the wait happens only when the next unit starts; it is a
// device-side wait (Work::wait on NCCL makes the compute stream wait for the collective's event),
// so the host never stops enqueueing kernels for it.
// Why no separate copy-in / copy-out streams (FSDP2 has them): FSDP2 needs them because its
// all-gather input is packed when the prefetch is issued, which may be after the compute
// stream already holds the current unit's kernels. Here the prefetch (forward: before this
// unit's body is enqueued; backward: in this unit's pre-backward hook, before its gradient
// kernels) packs first, so the packing kernels sit at the head of the compute queue and the
// NCCL stream starts right after them, overlapping the unit's compute; the copy-out must wait
// for the collective in any case. The reduce-scatter's result is consumed one unit later
// (finish_reduce), so it overlaps the next unit's backward. Whether the split leaves anything
// exposed is a GPU measurement (the step timer's all-gather wait, docs/cuda.md); a copy-in
// stream is the fix if it does.
#pragma once
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "autograd/module.h"
#include "autograd/optimizer.h"
#include "parallel/process_group.h"
#include "parallel/shard.h"
#include "parallel/unit_buffers.h"

namespace hd::parallel {

struct MixedPrecisionPolicy {
  DType param_dtype = DType::f32;   // compute and all-gather dtype
  DType reduce_dtype = DType::f32;  // reduce-scatter dtype
};

struct FSDPOptions {
  // true: free the unit's full parameters after forward and all-gather them again for backward
  // (3 Psi traffic, least memory). false: keep them until the unit's backward (2 Psi traffic).
  bool reshard_after_forward = true;
  MixedPrecisionPolicy mixed_precision;
};

class FSDP;

class FSDPUnit {
 public:
  // Runs `body` (the module's forward) with the unit's parameters unsharded.
  Tensor forward(const Tensor& input, const std::function<Tensor(const Tensor&)>& body);
  const std::vector<FSDPParam>& params() const { return params_; }
  const std::string& name() const { return name_; }
  int64_t shard_numel() const { return shard_numel_; }  // per rank, padded
  bool unsharded() const { return state_ != State::sharded; }

 private:
  friend class FSDP;
  enum class State { sharded, gathering, unsharded };
  FSDPUnit(FSDP& owner, std::string name, FSDPOptions options, Device device)
      : owner_(owner), name_(std::move(name)), options_(options), device_(device) {}
  void unshard_async();
  void wait_unshard();
  void reshard();
  void pre_backward();
  void on_grad_arrival();
  void post_backward();
  void finish_reduce();

  FSDP& owner_;
  std::string name_;
  FSDPOptions options_;
  Device device_;  // where the parameters, shards and unit buffers live (the group's device)
  std::vector<FSDPParam> params_;
  int64_t shard_numel_ = 0;
  State state_ = State::sharded;
  Work gather_work_;
  // The all-gather's input and output: both live until the gather has been waited for (on a
  // GPU NCCL reads the input on its own stream after unshard_async has returned).
  Tensor gather_in_, gather_out_;
  Work reduce_work_;
  Tensor reduce_in_, reduce_out_;
  int arrivals_ = 0;
  int recomputed_runs_ = 0;     // forwards since the last post_backward whose backward is nested
  bool plain_run_ = false;      // a forward since the last post_backward with an ordinary graph
  bool grads_pending_ = false;  // full gradients arrived since the last post_backward
  bool backward_done_ = false;  // post_backward ran since this unit's last forward
};

class FSDP {
 public:
  // `root` must be initialised (initialize(seed)) identically on every rank before sharding.
  FSDP(Module& root, std::shared_ptr<ProcessGroup> pg);
  FSDP(const FSDP&) = delete;
  FSDP& operator=(const FSDP&) = delete;

  // Shards `module`'s parameters not already owned by an earlier unit into one unit. Call it
  // bottom-up: each block, then the root (which takes everything left).
  FSDPUnit& fully_shard(const Module& module, FSDPOptions options = {});

  // Accumulation: with sync off, backward skips the reduce-scatter and full gradients
  // accumulate; turn it back on for the last micro-batch.
  void set_requires_gradient_sync(bool sync) { sync_grads_ = sync; }
  bool requires_gradient_sync() const { return sync_grads_; }
  // Call after backward, before clipping and the optimizer: waits for pending reduce-scatters
  // and reduces units whose parameters did not all receive gradients.
  void finish_backward();

  // Optimizer groups over the shards, decay decided from full names and global ranks.
  std::vector<ParamGroup> param_groups(double weight_decay, const DecayRule& rule = {}) const;
  std::vector<Tensor> shards() const;
  // Global-norm clipping on shards: the squared norm is all-reduced (f64). Returns the norm.
  double clip_grad_norm(double max_norm);
  // Every parameter unsharded into a new tensor, by full name (collective; for tests/export).
  std::map<std::string, Tensor> full_parameters();
  std::vector<ShardInfo> shard_infos() const;

  const std::vector<std::unique_ptr<FSDPUnit>>& units() const { return units_; }
  ProcessGroup& group() { return *pg_; }
  // Most units unsharded (or being gathered) at once since construction.
  int max_unsharded_units() const { return max_unsharded_; }

 private:
  friend class FSDPUnit;
  void on_pre_forward(FSDPUnit& unit);
  void on_post_forward(FSDPUnit& unit);
  FSDPUnit* neighbour(const FSDPUnit& unit, int step) const;
  void track_unsharded(int delta);

  Module& root_;
  std::shared_ptr<ProcessGroup> pg_;
  std::map<const TensorImpl*, std::string> names_;
  std::map<const TensorImpl*, FSDPUnit*> owner_of_;
  std::vector<std::unique_ptr<FSDPUnit>> units_;
  std::vector<FSDPUnit*> order_, recording_;  // forward order: last step's, this step's
  int forward_depth_ = 0;
  bool sync_grads_ = true;
  FSDPUnit* pending_reduce_ = nullptr;  // at most one reduce-scatter in flight
  int unsharded_ = 0, max_unsharded_ = 0;
};

}  // namespace hd::parallel
