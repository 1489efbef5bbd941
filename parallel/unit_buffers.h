// A FSDP unit's collective buffers: the rank's shards packed into the all-gather input, the
// gathered buffer spread into the unsharded parameters, the full gradients packed into the
// reduce-scatter input, and the reduced part added into the fp32 shard gradients.
//
// [Note: one code path for host and device] Everything here is tensor ops (narrow, copy_,
// fill_, add_, to) on flat views, never a pointer read on the host, so it runs wherever the
// unit's tensors live. With the MPI group they are host tensors and host kernels. With the NCCL
// group they are device tensors: the packing kernels run on the compute stream, the NCCL stream
// waits for them through an event before the collective (nccl_backend.cpp), and the unpacking
// kernels run after Work::wait - FSDP2's copy-in / collective / copy-out, with no host-device
// synchronisation for packing. The state machine in fsdp.cpp (when to gather, what to prefetch,
// when to reshard and reduce) never looks at the device. The CPU tests of FSDP (parity with one
// process at 1-4 ranks, bytes per step = the ZeRO-3 formula, memory per rank, mixed precision)
// therefore run this exact code; only the kernels and the stream ordering need a GPU
// (tests/parallel/fsdp_cuda_test.cpp, run by docs/cuda.md's script).
//
// Buffer layout: a rank's unit buffer holds each parameter's padded shard at its unit_offset
// (shard_numel elements in all); the gathered buffer is world_size such buffers, rank-major.
// Trade-off against FSDP2's single fused split_with_sizes_copy: one small copy per parameter
// and rank (more kernel launches on a GPU for a unit of many small tensors), in exchange for no
// device-specific packing kernel.
#pragma once
#include <cstdint>
#include <vector>

#include "autograd/tensor.h"
#include "parallel/shard.h"

namespace hd::parallel {

// One parameter of a unit: the module's tensor (full shape, bytes only while unsharded) and the
// rank's fp32 shard (the optimizer's master copy; its .grad() is the sharded gradient), both on
// the same device.
struct FSDPParam {
  ShardInfo info;
  Tensor param;
  Tensor shard;
  int64_t unit_offset = 0;  // offset of this shard in the unit's per-rank flat buffer
};

// The rank's shards rounded to `dtype` at their unit offsets: the all-gather input.
Tensor pack_shards(const std::vector<FSDPParam>& params, int64_t shard_numel, DType dtype,
                   Device device);

// Re-creates each parameter's bytes and fills them with every rank's rows of `gathered`
// (world_size x shard_numel, rank-major, in the parameters' dtype). The parameters' version
// counters are kept (autograd/storage.h, PreserveVersion): the gather before backward puts back
// the values forward saved.
void unpack_gathered(const Tensor& gathered, const std::vector<FSDPParam>& params,
                     int64_t shard_numel);

// Every rank's rows of each parameter's full gradient (zeros where it has none, and in the
// padding), in `dtype`: the reduce-scatter input (world_size x shard_numel).
Tensor pack_grads(const std::vector<FSDPParam>& params, int64_t shard_numel, int world_size,
                  DType dtype, Device device);

// shard.grad (+)= this rank's reduced part (`reduced`, shard_numel elements of a float dtype),
// accumulated in f32.
void accumulate_reduced(const Tensor& reduced, const std::vector<FSDPParam>& params);

// Every rank's valid rows of `p` copied from `gathered` into `full_out` (contiguous, p's global
// shape, gathered's dtype): what unpack_gathered does per parameter, also used by
// FSDP::full_parameters() to build fresh tensors.
void copy_gathered_rows(const Tensor& gathered, const FSDPParam& p, int64_t shard_numel,
                        Tensor& full_out);

}  // namespace hd::parallel
