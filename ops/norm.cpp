#include "ops/norm.h"

#include "autograd/node.h"
#include "ops/cpu/norm.h"
#include "ops/cpu_half.h"
#include "ops/cuda/kernels.h"
#include "ops/dispatch.h"
#include "ops/shape.h"

namespace hd {
namespace {

void check_param(const char* op, const char* what, const Tensor& p, const Tensor& x) {
  if (!p.defined()) return;
  HD_CHECK(p.dim() == 1 && p.size(0) == x.size(-1), op, ": ", what, " of shape ", p.shape(),
           " does not match the last dim of input ", x.shape());
  check_same_dtype(op, x, p);
}

int64_t check_input(const char* op, const Tensor& x, const Tensor& w, const Tensor& b, double eps) {
  // bf16/f16 compute in f32 inside the kernels (CPU: widened per row, ops/cpu/norm.cpp).
  const bool half = x.dtype() == DType::bf16 || x.dtype() == DType::f16;
  HD_CHECK(x.dtype() == DType::f32 || x.dtype() == DType::f64 || half, op,
           ": expects a f32, f64, bf16 or f16 input, got ", x.str(), " (convert with hd::to)");
  HD_CHECK(x.dim() >= 1 && x.size(-1) > 0, op, ": needs an input with a non-empty last dim, got ",
           x.shape());
  HD_CHECK(eps >= 0, op, ": eps must be >= 0, got ", eps);
  check_same_device(op, {&x, &w, &b});
  check_param(op, "weight", w, x);
  check_param(op, "bias", b, x);
  return x.numel() / x.size(-1);
}

struct NormBackward final : Node {
  bool center;
  SavedTensor x, weight, mean, rstd;
  explicit NormBackward(bool center) : center(center) {}
  std::string name() const override { return center ? "LayerNormBackward" : "RmsNormBackward"; }
  void release_saved() override {
    x.reset();
    weight.reset();
    mean.reset();
    rstd.reset();
  }
  std::vector<Tensor> backward(const std::vector<Tensor>& grads) override {
    Tensor xv = x.unpack(*this), wv = weight.defined() ? weight.unpack(*this) : Tensor();
    Tensor rv = rstd.unpack(*this);
    if (center) {
      NormGrads g = layer_norm_backward(grads[0], xv, mean.unpack(*this), rv, wv,
                                        needs_input_grad(1), needs_input_grad(2));
      return {g.gx, g.gw, g.gb};
    }
    NormGrads g = rms_norm_backward(grads[0], xv, rv, wv, needs_input_grad(1));
    return {g.gx, g.gw};
  }
};

struct NormForward {
  Tensor y, mean, rstd;
};

// The kernel on contiguous inputs. 16-bit inputs compute in f32 inside the kernels (CPU and
// CUDA); y is rounded to the input's type and the statistics stay f32 ([Note: 16-bit saved
// tensors]).
NormForward norm_forward_raw(bool center, const char* op, int64_t rows, const Tensor& xc,
                             const Tensor& wc, const Tensor& bc, double eps) {
  NormForward f;
  f.y = Tensor::empty(xc.shape(), xc.dtype(), xc.device());
  const DType stats = is_cpu_half(xc) ? DType::f32 : xc.dtype();
  f.mean = center ? Tensor::empty({rows}, stats, xc.device()) : Tensor();
  f.rstd = Tensor::empty({rows}, stats, xc.device());
  dispatch(
      xc, op, [&] { cpu::norm_forward(center, xc, wc, bc, eps, f.y, f.mean, f.rstd); },
      HD_CUDA_KERNEL(cuda::norm_forward(center, xc, wc, bc, eps, f.y, f.mean, f.rstd)));
  return f;
}

Tensor norm_impl(bool center, const Tensor& x, const Tensor& weight, const Tensor& bias,
                 double eps) {
  const char* op = center ? "layer_norm" : "rms_norm";
  int64_t rows = check_input(op, x, weight, bias, eps);
  Tensor xc = contiguous(x.detach());
  Tensor wc = weight.defined() ? contiguous(weight.detach()) : Tensor();
  Tensor bc = bias.defined() ? contiguous(bias.detach()) : Tensor();
  NormForward f = norm_forward_raw(center, op, rows, xc, wc, bc, eps);
  Tensor y = f.y, mean = f.mean, rstd = f.rstd;
  std::shared_ptr<NormBackward> node =
      center ? make_grad_node<NormBackward>({&x, &weight, &bias}, center)
             : make_grad_node<NormBackward>({&x, &weight}, center);
  if (node) {
    // The contiguous copy is what the backward kernel reads; when x was already contiguous it
    // shares x's storage, so in-place changes to x are still caught by the version check.
    node->x = SavedTensor(xc);
    if (weight.defined()) node->weight = SavedTensor(wc);
    if (center) node->mean = SavedTensor(mean);
    node->rstd = SavedTensor(rstd);
    set_history(y, node);
  }
  return y;
}

NormGrads backward_impl(bool center, const Tensor& gy, const Tensor& x, const Tensor& mean,
                        const Tensor& rstd, const Tensor& weight, bool need_w, bool need_b) {
  const char* op = center ? "layer_norm_backward" : "rms_norm_backward";
  int64_t rows = check_input(op, x, weight, Tensor(), 0.0);
  HD_CHECK(gy.shape() == x.shape(), op, ": gradient ", gy.shape(), " and input ", x.shape(),
           " differ in shape");
  check_same_dtype(op, x, gy);
  HD_CHECK(rstd.numel() == rows && (!center || mean.numel() == rows), op,
           ": statistics must have one value per row (", rows, "), got rstd ", rstd.shape());
  HD_CHECK(!need_w || weight.defined(), op, ": weight gradient asked for without a weight");
  // Incoming gradients are often expanded (stride-0) views; the kernel wants rows.
  Tensor gc = contiguous(gy.detach()), xc = contiguous(x.detach());
  Tensor wc = weight.defined() ? contiguous(weight.detach()) : Tensor();
  Tensor mc = center ? contiguous(mean.detach()) : Tensor(), rc = contiguous(rstd.detach());
  NormGrads g;
  g.gx = Tensor::empty(x.shape(), x.dtype(), x.device());
  const int64_t C = x.size(-1);
  if (need_w) g.gw = Tensor::empty({C}, x.dtype(), x.device());
  if (need_b) g.gb = Tensor::empty({C}, x.dtype(), x.device());
  dispatch(
      x, op,
      [&] {
        cpu::norm_backward(center, gc, xc, mc, rc, wc, g.gx, need_w ? &g.gw : nullptr,
                           need_b ? &g.gb : nullptr);
      },
      HD_CUDA_KERNEL(cuda::norm_backward(center, gc, xc, mc, rc, wc, g.gx, need_w ? &g.gw : nullptr,
                                         need_b ? &g.gb : nullptr)));
  return g;
}

}  // namespace

Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps) {
  return norm_impl(true, x, weight, bias, eps);
}

Tensor rms_norm(const Tensor& x, const Tensor& weight, double eps) {
  return norm_impl(false, x, weight, Tensor(), eps);
}

NormGrads layer_norm_backward(const Tensor& gy, const Tensor& x, const Tensor& mean,
                              const Tensor& rstd, const Tensor& weight, bool need_weight,
                              bool need_bias) {
  return backward_impl(true, gy, x, mean, rstd, weight, need_weight, need_bias);
}

NormGrads rms_norm_backward(const Tensor& gy, const Tensor& x, const Tensor& rstd,
                            const Tensor& weight, bool need_weight) {
  return backward_impl(false, gy, x, Tensor(), rstd, weight, need_weight, false);
}

}  // namespace hd
