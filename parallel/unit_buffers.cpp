// Packing and unpacking of FSDP unit buffers with tensor ops; see [Note: one code path for host
// and device] in unit_buffers.h.
#include "parallel/unit_buffers.h"

#include <algorithm>

#include "autograd/error.h"
#include "autograd/node.h"
#include "autograd/storage.h"
#include "ops/elementwise.h"
#include "ops/shape.h"

namespace hd::parallel {
namespace {

// A 1-D view of `t`'s elements [start, start + n) (t contiguous), outside autograd.
Tensor flat_range(const Tensor& t, int64_t start, int64_t n) {
  return narrow(view(t.detach(), {t.numel()}), 0, start, n);
}

// First element of rank r's rows in the flattened global tensor, and how many of them are valid.
int64_t rank_start(const ShardInfo& info, int r) {
  return std::min<int64_t>(int64_t(r) * info.rows_per_rank * info.row_numel, info.global_numel());
}
int64_t rank_valid(const ShardInfo& info, int r) {
  return info.valid_rows(r) * info.row_numel;
}

}  // namespace

Tensor pack_shards(const std::vector<FSDPParam>& params, int64_t shard_numel, DType dtype,
                   Device device) {
  NoGradGuard no_grad;
  Tensor buf = Tensor::empty({shard_numel}, dtype, device);
  for (const FSDPParam& p : params) {
    Tensor dst = narrow(buf, 0, p.unit_offset, p.info.padded_length);
    copy_(dst, view(p.shard.detach(), {p.info.padded_length}));  // rounds f32 to dtype
  }
  return buf;
}

void copy_gathered_rows(const Tensor& gathered, const FSDPParam& p, int64_t shard_numel,
                        Tensor& full_out) {
  NoGradGuard no_grad;
  const int world = p.info.world_size;
  for (int r = 0; r < world; ++r) {
    const int64_t n = rank_valid(p.info, r);
    if (n == 0) continue;
    Tensor dst = flat_range(full_out, rank_start(p.info, r), n);
    copy_(dst, narrow(gathered, 0, int64_t(r) * shard_numel + p.unit_offset, n));
  }
}

void unpack_gathered(const Tensor& gathered, const std::vector<FSDPParam>& params,
                     int64_t shard_numel) {
  const size_t elem = dtype_size(gathered.dtype());
  for (const FSDPParam& p : params) {
    HD_CHECK(p.param.dtype() == gathered.dtype(), "fsdp: parameter '", p.info.name, "' is ",
             dtype_name(p.param.dtype()), " but its unit was gathered in ",
             dtype_name(gathered.dtype()));
    Storage& storage = *p.param.storage();
    PreserveVersion keep(storage);
    storage.resize(size_t(p.info.global_numel()) * elem);
    Tensor full = p.param.detach();
    copy_gathered_rows(gathered, p, shard_numel, full);
  }
}

Tensor pack_grads(const std::vector<FSDPParam>& params, int64_t shard_numel, int world_size,
                  DType dtype, Device device) {
  NoGradGuard no_grad;
  Tensor buf = Tensor::empty({shard_numel * world_size}, dtype, device);
  for (const FSDPParam& p : params) {
    Tensor g = p.param.grad();  // in param_dtype, full shape
    if (g.defined()) g = contiguous(g.dtype() == dtype ? g : to(g, dtype));
    for (int r = 0; r < world_size; ++r) {
      Tensor dst = narrow(buf, 0, int64_t(r) * shard_numel + p.unit_offset, p.info.padded_length);
      const int64_t n = g.defined() ? rank_valid(p.info, r) : 0;
      if (n > 0) {
        Tensor valid = narrow(dst, 0, 0, n);
        copy_(valid, flat_range(g, rank_start(p.info, r), n));
      }
      if (n < p.info.padded_length) {
        Tensor padding = narrow(dst, 0, n, p.info.padded_length - n);
        zero_(padding);
      }
    }
  }
  return buf;
}

void accumulate_reduced(const Tensor& reduced, const std::vector<FSDPParam>& params) {
  NoGradGuard no_grad;
  for (const FSDPParam& p : params) {
    Tensor part = narrow(reduced, 0, p.unit_offset, p.info.padded_length);
    if (part.dtype() != DType::f32) part = to(part, DType::f32);
    Tensor g = p.shard.grad();
    if (g.defined()) {
      Tensor g_flat = view(g, {p.info.padded_length});
      add_(g_flat, part);
    } else {
      Tensor shard = p.shard;  // a handle on the same tensor
      shard.set_grad(reshape(clone(part), p.info.shard_shape()));
    }
  }
}

}  // namespace hd::parallel
