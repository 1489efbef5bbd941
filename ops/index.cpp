#include "ops/index.h"

#include "autograd/node.h"
#include "ops/cpu/index.h"
#include "ops/cuda/kernels.h"
#include "ops/dispatch.h"
#include "ops/factory.h"
#include "ops/shape.h"

namespace hd {
namespace indexing {

Tensor index_i64(const char* op, const Tensor& index) {
  HD_CHECK(index.defined(), op, ": index is undefined");
  HD_CHECK(index.dtype() == DType::i64 || index.dtype() == DType::i32, op,
           ": index must be i64 or i32, got ", index.str());
  return index.dtype() == DType::i64 ? index.detach() : to(index.detach(), DType::i64);
}

void check_index_range(const char* op, const Tensor& index, int64_t size, int64_t dim,
                       const Shape& shape) {
  // One serial pass before any kernel runs, so a bad index is reported by value (and never
  // read out of bounds by a worker thread).
  for (int64_t v : index.to_vector<int64_t>()) {
    HD_CHECK(v >= 0 && v < size, op, ": index ", v, " is out of range for dim ", dim, " of size ",
             size, " (tensor shape ", shape, ")");
  }
}

static void split_dims(const Shape& shape, int64_t d, int64_t& outer, int64_t& n, int64_t& inner) {
  outer = 1;
  inner = 1;
  n = shape[size_t(d)];
  for (int64_t i = 0; i < d; ++i) outer *= shape[size_t(i)];
  for (size_t i = size_t(d) + 1; i < shape.size(); ++i) inner *= shape[i];
}

// [Note: index placement] index_select and index_add read their indices on the host (the CUDA
// kernels take a host array and copy it), gather and scatter_add read them in the kernel, on
// x's device. Each moves an index given on another device where it needs it, so callers may
// build indices on the host (from_vector) whatever device the data is on.
Tensor index_select_raw(const Tensor& x_in, int64_t d, const Tensor& idx) {
  Tensor x = contiguous(x_in.detach());
  Tensor ic = contiguous(to(idx, Device::cpu()));
  int64_t outer, n, inner;
  split_dims(x.shape(), d, outer, n, inner);
  Shape out_shape = x.shape();
  out_shape[size_t(d)] = ic.numel();
  Tensor out = Tensor::empty(out_shape, x.dtype(), x.device());
  dispatch(
      x, "index_select",
      [&] { cpu::index_select(x, outer, n, inner, ic.data<int64_t>(), ic.numel(), out); },
      HD_CUDA_KERNEL(cuda::index_select(x, outer, n, inner, ic.data<int64_t>(), ic.numel(), out)));
  return out;
}

void index_add_into(Tensor& out, int64_t d, const Tensor& idx, const Tensor& src_in) {
  Tensor src = contiguous(src_in.detach());
  Tensor ic = contiguous(to(idx, Device::cpu()));
  int64_t outer, n, inner;
  split_dims(out.shape(), d, outer, n, inner);
  dispatch(
      out, "index_add",
      [&] { cpu::index_add(out, outer, n, inner, ic.data<int64_t>(), ic.numel(), src); },
      HD_CUDA_KERNEL(cuda::index_add(out, outer, n, inner, ic.data<int64_t>(), ic.numel(), src)));
}

Tensor gather_raw(const Tensor& x, int64_t d, const Tensor& idx_in) {
  const Tensor idx = to(idx_in, x.device());  // [Note: index placement]
  Tensor out = Tensor::empty(idx.shape(), x.dtype(), x.device());
  Tensor xd = x.detach();
  dispatch(
      x, "gather", [&] { cpu::gather(xd, d, idx, out); },
      HD_CUDA_KERNEL(cuda::gather(xd, d, idx, out)));
  return out;
}

void scatter_add_into(Tensor& out, int64_t d, const Tensor& idx_in, const Tensor& src) {
  const Tensor idx = to(idx_in, out.device());  // [Note: index placement]
  Tensor sd = src.detach();
  dispatch(
      out, "scatter_add", [&] { cpu::scatter_add(out, d, idx, sd); },
      HD_CUDA_KERNEL(cuda::scatter_add(out, d, idx, sd)));
}

}  // namespace indexing

namespace {
using namespace indexing;

void check_addable(const char* op, const Tensor& x, const Tensor& src) {
  check_same_device(op, {&x, &src});
  check_same_dtype(op, x, src);
  HD_CHECK(x.dtype() != DType::boolean, op, ": cannot add bool tensors (", x.str(), ")");
}

struct IndexSelectBackward final : Node {
  Shape in_shape;
  int64_t dim = 0;
  Tensor index;  // i64, never modified by the user (our own copy or detached i64 input)
  std::string name() const override { return "IndexSelectBackward"; }
  std::vector<Tensor> backward(const std::vector<Tensor>& g) override {
    Tensor gx = zeros(in_shape, g[0].dtype(), g[0].device());
    index_add_into(gx, dim, index, g[0]);
    return {gx};
  }
};

struct GatherBackward final : Node {
  Shape in_shape;
  int64_t dim = 0;
  Tensor index;
  std::string name() const override { return "GatherBackward"; }
  std::vector<Tensor> backward(const std::vector<Tensor>& g) override {
    Tensor gx = zeros(in_shape, g[0].dtype(), g[0].device());
    scatter_add_into(gx, dim, index, g[0]);
    return {gx};
  }
};

struct IndexAddBackward final : Node {
  Shape src_shape;
  int64_t dim = 0;
  Tensor index;
  std::string name() const override { return "IndexAddBackward"; }
  std::vector<Tensor> backward(const std::vector<Tensor>& g) override {
    Tensor gsrc;
    if (needs_input_grad(1)) gsrc = reshape(index_select_raw(g[0], dim, index), src_shape);
    return {g[0], gsrc};
  }
};

struct ScatterAddBackward final : Node {
  Shape src_shape;
  int64_t dim = 0;
  Tensor index;
  std::string name() const override { return "ScatterAddBackward"; }
  std::vector<Tensor> backward(const std::vector<Tensor>& g) override {
    Tensor gsrc;
    if (needs_input_grad(1)) {
      gsrc = gather_raw(g[0], dim, index);
      if (gsrc.shape() != src_shape) {
        // Elements of src beyond index's extent were never scattered: zero gradient.
        std::vector<int64_t> pads;
        for (size_t d = src_shape.size(); d-- > 0;) {
          pads.push_back(0);
          pads.push_back(src_shape[d] - gsrc.shape()[d]);
        }
        gsrc = pad(gsrc, pads);
      }
    }
    return {g[0], gsrc};
  }
};

struct ScatterRowsBackward final : Node {
  Shape src_shape;
  int64_t size = 0;
  Tensor flat_index;  // b * size + index[b, i]
  std::string name() const override { return "ScatterRowsBackward"; }
  std::vector<Tensor> backward(const std::vector<Tensor>& g) override {
    Tensor g2 = reshape(g[0], {-1, src_shape[2]});
    return {reshape(index_select_raw(g2, 0, flat_index), src_shape)};
  }
};

}  // namespace

Tensor index_select(const Tensor& x, int64_t dim, const Tensor& index) {
  int64_t d = normalize_dim("index_select", dim, x.dim());
  Tensor idx = index_i64("index_select", index);
  HD_CHECK(idx.dim() <= 1, "index_select: index must be 0-D or 1-D, got ", idx.str());
  HD_CHECK(x.dim() >= 1, "index_select: input must have at least 1 dim, got ", x.str());
  check_index_range("index_select", idx, x.size(d), d, x.shape());
  idx = contiguous(reshape(idx, {-1}));
  Tensor out = index_select_raw(x, d, idx);
  if (auto node = make_grad_node<IndexSelectBackward>({&x})) {
    node->in_shape = x.shape();
    node->dim = d;
    node->index = clone(idx);
    set_history(out, node);
  }
  return out;
}

Tensor gather(const Tensor& x, int64_t dim, const Tensor& index) {
  int64_t d = normalize_dim("gather", dim, x.dim());
  Tensor idx = index_i64("gather", index);
  HD_CHECK(idx.dim() == x.dim(), "gather: index ", idx.shape(), " must have the rank of input ",
           x.shape());
  for (int64_t i = 0; i < x.dim(); ++i) {
    HD_CHECK(i == d || idx.size(i) <= x.size(i), "gather: index ", idx.shape(),
             " is larger than input ", x.shape(), " in dim ", i);
  }
  check_index_range("gather", idx, x.size(d), d, x.shape());
  Tensor out = gather_raw(x, d, idx);
  if (auto node = make_grad_node<GatherBackward>({&x})) {
    node->in_shape = x.shape();
    node->dim = d;
    node->index = clone(idx);  // the caller may reuse its index buffer
    set_history(out, node);
  }
  return out;
}

Tensor index_add(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& src) {
  int64_t d = normalize_dim("index_add", dim, x.dim());
  check_addable("index_add", x, src);
  Tensor idx = index_i64("index_add", index);
  HD_CHECK(idx.dim() <= 1, "index_add: index must be 0-D or 1-D, got ", idx.str());
  Shape want = x.shape();
  want[size_t(d)] = idx.numel();
  HD_CHECK(src.shape() == want, "index_add: src ", src.shape(), " must be ", want, " (input ",
           x.shape(), " with dim ", d, " of the index length ", idx.numel(), ")");
  check_index_range("index_add", idx, x.size(d), d, x.shape());
  idx = contiguous(reshape(idx, {-1}));
  Tensor out = clone(x.detach());
  index_add_into(out, d, idx, src);
  if (auto node = make_grad_node<IndexAddBackward>({&x, &src})) {
    node->src_shape = src.shape();
    node->dim = d;
    node->index = clone(idx);
    set_history(out, node);
  }
  return out;
}

Tensor scatter_add(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& src) {
  int64_t d = normalize_dim("scatter_add", dim, x.dim());
  check_addable("scatter_add", x, src);
  Tensor idx = index_i64("scatter_add", index);
  HD_CHECK(idx.dim() == x.dim() && src.dim() == x.dim(), "scatter_add: input ", x.shape(),
           ", index ", idx.shape(), " and src ", src.shape(), " must have one rank");
  for (int64_t i = 0; i < x.dim(); ++i) {
    HD_CHECK(idx.size(i) <= src.size(i) && (i == d || idx.size(i) <= x.size(i)),
             "scatter_add: index ", idx.shape(), " is larger than src ", src.shape(), " or input ",
             x.shape(), " in dim ", i);
  }
  check_index_range("scatter_add", idx, x.size(d), d, x.shape());
  Tensor out = clone(x.detach());
  scatter_add_into(out, d, idx, src);
  if (auto node = make_grad_node<ScatterAddBackward>({&x, &src})) {
    node->src_shape = src.shape();
    node->dim = d;
    node->index = clone(idx);
    set_history(out, node);
  }
  return out;
}

Tensor scatter_rows(const Tensor& src, const Tensor& index, int64_t size) {
  Tensor idx = index_i64("scatter_rows", index);
  HD_CHECK(
      src.dim() == 3 && idx.dim() == 2 && idx.size(0) == src.size(0) && idx.size(1) == src.size(1),
      "scatter_rows: expected src [B, N, C] and index [B, N], got src ", src.shape(), " and index ",
      idx.shape());
  HD_CHECK(size >= 0, "scatter_rows: negative size ", size);
  check_index_range("scatter_rows", idx, size, 1, {src.size(0), size, src.size(2)});
  int64_t B = src.size(0), N = src.size(1), C = src.size(2);
  // Rows of all batches as one [B * size, C] table: a single index_add with offset indices.
  std::vector<int64_t> flat = idx.to_vector<int64_t>();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < N; ++i) flat[size_t(b * N + i)] += b * size;
  Tensor flat_index = from_vector<int64_t>(flat, {B * N}, DType::i64, src.device());
  Tensor out = zeros({B * size, C}, src.dtype(), src.device());
  index_add_into(out, 0, flat_index, reshape(src.detach(), {B * N, C}));
  out = reshape(out, {B, size, C});
  if (auto node = make_grad_node<ScatterRowsBackward>({&src})) {
    node->src_shape = src.shape();
    node->size = size;
    node->flat_index = flat_index;
    set_history(out, node);
  }
  return out;
}

Tensor embedding(const Tensor& weight, const Tensor& ids) {
  HD_CHECK(weight.dim() == 2, "embedding: weight must be [V, D], got ", weight.str());
  Tensor idx = index_i64("embedding", ids);
  check_index_range("embedding", idx, weight.size(0), 0, weight.shape());
  Shape out_shape = idx.shape();
  out_shape.push_back(weight.size(1));
  return reshape(index_select(weight, 0, reshape(idx, {-1})), out_shape);
}

}  // namespace hd
