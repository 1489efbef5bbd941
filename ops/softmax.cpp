#include "ops/softmax.h"

#include "autograd/node.h"
#include "ops/cpu/softmax.h"
#include "ops/cpu_half.h"
#include "ops/cuda/kernels.h"
#include "ops/dispatch.h"
#include "ops/shape.h"

namespace hd {
namespace {

struct Geometry {
  int64_t dim, outer = 1, n = 1, inner = 1;
};

// The kernels see a contiguous tensor as [outer, n, inner] around the softmax dim.
Geometry geometry(const char* op, const Tensor& x, int64_t dim) {
  Geometry g;
  g.dim = normalize_dim(op, dim, x.dim());
  if (x.dim() == 0) return g;
  for (int64_t i = 0; i < g.dim; ++i) g.outer *= x.size(i);
  g.n = x.size(g.dim);
  for (int64_t i = g.dim + 1; i < x.dim(); ++i) g.inner *= x.size(i);
  return g;
}

void check_float(const char* op, const Tensor& x) {
  // bf16/f16 compute in f32: inside the CUDA kernels, on f32 copies on the CPU (ops/cpu_half.h).
  const bool half = x.dtype() == DType::bf16 || x.dtype() == DType::f16;
  HD_CHECK(x.dtype() == DType::f32 || x.dtype() == DType::f64 || half, op,
           ": expects a f32, f64, bf16 or f16 tensor, got ", x.str(), " (convert with hd::to)");
}

Tensor forward_raw(const char* op, const Tensor& x, int64_t dim, bool log) {
  check_float(op, x);
  if (is_cpu_half(x)) return to(forward_raw(op, to(x.detach(), DType::f32), dim, log), x.dtype());
  Geometry g = geometry(op, x, dim);
  Tensor xc = contiguous(x.detach());
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  dispatch(
      x, op, [&] { cpu::softmax_forward(xc, y, g.outer, g.n, g.inner, log); },
      HD_CUDA_KERNEL(cuda::softmax_forward(xc, y, g.outer, g.n, g.inner, log)));
  return y;
}

Tensor backward_raw(const char* op, const Tensor& y, const Tensor& gy, int64_t dim, bool log) {
  check_float(op, y);
  check_same_device(op, {&y, &gy});
  check_same_dtype(op, y, gy);
  HD_CHECK(y.shape() == gy.shape(), op, ": output ", y.shape(), " and gradient ", gy.shape(),
           " differ in shape");
  if (is_cpu_half(y)) {  // from the saved 16-bit output, in f32 (ops/cpu_half.h)
    return to(backward_raw(op, to(y.detach(), DType::f32), to(gy.detach(), DType::f32), dim, log),
              y.dtype());
  }
  Geometry g = geometry(op, y, dim);
  // The incoming gradient is often an expanded (stride-0) view, e.g. from sum's backward.
  Tensor yc = contiguous(y.detach()), gc = contiguous(gy.detach());
  Tensor gx = Tensor::empty(y.shape(), y.dtype(), y.device());
  dispatch(
      y, op, [&] { cpu::softmax_backward(yc, gc, gx, g.outer, g.n, g.inner, log); },
      HD_CUDA_KERNEL(cuda::softmax_backward(yc, gc, gx, g.outer, g.n, g.inner, log)));
  return gx;
}

struct SoftmaxBackward final : Node {
  int64_t dim;
  bool log;
  SavedTensor y;  // the output: both gradients need only it
  SoftmaxBackward(int64_t dim, bool log) : dim(dim), log(log) {}
  std::string name() const override { return log ? "LogSoftmaxBackward" : "SoftmaxBackward"; }
  void release_saved() override { y.reset(); }
  std::vector<Tensor> backward(const std::vector<Tensor>& grads) override {
    Tensor yv = y.unpack(*this);
    return {log ? log_softmax_backward(yv, grads[0], dim) : softmax_backward(yv, grads[0], dim)};
  }
};

Tensor softmax_impl(const char* op, const Tensor& x, int64_t dim, bool log) {
  Tensor y = forward_raw(op, x, dim, log);
  if (auto node = make_grad_node<SoftmaxBackward>({&x}, normalize_dim(op, dim, x.dim()), log)) {
    node->y = SavedTensor(y.detach());  // detached: no cycle through grad_fn
    set_history(y, node);
  }
  return y;
}

}  // namespace

Tensor softmax(const Tensor& x, int64_t dim) {
  return softmax_impl("softmax", x, dim, false);
}
Tensor log_softmax(const Tensor& x, int64_t dim) {
  return softmax_impl("log_softmax", x, dim, true);
}

Tensor softmax_backward(const Tensor& y, const Tensor& gy, int64_t dim) {
  return backward_raw("softmax_backward", y, gy, dim, false);
}
Tensor log_softmax_backward(const Tensor& y, const Tensor& gy, int64_t dim) {
  return backward_raw("log_softmax_backward", y, gy, dim, true);
}

}  // namespace hd
