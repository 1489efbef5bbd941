// Differentiable all-gather of rows; see the notes in autograd_collectives.h.
#include "parallel/autograd_collectives.h"

#include <algorithm>
#include <cstring>

#include "autograd/error.h"
#include "autograd/node.h"
#include "ops/shape.h"

namespace hd::parallel {
namespace {

int64_t row_numel(const Shape& shape) {
  int64_t n = 1;
  for (size_t d = 1; d < shape.size(); ++d) n *= shape[d];
  return n;
}

// [counts[r] rows of rank r, ...] <-> [N * max_rows] padded slots, as raw row copies: these are
// buffers for the collectives, not part of any graph.
void unpad(const Tensor& padded, const std::vector<int64_t>& counts, int64_t max_rows,
           int64_t row_bytes, Tensor& out) {
  const char* src = static_cast<const char*>(padded.raw_data());
  char* dst = static_cast<char*>(out.raw_data());
  for (size_t r = 0; r < counts.size(); ++r) {
    std::memcpy(dst, src + int64_t(r) * max_rows * row_bytes, size_t(counts[r] * row_bytes));
    dst += counts[r] * row_bytes;
  }
}

void pad(const Tensor& rows, const std::vector<int64_t>& counts, int64_t max_rows,
         int64_t row_bytes, Tensor& padded) {
  const char* src = static_cast<const char*>(rows.raw_data());
  char* dst = static_cast<char*>(padded.raw_data());
  std::memset(dst, 0, padded.nbytes());
  for (size_t r = 0; r < counts.size(); ++r) {
    std::memcpy(dst + int64_t(r) * max_rows * row_bytes, src, size_t(counts[r] * row_bytes));
    src += counts[r] * row_bytes;
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
    const int64_t row_bytes = per_row * int64_t(dtype_size(g.dtype()));
    const int64_t n = pg_.world_size();
    Tensor padded = Tensor::empty({n * max_rows * per_row}, g.dtype(), g.device());
    pad(g, counts_, max_rows, row_bytes, padded);
    Tensor mine = Tensor::empty({max_rows * per_row}, g.dtype(), g.device());
    pg_.reduce_scatter(padded, mine, ReduceOp::sum).wait();
    Tensor out = Tensor::empty(local_shape_, g.dtype(), g.device());
    std::memcpy(out.raw_data(), mine.raw_data(), out.nbytes());
    return {out};
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
  Tensor t = Tensor::empty({1}, DType::i64);
  t.data<int64_t>()[0] = value;
  pg.all_reduce(t, ReduceOp::sum).wait();
  return t.data<int64_t>()[0];
}

GatheredRows all_gather_rows(const Tensor& x, ProcessGroup& pg) {
  HD_CHECK(x.defined() && x.dim() >= 1, "all_gather_rows: expected a tensor with a row dim, got ",
           x.defined() ? x.str() : std::string("an undefined tensor"));
  HD_CHECK(x.dtype() == DType::f32 || x.dtype() == DType::f64,
           "all_gather_rows: rows must be f32 or f64, got ", x.str());
  // The padding copies below are host memcpys; device rows need the NCCL path's copies.
  HD_CHECK(x.device().is_cpu(), "all_gather_rows: host tensors only for now, got ", x.str());
  const int n = pg.world_size();
  GatheredRows out;
  {
    Tensor mine = Tensor::empty({1}, DType::i64), all = Tensor::empty({n}, DType::i64);
    mine.data<int64_t>()[0] = x.size(0);
    pg.all_gather(mine, all).wait();
    out.counts = all.to_vector<int64_t>();
  }
  const int64_t max_rows = *std::max_element(out.counts.begin(), out.counts.end());
  int64_t total = 0;
  for (int64_t c : out.counts) total += c;
  const int64_t per_row = row_numel(x.shape());
  const int64_t row_bytes = per_row * int64_t(dtype_size(x.dtype()));

  Tensor local = contiguous(x.detach());
  Tensor send = Tensor::empty({max_rows * per_row}, x.dtype(), x.device());
  std::memset(send.raw_data(), 0, send.nbytes());
  std::memcpy(send.raw_data(), local.raw_data(), local.nbytes());
  Tensor recv = Tensor::empty({int64_t(n) * max_rows * per_row}, x.dtype(), x.device());
  pg.all_gather(send, recv).wait();

  Shape shape = x.shape();
  shape[0] = total;
  Tensor all = Tensor::empty(shape, x.dtype(), x.device());
  unpad(recv, out.counts, max_rows, row_bytes, all);
  if (auto node = make_grad_node<AllGatherRowsBackward>({&x}, pg, out.counts, x.shape())) {
    set_history(all, node);
  }
  out.all = all;
  return out;
}

}  // namespace hd::parallel
