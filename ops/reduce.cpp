#include "ops/reduce.h"

#include <algorithm>

#include "autograd/node.h"
#include "ops/cpu/reduce.h"
#include "ops/cuda/kernels.h"
#include "ops/dispatch.h"
#include "ops/elementwise.h"
#include "ops/factory.h"
#include "ops/shape.h"

namespace hd {
namespace {

std::vector<int64_t> normalize_dims(const char* op, const std::vector<int64_t>& dims, int64_t rank) {
  std::vector<int64_t> out;
  if (dims.empty()) {
    for (int64_t d = 0; d < rank; ++d) out.push_back(d);
    return out;
  }
  for (int64_t d : dims) out.push_back(normalize_dim(op, d, rank));
  std::sort(out.begin(), out.end());
  HD_CHECK(std::adjacent_find(out.begin(), out.end()) == out.end(), op, ": repeated dim in ", dims);
  return out;
}

Shape keepdim_shape(const Shape& in, const std::vector<int64_t>& dims) {
  Shape s = in;
  for (int64_t d : dims) s[size_t(d)] = 1;
  return s;
}

Shape drop_dims(const Shape& in, const std::vector<int64_t>& dims) {
  Shape s;
  for (size_t i = 0; i < in.size(); ++i) {
    if (std::find(dims.begin(), dims.end(), int64_t(i)) == dims.end()) s.push_back(in[i]);
  }
  return s;
}

// Reduces contiguous x along one dim (kept as size 1).
Tensor reduce_one(cpu::ReduceKind kind, const Tensor& x, int64_t d, Tensor* indices) {
  int64_t outer = 1, inner = 1, n = x.shape()[size_t(d)];
  for (int64_t i = 0; i < d; ++i) outer *= x.shape()[size_t(i)];
  for (int64_t i = d + 1; i < x.dim(); ++i) inner *= x.shape()[size_t(i)];
  Shape out_shape = x.shape();
  out_shape[size_t(d)] = 1;
  DType out_dtype = (kind == cpu::ReduceKind::sum && !is_floating(x.dtype())) ? DType::i64 : x.dtype();
  Tensor out = Tensor::empty(out_shape, out_dtype, x.device());
  if (indices) *indices = Tensor::empty(out_shape, DType::i64, x.device());
  dispatch(x, "reduce", [&] { cpu::reduce_dim(kind, x, outer, n, inner, out, indices); },
           HD_CUDA_KERNEL(cuda::reduce_dim(kind, x, outer, n, inner, out, indices)));
  return out;
}

struct SumBackward final : Node {
  Shape in_shape, keep_shape;
  std::string name() const override { return "SumBackward"; }
  std::vector<Tensor> backward(const std::vector<Tensor>& g) override {
    return {expand(reshape(g[0], keep_shape), in_shape)};
  }
};

struct ExtremeBackward final : Node {
  Shape in_shape, keep_shape;
  int64_t dim;
  SavedTensor indices;  // keepdim shape
  std::string name() const override { return "MaxMinBackward"; }
  void release_saved() override { indices.reset(); }
  std::vector<Tensor> backward(const std::vector<Tensor>& g) override {
    Tensor idx = indices.unpack(*this);
    Shape pos_shape(in_shape.size(), 1);
    pos_shape[size_t(dim)] = in_shape[size_t(dim)];
    Tensor positions = reshape(arange(0, double(in_shape[size_t(dim)]), 1, DType::i64, g[0].device()),
                               pos_shape);
    Tensor hit = eq(positions, idx);
    Tensor gk = reshape(g[0], keep_shape);
    return {where(hit, gk, zeros({}, gk.dtype(), gk.device()))};
  }
};

struct LogSumExpBackward final : Node {
  Shape keep_shape;
  SavedTensor x, result;
  std::string name() const override { return "LogSumExpBackward"; }
  void release_saved() override {
    x.reset();
    result.reset();
  }
  std::vector<Tensor> backward(const std::vector<Tensor>& g) override {
    Tensor p = exp(sub(x.unpack(*this), reshape(result.unpack(*this), keep_shape)));
    return {mul(reshape(g[0], keep_shape), p)};
  }
};

}  // namespace

Tensor sum(const Tensor& x, const std::vector<int64_t>& dims_in, bool keepdim) {
  std::vector<int64_t> dims = normalize_dims("sum", dims_in, x.dim());
  Tensor cur = contiguous(x.detach());
  if (x.dim() == 0) cur = clone(cur);
  if (cur.dtype() == DType::boolean) cur = to(cur, DType::i64);
  for (size_t k = dims.size(); k-- > 0;) cur = reduce_one(cpu::ReduceKind::sum, cur, dims[k], nullptr);
  Shape keep = keepdim_shape(x.shape(), dims);
  Tensor out = keepdim ? cur : cur.as_strided(drop_dims(x.shape(), dims),
                                              contiguous_strides(drop_dims(x.shape(), dims)), 0);
  if (auto node = make_grad_node<SumBackward>({&x})) {
    node->in_shape = x.shape();
    node->keep_shape = keep;
    set_history(out, node);
  }
  return out;
}

Tensor sum(const Tensor& x) { return sum(x, {}, false); }

Tensor mean(const Tensor& x, const std::vector<int64_t>& dims_in, bool keepdim) {
  HD_CHECK(is_floating(x.dtype()), "mean: needs a floating-point tensor, got ", x.str());
  std::vector<int64_t> dims = normalize_dims("mean", dims_in, x.dim());
  int64_t count = 1;
  for (int64_t d : dims) count *= x.shape()[size_t(d)];
  HD_CHECK(count > 0, "mean: reducing over zero elements of ", x.str());
  return mul(sum(x, dims, keepdim), 1.0 / double(count));
}

Tensor mean(const Tensor& x) { return mean(x, {}, false); }

static ValuesIndices extreme(bool is_max, const Tensor& x, int64_t dim, bool keepdim) {
  const char* op = is_max ? "max" : "min";
  int64_t d = normalize_dim(op, dim, x.dim());
  HD_CHECK(x.dim() > 0 && x.shape()[size_t(d)] > 0, op, ": empty dim ", dim, " in ", x.str());
  Tensor xc = contiguous(x.detach());
  Tensor idx;
  Tensor values = reduce_one(is_max ? cpu::ReduceKind::max : cpu::ReduceKind::min, xc, d, &idx);
  Shape keep = values.shape();
  if (!keepdim) {
    Shape s = drop_dims(x.shape(), {d});
    values = values.as_strided(s, contiguous_strides(s), 0);
  }
  if (auto node = make_grad_node<ExtremeBackward>({&x})) {
    node->in_shape = x.shape();
    node->keep_shape = keep;
    node->dim = d;
    node->indices = SavedTensor(idx);
    set_history(values, node);
  }
  if (!keepdim) {
    Shape s = drop_dims(x.shape(), {d});
    idx = idx.as_strided(s, contiguous_strides(s), 0);
  }
  return {values, idx};
}

ValuesIndices max(const Tensor& x, int64_t dim, bool keepdim) { return extreme(true, x, dim, keepdim); }
ValuesIndices min(const Tensor& x, int64_t dim, bool keepdim) { return extreme(false, x, dim, keepdim); }
Tensor amax(const Tensor& x) { return reshape(max(reshape(x, {-1}), 0).values, {}); }
Tensor argmax(const Tensor& x, int64_t dim, bool keepdim) {
  NoGradGuard no_grad;
  return max(x, dim, keepdim).indices;
}

Tensor logsumexp(const Tensor& x, int64_t dim, bool keepdim) {
  int64_t d = normalize_dim("logsumexp", dim, x.dim());
  HD_CHECK(is_floating(x.dtype()), "logsumexp: needs a floating-point tensor, got ", x.str());
  Tensor out = reduce_one(cpu::ReduceKind::logsumexp, contiguous(x.detach()), d, nullptr);
  Shape keep = out.shape();
  Tensor result = out;
  if (!keepdim) {
    Shape s = drop_dims(x.shape(), {d});
    result = out.as_strided(s, contiguous_strides(s), 0);
  }
  if (auto node = make_grad_node<LogSumExpBackward>({&x})) {
    node->keep_shape = keep;
    node->x = SavedTensor(x);
    node->result = SavedTensor(out);
    set_history(result, node);
  }
  return result;
}

Tensor sum_to(const Tensor& x, const Shape& shape) {
  if (x.shape() == shape) return x;
  int64_t lead = x.dim() - int64_t(shape.size());
  HD_CHECK(lead >= 0, "sum_to: cannot reduce ", x.shape(), " to ", shape);
  std::vector<int64_t> dims;
  for (int64_t d = 0; d < lead; ++d) dims.push_back(d);
  for (size_t i = 0; i < shape.size(); ++i) {
    int64_t have = x.shape()[size_t(lead) + i];
    HD_CHECK(shape[i] == have || shape[i] == 1, "sum_to: cannot reduce ", x.shape(), " to ", shape);
    if (shape[i] == 1 && have != 1) dims.push_back(lead + int64_t(i));
  }
  if (dims.empty()) return reshape(x, shape);
  return reshape(sum(x, dims, true), shape);
}

}  // namespace hd
