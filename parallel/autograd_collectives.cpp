// Differentiable all-gather of rows; see the notes in autograd_collectives.h.
#include "parallel/autograd_collectives.h"

#include <algorithm>

#include "autograd/error.h"
#include "autograd/node.h"
#include "ops/elementwise.h"
#include "ops/factory.h"
#include "ops/shape.h"

namespace hd::parallel {
namespace {

int64_t row_numel(const Shape& shape) {
  int64_t n = 1;
  for (size_t d = 1; d < shape.size(); ++d) n *= shape[d];
  return n;
}

// [counts[r] rows of rank r, ...] <-> [N * max_rows] padded slots. Buffers for the collectives,
// not part of any graph; copies by tensor ops (narrow + copy_ on flat views), so host and device
// rows (MPI and NCCL groups) take the same path, as FSDP's unit buffers do.
void unpad(const Tensor& padded, const std::vector<int64_t>& counts, int64_t max_rows,
           int64_t per_row, Tensor& out) {
  NoGradGuard no_grad;
  Tensor flat_out = view(out, {out.numel()});
  int64_t at = 0;
  for (size_t r = 0; r < counts.size(); ++r) {
    const int64_t n = counts[r] * per_row;
    if (n > 0) {
      Tensor dst = narrow(flat_out, 0, at, n);
      copy_(dst, narrow(padded, 0, int64_t(r) * max_rows * per_row, n));
    }
    at += n;
  }
}

void pad(const Tensor& rows, const std::vector<int64_t>& counts, int64_t max_rows,
         int64_t per_row, Tensor& padded) {
  NoGradGuard no_grad;
  zero_(padded);
  Tensor flat_rows = view(rows, {rows.numel()});
  int64_t at = 0;
  for (size_t r = 0; r < counts.size(); ++r) {
    const int64_t n = counts[r] * per_row;
    if (n > 0) {
      Tensor dst = narrow(padded, 0, int64_t(r) * max_rows * per_row, n);
      copy_(dst, narrow(flat_rows, 0, at, n));
    }
    at += n;
  }
}

class AllGatherRowsBackward final : public Node {
 public:
  AllGatherRowsBackward(ProcessGroup& pg, std::vector<int64_t> counts, Shape local_shape)
      : pg_(pg), counts_(std::move(counts)), local_shape_(std::move(local_shape)) {}
  std::string name() const override { return "AllGatherRowsBackward"; }

  std::vector<Tensor> backward(const std::vector<Tensor>& grad_outputs) override {
    Tensor g = contiguous(grad_outputs.at(0));
    const int64_t max_rows = *std::max_element(counts_.begin(), counts_.end());
    const int64_t per_row = row_numel(g.shape());
    const int64_t n = pg_.world_size();
    Tensor padded = Tensor::empty({n * max_rows * per_row}, g.dtype(), g.device());
    pad(g, counts_, max_rows, per_row, padded);
    Tensor mine = Tensor::empty({max_rows * per_row}, g.dtype(), g.device());
    pg_.reduce_scatter(padded, mine, ReduceOp::sum).wait();
    NoGradGuard no_grad;
    const int64_t local = shape_numel(local_shape_);
    return {reshape(clone(narrow(mine, 0, 0, local)), local_shape_)};
  }

 private:
  ProcessGroup& pg_;
  std::vector<int64_t> counts_;
  Shape local_shape_;
};

}  // namespace

int64_t GatheredRows::offset(int rank) const {
  HD_CHECK(rank >= 0 && rank < int(counts.size()), "GatheredRows::offset: rank ", rank, " of ",
           counts.size());
  int64_t o = 0;
  for (int r = 0; r < rank; ++r) o += counts[size_t(r)];
  return o;
}

int64_t all_reduce_count(int64_t value, ProcessGroup& pg) {
  Tensor t = from_vector<int64_t>({value}, {1}, DType::i64, pg.device());  // the group's device
  pg.all_reduce(t, ReduceOp::sum).wait();
  return t.item<int64_t>();
}

GatheredRows all_gather_rows(const Tensor& x, ProcessGroup& pg) {
  HD_CHECK(x.defined() && x.dim() >= 1, "all_gather_rows: expected a tensor with a row dim, got ",
           x.defined() ? x.str() : std::string("an undefined tensor"));
  HD_CHECK(x.dtype() == DType::f32 || x.dtype() == DType::f64,
           "all_gather_rows: rows must be f32 or f64, got ", x.str());
  const int n = pg.world_size();
  GatheredRows out;
  {
    // The row counts travel on the group's device (the host for MPI, the GPU for NCCL).
    Tensor mine = from_vector<int64_t>({x.size(0)}, {1}, DType::i64, pg.device());
    Tensor all = Tensor::empty({n}, DType::i64, pg.device());
    pg.all_gather(mine, all).wait();
    out.counts = all.to_vector<int64_t>();
  }
  const int64_t max_rows = *std::max_element(out.counts.begin(), out.counts.end());
  int64_t total = 0;
  for (int64_t c : out.counts) total += c;
  const int64_t per_row = row_numel(x.shape());

  Tensor local = contiguous(x.detach());
  Tensor send = zeros({max_rows * per_row}, x.dtype(), x.device());
  if (local.numel() > 0) {
    NoGradGuard no_grad;
    Tensor dst = narrow(send, 0, 0, local.numel());
    copy_(dst, view(local, {local.numel()}));
  }
  Tensor recv = Tensor::empty({int64_t(n) * max_rows * per_row}, x.dtype(), x.device());
  pg.all_gather(send, recv).wait();

  Shape shape = x.shape();
  shape[0] = total;
  Tensor all = Tensor::empty(shape, x.dtype(), x.device());
  unpad(recv, out.counts, max_rows, per_row, all);
  if (auto node = make_grad_node<AllGatherRowsBackward>({&x}, pg, out.counts, x.shape())) {
    set_history(all, node);
  }
  out.all = all;
  return out;
}

}  // namespace hd::parallel
