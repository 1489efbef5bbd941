#include "ops/linalg.h"

#include "autograd/node.h"
#include "ops/cpu/gemm.h"
#include "ops/cpu/onednn_matmul.h"
#include "ops/cuda/kernels.h"
#include "ops/dispatch.h"
#include "ops/elementwise.h"
#include "ops/reduce.h"
#include "ops/shape.h"

namespace hd {
namespace {

// A BLAS-compatible operand: the last two dims need a unit stride in one of them.
Tensor blas_ready(const Tensor& t) {
  if (t.dim() < 2) return contiguous(t);
  int64_t r = t.shape()[size_t(t.dim() - 2)], c = t.shape()[size_t(t.dim() - 1)];
  int64_t sr = t.stride(-2), sc = t.stride(-1);
  bool row_major = (sc == 1 || c == 1) && (sr >= std::max<int64_t>(c, 1) || r == 1);
  bool col_major = (sr == 1 || r == 1) && (sc >= std::max<int64_t>(r, 1) || c == 1);
  return (row_major || col_major) ? t : contiguous(t);
}

// Raw batched product of >= 2-D operands (no autograd).
// bias (optional, [N]): added to the product's rows; on the CPU by the kernel's own tasks.
Tensor matmul_raw(const Tensor& a_in, const Tensor& b_in, const Tensor& bias = Tensor()) {
  check_same_device("matmul", {&a_in, &b_in});
  check_same_dtype("matmul", a_in, b_in);
  DType dt = a_in.dtype();
  HD_CHECK(is_floating(dt), "matmul: needs floating-point operands, got ", a_in.str());
  // 16-bit on the CPU: bf16 row blocks on oneDNN's bf16 kernels where this CPU has them ([Note:
  // oneDNN GEMMs]), otherwise converted to f32 for OpenBLAS. cuBLAS takes bf16/f16 directly.
  // All accumulate in f32.
  const bool half_cpu = (dt == DType::bf16 || dt == DType::f16) && a_in.device().is_cpu();
  if (half_cpu && !(dt == DType::bf16 && cpu::onednn::capability().bf16_matmul)) {
    Tensor out = to(matmul_raw(to(a_in, DType::f32), to(b_in, DType::f32)), dt);
    if (bias.defined()) add_(out, bias);
    return out;
  }
  HD_CHECK(a_in.size(-1) == b_in.size(-2), "matmul: inner dims differ: ", a_in.shape(), " @ ",
           b_in.shape());
  Tensor a = blas_ready(a_in), b = blas_ready(b_in);
  Shape batch = broadcast_shapes(Shape(a.shape().begin(), a.shape().end() - 2),
                                 Shape(b.shape().begin(), b.shape().end() - 2), "matmul");
  Shape out_shape = batch;
  out_shape.push_back(a.size(-2));
  out_shape.push_back(b.size(-1));
  Tensor out = Tensor::empty(out_shape, dt, a.device());
  const bool fused_bias = bias.defined() && a.device().is_cpu() && bias.dtype() == dt &&
                          bias.dim() == 1 && bias.size(0) == out.size(-1);
  const Tensor bias_c = fused_bias ? contiguous(bias) : Tensor();
  dispatch(
      a, "matmul", [&] { cpu::matmul(a, b, out, false, fused_bias ? &bias_c : nullptr); },
      HD_CUDA_KERNEL(cuda::matmul(a, b, out)));
  if (bias.defined() && !fused_bias) add_(out, bias);
  return out;
}

struct MatmulBackward final : Node {
  SavedTensor a, b;
  Shape a_shape, b_shape;
  std::string name() const override { return "MatmulBackward"; }
  void release_saved() override {
    a.reset();
    b.reset();
  }
  std::vector<Tensor> backward(const std::vector<Tensor>& grads) override {
    const Tensor& g = grads[0];
    Tensor ga, gb;
    if (needs_input_grad(0))
      ga = sum_to(matmul_raw(g, transpose(b.unpack(*this), -1, -2)), a_shape);
    if (needs_input_grad(1))
      gb = sum_to(matmul_raw(transpose(a.unpack(*this), -1, -2), g), b_shape);
    return {ga, gb};
  }
};

struct LinearBackward final : Node {
  SavedTensor x, w;  // x as [T, in]
  Shape x_shape;
  std::string name() const override { return "LinearBackward"; }
  void release_saved() override {
    x.reset();
    w.reset();
  }
  std::vector<Tensor> backward(const std::vector<Tensor>& grads) override {
    Tensor g = reshape(grads[0], {-1, grads[0].size(-1)});  // [T, out]
    Tensor gx, gw, gb;
    if (needs_input_grad(0)) gx = reshape(matmul_raw(g, w.unpack(*this)), x_shape);
    if (needs_input_grad(1)) gw = matmul_raw(transpose(g, 0, 1), x.unpack(*this));
    if (needs_input_grad(2)) gb = sum(g, {0});
    return {gx, gw, gb};
  }
};

}  // namespace

Tensor matmul(const Tensor& a_in, const Tensor& b_in) {
  HD_CHECK(a_in.dim() >= 1 && b_in.dim() >= 1, "matmul: operands must have at least 1 dim, got ",
           a_in.str(), " and ", b_in.str());
  // 1-D operands: promote, multiply, and drop the added dim (via differentiable views).
  if (a_in.dim() == 1) return squeeze(matmul(unsqueeze(a_in, 0), b_in), -2);
  if (b_in.dim() == 1) return squeeze(matmul(a_in, unsqueeze(b_in, 1)), -1);
  Tensor out = matmul_raw(a_in.detach(), b_in.detach());
  if (auto node = make_grad_node<MatmulBackward>({&a_in, &b_in})) {
    if (b_in.requires_grad()) node->a = SavedTensor(a_in);
    if (a_in.requires_grad()) node->b = SavedTensor(b_in);
    node->a_shape = a_in.shape();
    node->b_shape = b_in.shape();
    set_history(out, node);
  }
  return out;
}

Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  HD_CHECK(weight.dim() == 2, "linear: weight must be 2-D [out, in], got ", weight.str());
  HD_CHECK(x.dim() >= 1 && x.size(-1) == weight.size(1), "linear: input ", x.shape(),
           " does not match weight ", weight.shape(), " (last dim must be ", weight.size(1), ")");
  HD_CHECK(!bias.defined() || (bias.dim() == 1 && bias.size(0) == weight.size(0)), "linear: bias ",
           bias.str(), " does not match weight ", weight.shape());
  Tensor x2 = reshape(x.detach(), {-1, x.size(-1)});
  Tensor y;
  {
    NoGradGuard no_grad;
    y = matmul_raw(x2, transpose(weight.detach(), 0, 1), bias.defined() ? bias.detach() : Tensor());
  }
  Shape out_shape = x.shape();
  out_shape.back() = weight.size(0);
  Tensor out = y.as_strided(out_shape, contiguous_strides(out_shape), 0);
  if (auto node = make_grad_node<LinearBackward>({&x, &weight, &bias})) {
    if (weight.requires_grad()) node->x = SavedTensor(x2);
    if (x.requires_grad()) node->w = SavedTensor(weight);
    node->x_shape = x.shape();
    set_history(out, node);
  }
  return out;
}

}  // namespace hd
