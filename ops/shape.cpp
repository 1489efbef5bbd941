#include "ops/shape.h"

#include <algorithm>
#include <cstring>
#include <numeric>

#include "autograd/node.h"
#include "autograd/pinned_host.h"
#include "ops/cpu/elementwise.h"
#include "ops/cuda/kernels.h"
#include "ops/dispatch.h"
#include "ops/elementwise.h"
#include "ops/factory.h"
#include "ops/reduce.h"
#ifdef HD_HAVE_CUDA
#include "ops/cuda/runtime.h"
#endif

namespace hd {
namespace {

Shape infer_shape(const char* op, const Tensor& x, Shape shape) {
  int64_t known = 1, infer_at = -1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == -1) {
      HD_CHECK(infer_at < 0, op, ": more than one -1 in shape ", shape);
      infer_at = int64_t(i);
    } else {
      HD_CHECK(shape[i] >= 0, op, ": invalid size in shape ", shape);
      known *= shape[i];
    }
  }
  if (infer_at >= 0) {
    HD_CHECK(known > 0 && x.numel() % known == 0, op, ": cannot reshape ", x.shape(), " into ",
             shape);
    shape[size_t(infer_at)] = x.numel() / known;
  }
  HD_CHECK(shape_numel(shape) == x.numel(), op, ": cannot reshape ", x.shape(), " (", x.numel(),
           " elements) into ", shape);
  return shape;
}

// Gradient of any view: reshape / permute / narrow / expand ... all map back by a rule below.
struct ReshapeBackward final : Node {
  Shape in_shape;
  std::string name() const override { return "ReshapeBackward"; }
  std::vector<Tensor> backward(const std::vector<Tensor>& g) override {
    return {reshape(g[0], in_shape)};
  }
};

struct PermuteBackward final : Node {
  std::vector<int64_t> inverse;
  std::string name() const override { return "PermuteBackward"; }
  std::vector<Tensor> backward(const std::vector<Tensor>& g) override {
    return {permute(g[0], inverse)};
  }
};

// narrow / slice / select: scatter the gradient into zeros of the input's shape.
struct StridedSliceBackward final : Node {
  Shape in_shape;
  int64_t dim, start, step;
  bool dropped_dim;
  std::string name() const override { return "SliceBackward"; }
  std::vector<Tensor> backward(const std::vector<Tensor>& g) override {
    Tensor gx = zeros(in_shape, g[0].dtype(), g[0].device());
    Tensor src = dropped_dim ? unsqueeze(g[0], dim) : g[0];
    int64_t len = src.shape()[size_t(dim)];
    Tensor window = slice(gx, dim, start, start + (len - 1) * step + 1, step);
    copy_(window, src);
    return {gx};
  }
};

struct ExpandBackward final : Node {
  Shape in_shape;
  std::string name() const override { return "ExpandBackward"; }
  std::vector<Tensor> backward(const std::vector<Tensor>& g) override {
    return {sum_to(g[0], in_shape)};
  }
};

struct IdentityBackward final : Node {
  std::string label;
  explicit IdentityBackward(std::string l) : label(std::move(l)) {}
  std::string name() const override { return label; }
  std::vector<Tensor> backward(const std::vector<Tensor>& g) override { return {g[0]}; }
};

struct ToDTypeBackward final : Node {
  DType in_dtype;
  std::string name() const override { return "ToDTypeBackward"; }
  std::vector<Tensor> backward(const std::vector<Tensor>& g) override {
    return {to(g[0], in_dtype)};
  }
};

struct ToDeviceBackward final : Node {
  Device in_device;
  std::string name() const override { return "ToDeviceBackward"; }
  std::vector<Tensor> backward(const std::vector<Tensor>& g) override {
    return {to(g[0], in_device)};
  }
};

Tensor make_view(const Tensor& x, const Shape& shape, const Shape& strides, int64_t offset) {
  return x.as_strided(shape, strides, offset);
}

}  // namespace

Tensor view(const Tensor& x, Shape shape) {
  shape = infer_shape("view", x, std::move(shape));
  HD_CHECK(x.is_contiguous(), "view: ", x.str(),
           " is not contiguous; use reshape (which copies) or contiguous() first");
  Tensor out = make_view(x, shape, contiguous_strides(shape), x.offset());
  if (auto node = make_grad_node<ReshapeBackward>({&x})) {
    node->in_shape = x.shape();
    set_history(out, node);
  }
  return out;
}

Tensor reshape(const Tensor& x, Shape shape) {
  shape = infer_shape("reshape", x, std::move(shape));
  if (x.is_contiguous()) return view(x, shape);
  return view(contiguous(x), shape);
}

Tensor flatten(const Tensor& x, int64_t start_dim, int64_t end_dim) {
  if (x.dim() == 0) return reshape(x, {1});
  int64_t s = normalize_dim("flatten", start_dim, x.dim());
  int64_t e = normalize_dim("flatten", end_dim, x.dim());
  HD_CHECK(s <= e, "flatten: start_dim ", start_dim, " after end_dim ", end_dim);
  Shape shape(x.shape().begin(), x.shape().begin() + s);
  int64_t n = 1;
  for (int64_t d = s; d <= e; ++d) n *= x.shape()[size_t(d)];
  shape.push_back(n);
  shape.insert(shape.end(), x.shape().begin() + e + 1, x.shape().end());
  return reshape(x, shape);
}

Tensor permute(const Tensor& x, const std::vector<int64_t>& dims) {
  HD_CHECK(int64_t(dims.size()) == x.dim(), "permute: ", dims.size(), " dims given for ", x.str());
  std::vector<int64_t> d(dims.size()), inverse(dims.size());
  std::vector<bool> used(dims.size(), false);
  Shape shape(dims.size()), strides(dims.size());
  for (size_t i = 0; i < dims.size(); ++i) {
    d[i] = normalize_dim("permute", dims[i], x.dim());
    HD_CHECK(!used[size_t(d[i])], "permute: repeated dim in ", dims);
    used[size_t(d[i])] = true;
    shape[i] = x.shape()[size_t(d[i])];
    strides[i] = x.strides()[size_t(d[i])];
    inverse[size_t(d[i])] = int64_t(i);
  }
  Tensor out = make_view(x, shape, strides, x.offset());
  if (auto node = make_grad_node<PermuteBackward>({&x})) {
    node->inverse = inverse;
    set_history(out, node);
  }
  return out;
}

Tensor transpose(const Tensor& x, int64_t dim0, int64_t dim1) {
  std::vector<int64_t> dims(size_t(x.dim()));
  std::iota(dims.begin(), dims.end(), 0);
  std::swap(dims[size_t(normalize_dim("transpose", dim0, x.dim()))],
            dims[size_t(normalize_dim("transpose", dim1, x.dim()))]);
  return permute(x, dims);
}

Tensor slice(const Tensor& x, int64_t dim, int64_t start, int64_t end, int64_t step) {
  dim = normalize_dim("slice", dim, x.dim());
  int64_t size = x.shape()[size_t(dim)];
  HD_CHECK(step >= 1, "slice: step must be >= 1, got ", step);
  if (start < 0) start += size;
  if (end < 0) end += size;
  start = std::clamp<int64_t>(start, 0, size);
  end = std::clamp<int64_t>(end, start, size);
  Shape shape = x.shape(), strides = x.strides();
  shape[size_t(dim)] = (end - start + step - 1) / step;
  strides[size_t(dim)] *= step;
  Tensor out = make_view(x, shape, strides, x.offset() + start * x.strides()[size_t(dim)]);
  if (auto node = make_grad_node<StridedSliceBackward>({&x})) {
    node->in_shape = x.shape();
    node->dim = dim;
    node->start = start;
    node->step = step;
    node->dropped_dim = false;
    set_history(out, node);
  }
  return out;
}

Tensor narrow(const Tensor& x, int64_t dim, int64_t start, int64_t length) {
  int64_t d = normalize_dim("narrow", dim, x.dim());
  int64_t size = x.shape()[size_t(d)];
  HD_CHECK(start >= 0 && length >= 0 && start + length <= size, "narrow: range [", start, ", ",
           start + length, ") out of bounds for dim ", dim, " of ", x.str());
  return slice(x, d, start, start + length, 1);
}

Tensor select(const Tensor& x, int64_t dim, int64_t index) {
  int64_t d = normalize_dim("select", dim, x.dim());
  int64_t size = x.shape()[size_t(d)];
  HD_CHECK(index >= -size && index < size, "select: index ", index, " out of range for dim ", dim,
           " of ", x.str());
  if (index < 0) index += size;
  Shape shape = x.shape(), strides = x.strides();
  int64_t offset = x.offset() + index * strides[size_t(d)];
  shape.erase(shape.begin() + d);
  strides.erase(strides.begin() + d);
  Tensor out = make_view(x, shape, strides, offset);
  if (auto node = make_grad_node<StridedSliceBackward>({&x})) {
    node->in_shape = x.shape();
    node->dim = d;
    node->start = index;
    node->step = 1;
    node->dropped_dim = true;
    set_history(out, node);
  }
  return out;
}

Tensor expand(const Tensor& x, const Shape& shape) {
  HD_CHECK(int64_t(shape.size()) >= x.dim(), "expand: cannot expand ", x.shape(), " to ", shape);
  size_t lead = shape.size() - size_t(x.dim());
  Shape out_shape(shape.size()), strides(shape.size(), 0);
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i < lead) {
      HD_CHECK(shape[i] >= 0, "expand: -1 not allowed in new leading dim of ", shape);
      out_shape[i] = shape[i];
      continue;
    }
    int64_t in = x.shape()[i - lead];
    int64_t want = shape[i] == -1 ? in : shape[i];
    HD_CHECK(in == want || in == 1, "expand: cannot expand ", x.shape(), " to ", shape);
    out_shape[i] = want;
    strides[i] = in == want ? x.strides()[i - lead] : 0;
  }
  Tensor out = make_view(x, out_shape, strides, x.offset());
  if (auto node = make_grad_node<ExpandBackward>({&x})) {
    node->in_shape = x.shape();
    set_history(out, node);
  }
  return out;
}

Tensor squeeze(const Tensor& x, int64_t dim) {
  int64_t d = normalize_dim("squeeze", dim, x.dim());
  HD_CHECK(x.shape()[size_t(d)] == 1, "squeeze: dim ", dim, " of ", x.str(), " is not 1");
  Shape shape = x.shape();
  shape.erase(shape.begin() + d);
  Shape strides = x.strides();
  strides.erase(strides.begin() + d);
  Tensor out = make_view(x, shape, strides, x.offset());
  if (auto node = make_grad_node<ReshapeBackward>({&x})) {
    node->in_shape = x.shape();
    set_history(out, node);
  }
  return out;
}

Tensor unsqueeze(const Tensor& x, int64_t dim) {
  int64_t d = normalize_dim("unsqueeze", dim, x.dim() + 1);
  Shape shape = x.shape(), strides = x.strides();
  int64_t stride = d < x.dim() ? strides[size_t(d)] * shape[size_t(d)] : 1;
  shape.insert(shape.begin() + d, 1);
  strides.insert(strides.begin() + d, stride);
  Tensor out = make_view(x, shape, strides, x.offset());
  if (auto node = make_grad_node<ReshapeBackward>({&x})) {
    node->in_shape = x.shape();
    set_history(out, node);
  }
  return out;
}

Tensor clone(const Tensor& x) {
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  dispatch(
      x, "clone", [&] { cpu::copy(x, out); }, HD_CUDA_KERNEL(cuda::copy(x, out)));
  if (auto node = make_grad_node<IdentityBackward>({&x}, "CloneBackward")) set_history(out, node);
  return out;
}

Tensor contiguous(const Tensor& x) {
  return x.is_contiguous() ? x : clone(x);
}

Tensor to(const Tensor& x, DType dtype) {
  if (x.dtype() == dtype) return x;
  Tensor out = Tensor::empty(x.shape(), dtype, x.device());
  dispatch(
      x, "to", [&] { cpu::copy(x, out); }, HD_CUDA_KERNEL(cuda::copy(x, out)));
  if (is_floating(dtype)) {
    if (auto node = make_grad_node<ToDTypeBackward>({&x})) {
      node->in_dtype = x.dtype();
      set_history(out, node);
    }
  }
  return out;
}

namespace {
// The bytes of contiguous `src` into contiguous `dst` of the same size on another device. From
// pinned host memory the host->device copy is only queued, so its block gets a read fence
// ([Note: pinned host memory]).
void copy_bytes_across_devices(const Tensor& dst, const Tensor& src) {
  const size_t n = src.nbytes();
  if (n == 0) return;
  if (src.device().is_cpu() && dst.device().is_cpu()) {
    // Between host devices ([Note: a second host device], autograd/device.h).
    std::memcpy(dst.raw_data(), src.raw_data(), n);
    return;
  }
#ifdef HD_HAVE_CUDA
  if (src.device().is_cpu()) {
    cuda::copy_host_to_device(dst.raw_data(), src.raw_data(), n, dst.device().index);
    if (src.is_pinned()) {
      pinned_host_allocator().record_read(src.storage()->data(),
                                          cuda::record_read_fence(dst.device().index));
    }
  } else if (dst.device().is_cpu()) {
    cuda::copy_device_to_host(dst.raw_data(), src.raw_data(), n, src.device().index);
  } else {
    cuda::copy_device_to_device(dst.raw_data(), dst.device().index, src.raw_data(),
                                src.device().index, n);
  }
#else
  throw Error(detail::concat("cannot copy ", src.str(), " to ", dst.device().str(),
                             " (this build has no CUDA backend)"));
#endif
}
}  // namespace

Tensor& copy_to_device_(Tensor& dst, const Tensor& src) {
  HD_CHECK(dst.shape() == src.shape() && dst.dtype() == src.dtype(), "copy_to_device_: ", src.str(),
           " into ", dst.str(), ": shapes and dtypes must match");
  if (dst.device() == src.device()) return copy_(dst, src);
  HD_CHECK(dst.is_contiguous(), "copy_to_device_: the destination ", dst.str(),
           " must be contiguous");
  copy_bytes_across_devices(dst, contiguous(src.detach()));
  dst.bump_version();
  return dst;
}

Tensor to(const Tensor& x, Device device) {
  if (x.device() == device) return x;
  Tensor src = contiguous(x.detach());
  Tensor out = Tensor::empty(x.shape(), x.dtype(), device);  // throws without a CUDA device
  copy_bytes_across_devices(out, src);
  if (is_floating(x.dtype())) {
    if (auto node = make_grad_node<ToDeviceBackward>({&x})) {
      node->in_device = x.device();
      set_history(out, node);
    }
  }
  return out;
}

namespace {
struct CatBackward final : Node {
  int64_t dim;
  std::vector<int64_t> sizes;
  std::string name() const override { return "CatBackward"; }
  std::vector<Tensor> backward(const std::vector<Tensor>& g) override {
    std::vector<Tensor> out;
    int64_t start = 0;
    for (int64_t s : sizes) {
      out.push_back(narrow(g[0], dim, start, s));
      start += s;
    }
    return out;
  }
};
}  // namespace

Tensor cat(const std::vector<Tensor>& xs, int64_t dim) {
  HD_CHECK(!xs.empty(), "cat: no tensors given");
  const Tensor& first = xs[0];
  int64_t d = normalize_dim("cat", dim, first.dim());
  Shape shape = first.shape();
  int64_t total = 0;
  for (const Tensor& x : xs) {
    HD_CHECK(x.dim() == first.dim(), "cat: ", x.str(), " and ", first.str(), " differ in rank");
    check_same_dtype("cat", first, x);
    check_same_device("cat", {&first, &x});
    for (int64_t i = 0; i < x.dim(); ++i) {
      HD_CHECK(i == d || x.shape()[size_t(i)] == shape[size_t(i)], "cat: shape ", x.shape(),
               " does not match ", first.shape(), " outside dim ", d);
    }
    total += x.shape()[size_t(d)];
  }
  shape[size_t(d)] = total;
  Tensor out = Tensor::empty(shape, first.dtype(), first.device());
  int64_t start = 0;
  for (const Tensor& x : xs) {
    int64_t len = x.shape()[size_t(d)];
    Shape sub_shape = shape;
    sub_shape[size_t(d)] = len;
    Tensor window = out.as_strided(sub_shape, out.strides(), start * out.strides()[size_t(d)]);
    dispatch(
        x, "cat", [&] { cpu::copy(x, window); }, HD_CUDA_KERNEL(cuda::copy(x, window)));
    start += len;
  }
  bool any = false;
  for (const Tensor& x : xs) any |= x.requires_grad();
  if (any && GradMode::enabled()) {
    auto node = std::make_shared<CatBackward>();
    node->dim = d;
    for (const Tensor& x : xs) {
      node->sizes.push_back(x.shape()[size_t(d)]);
      node->next_edges.push_back(x.requires_grad() ? gradient_edge(x) : Edge{});
    }
    set_history(out, node);
  }
  return out;
}

Tensor stack(const std::vector<Tensor>& xs, int64_t dim) {
  HD_CHECK(!xs.empty(), "stack: no tensors given");
  int64_t d = normalize_dim("stack", dim, xs[0].dim() + 1);
  std::vector<Tensor> expanded;
  for (const Tensor& x : xs) {
    HD_CHECK(x.shape() == xs[0].shape(), "stack: shapes differ: ", x.shape(), " vs ",
             xs[0].shape());
    expanded.push_back(unsqueeze(x, d));
  }
  return cat(expanded, d);
}

std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t dim) {
  int64_t d = normalize_dim("split", dim, x.dim());
  int64_t total = 0;
  for (int64_t s : sizes) total += s;
  HD_CHECK(total == x.shape()[size_t(d)], "split: sizes ", sizes, " sum to ", total, " but dim ",
           dim, " of ", x.str(), " has ", x.shape()[size_t(d)]);
  std::vector<Tensor> out;
  int64_t start = 0;
  for (int64_t s : sizes) {
    out.push_back(narrow(x, d, start, s));
    start += s;
  }
  return out;
}

namespace {
// The gradient of x laid out as x is in memory where x is a permutation of a dense block (the
// q, k, v views of a packed qkv projection, [3, B, H, N, D] over [B, N, 3, H, D] memory): the
// permutes and reshape between x and that projection then pass the gradient on as views, where
// stacking the pieces in x's logical order made a copy here and a reordering copy of the whole
// gradient at the reshape (bf16 ViT step, op timer: 7.5 ms of copies per step -> one strided copy
// of 3.2 ms).
struct UnbindBackward final : Node {
  int64_t dim;
  Shape dense_strides;  // x's strides when x is dense (empty: stack in logical order)
  std::string name() const override { return "UnbindBackward"; }
  std::vector<Tensor> backward(const std::vector<Tensor>& g) override {
    if (dense_strides.empty()) return {stack(g, dim)};
    Shape shape = g[0].shape();
    shape.insert(shape.begin() + dim, int64_t(g.size()));
    if (Tensor whole = already_in_place(g, shape); whole.defined()) return {whole};
    Tensor grad = Tensor::empty({shape_numel(shape)}, g[0].dtype(), g[0].device())
                      .as_strided(shape, dense_strides, 0);
    for (size_t i = 0; i < g.size(); ++i) {
      Tensor slot = select(grad, dim, int64_t(i));
      copy_(slot, g[i]);
    }
    return {grad};
  }

  // The gradients as the slots of one buffer laid out like x, if they already are (attention's
  // q, k, v gradients: [Note: gradients laid out like packed q, k, v] in ops/attention.cpp).
  Tensor already_in_place(const std::vector<Tensor>& g, const Shape& shape) const {
    Shape slot_strides = dense_strides;
    slot_strides.erase(slot_strides.begin() + dim);
    for (size_t i = 0; i < g.size(); ++i) {
      if (!g[i].defined() || g[i].storage() != g[0].storage() || g[i].strides() != slot_strides ||
          g[i].offset() != g[0].offset() + int64_t(i) * dense_strides[size_t(dim)] ||
          g[i].dtype() != g[0].dtype()) {
        return Tensor();
      }
    }
    const int64_t extent = shape_numel(shape);
    if (g[0].offset() != 0 ||
        int64_t(g[0].storage()->nbytes()) != extent * int64_t(dtype_size(g[0].dtype())))
      return Tensor();
    return g[0].as_strided(shape, dense_strides, 0);
  }
};

// x's strides if its elements fill a block of memory exactly (a permutation of contiguous
// strides, size-1 dims aside), else empty.
Shape dense_permutation_strides(const Tensor& x) {
  std::vector<size_t> order;
  for (size_t d = 0; d < size_t(x.dim()); ++d) {
    if (x.shape()[d] != 1) order.push_back(d);
  }
  std::sort(order.begin(), order.end(),
            [&](size_t a, size_t b) { return x.strides()[a] > x.strides()[b]; });
  int64_t expected = 1;
  for (size_t i = order.size(); i-- > 0;) {
    if (x.strides()[order[i]] != expected) return {};
    expected *= x.shape()[order[i]];
  }
  Shape strides = x.strides();
  for (size_t d = 0; d < size_t(x.dim()); ++d) {
    if (x.shape()[d] == 1) strides[d] = 1;  // any value is valid; keep it in range
  }
  return strides;
}
}  // namespace

std::vector<Tensor> unbind(const Tensor& x, int64_t dim) {
  int64_t d = normalize_dim("unbind", dim, x.dim());
  Shape shape = x.shape(), strides = x.strides();
  int64_t n = shape[size_t(d)], step = strides[size_t(d)];
  shape.erase(shape.begin() + d);
  strides.erase(strides.begin() + d);
  std::shared_ptr<UnbindBackward> node = make_grad_node<UnbindBackward>({&x});
  if (node) {
    node->dim = d;
    if (!x.is_contiguous()) node->dense_strides = dense_permutation_strides(x);
  }
  std::vector<Tensor> out;
  for (int64_t i = 0; i < n; ++i) {
    out.push_back(make_view(x, shape, strides, x.offset() + i * step));
    if (node) set_history(out.back(), node, uint32_t(i));
  }
  return out;
}

std::vector<Tensor> chunk(const Tensor& x, int64_t chunks, int64_t dim) {
  int64_t d = normalize_dim("chunk", dim, x.dim());
  int64_t size = x.shape()[size_t(d)];
  HD_CHECK(chunks >= 1, "chunk: chunks must be >= 1");
  int64_t each = (size + chunks - 1) / chunks;
  std::vector<int64_t> sizes;
  for (int64_t s = 0; s < size; s += each) sizes.push_back(std::min(each, size - s));
  return split(x, sizes, d);
}

namespace {
struct PadBackward final : Node {
  std::vector<int64_t> pads;
  Shape in_shape;
  std::string name() const override { return "PadBackward"; }
  std::vector<Tensor> backward(const std::vector<Tensor>& g) override {
    Tensor out = g[0];
    int64_t rank = int64_t(in_shape.size());
    for (size_t k = 0; k * 2 < pads.size(); ++k) {
      int64_t d = rank - 1 - int64_t(k);
      out = narrow(out, d, pads[2 * k], in_shape[size_t(d)]);
    }
    return {out};
  }
};
}  // namespace

Tensor pad(const Tensor& x, const std::vector<int64_t>& pads, double value) {
  HD_CHECK(pads.size() % 2 == 0 && int64_t(pads.size() / 2) <= x.dim(), "pad: ", pads.size(),
           " pad values for ", x.str(), " (need an even count, two per padded dim)");
  Shape shape = x.shape();
  for (size_t k = 0; k * 2 < pads.size(); ++k) {
    size_t d = size_t(x.dim()) - 1 - k;
    HD_CHECK(pads[2 * k] >= 0 && pads[2 * k + 1] >= 0, "pad: negative padding ", pads,
             " is not supported");
    shape[d] += pads[2 * k] + pads[2 * k + 1];
  }
  Tensor out = full(shape, value, x.dtype(), x.device());
  int64_t offset = 0;
  for (size_t k = 0; k * 2 < pads.size(); ++k) {
    size_t d = size_t(x.dim()) - 1 - k;
    offset += pads[2 * k] * out.strides()[d];
  }
  Tensor window = out.as_strided(x.shape(), out.strides(), offset);
  dispatch(
      x, "pad", [&] { cpu::copy(x, window); }, HD_CUDA_KERNEL(cuda::copy(x, window)));
  if (auto node = make_grad_node<PadBackward>({&x})) {
    node->pads = pads;
    node->in_shape = x.shape();
    set_history(out, node);
  }
  return out;
}

}  // namespace hd
