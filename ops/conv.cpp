// conv2d frontend: picks one of four paths, each chosen so its gradient is either free (built
// from differentiable views + matmul) or a dedicated kernel:
//  * patch embedding (kernel == stride, no padding): patches are a reshape/permute of the
//    input, the conv is one linear layer over them;
//  * 1x1: a matmul over channels;
//  * depthwise (groups == Cin == Cout): direct kernels (im2col would blow 7x7 up 49x);
//  * anything else with groups == 1: im2col + matmul, col2im for the gradient.
// On a GPU, cuDNN replaces all four when enabled (cuda::set_use_cudnn_conv, HD_CUDNN_CONV=1).
#include "ops/conv.h"

#include "autograd/node.h"
#include "ops/cpu/conv.h"
#include "ops/cpu_half.h"
#include "ops/cuda/kernels.h"
#include "ops/dispatch.h"
#include "ops/elementwise.h"
#include "ops/linalg.h"
#include "ops/shape.h"

namespace hd {
namespace {

cpu::Conv2dGeometry geometry(const char* op, const Shape& x, int64_t kh, int64_t kw, int64_t stride,
                             int64_t padding) {
  HD_CHECK(x.size() == 4, op, ": input must be [B, C, H, W], got ", x);
  HD_CHECK(kh >= 1 && kw >= 1 && stride >= 1 && padding >= 0, op, ": bad kernel ", kh, "x", kw,
           ", stride ", stride, ", padding ", padding);
  HD_CHECK(x[2] + 2 * padding >= kh && x[3] + 2 * padding >= kw, op, ": kernel ", kh, "x", kw,
           " is larger than the padded input ", x, " (padding ", padding, ")");
  cpu::Conv2dGeometry g;
  g.batch = x[0];
  g.channels = x[1];
  g.h = x[2];
  g.w = x[3];
  g.kh = kh;
  g.kw = kw;
  g.stride = stride;
  g.pad = padding;
  g.oh = (g.h + 2 * padding - kh) / stride + 1;
  g.ow = (g.w + 2 * padding - kw) / stride + 1;
  return g;
}

struct UnfoldBackward final : Node {
  Shape in_shape;
  int64_t kh = 0, kw = 0, stride = 1, padding = 0;
  std::string name() const override { return "Unfold2dBackward"; }
  std::vector<Tensor> backward(const std::vector<Tensor>& g) override {
    return {fold2d(g[0], in_shape, kh, kw, stride, padding)};
  }
};

// bf16 depthwise convolutions of stride 1 on the CPU read and write bf16 in place (the kernels
// widen each plane into their padded scratch and round each output once: the bits of the f32
// round trip, without its conversion passes); other 16-bit cases run on f32 copies.
bool reads_16_bit(const Tensor& t, int64_t stride) {
  return t.dtype() == DType::bf16 && t.device().is_cpu() && stride == 1;
}

struct DepthwiseConvBackward final : Node {
  SavedTensor x, weight;
  Shape x_shape, w_shape;
  int64_t stride = 1, padding = 0;
  std::string name() const override { return "DepthwiseConv2dBackward"; }
  void release_saved() override {
    x.reset();
    weight.reset();
  }
  std::vector<Tensor> backward(const std::vector<Tensor>& g) override {
    // 16-bit on the CPU: the gradient made contiguous (bf16, stride 1: read by the kernels as it
    // is) or widened (f16, strides) once for both products, which would each do it again (a
    // transposing copy where it arrives as a permuted view: ConvNeXt's NHWC block); widened
    // results are rounded back, what each product's own f32 round trip computes.
    const bool half = is_cpu_half(g[0]) && !reads_16_bit(g[0], stride);
    const Tensor grad = half ? to(g[0].detach(), DType::f32) : contiguous(g[0].detach());
    auto wide = [&](const Tensor& t) { return half ? to(t.detach(), DType::f32) : t; };
    auto narrow_back = [&](const Tensor& t) { return half ? to(t, g[0].dtype()) : t; };
    Tensor gx, gw;
    if (needs_input_grad(0)) {
      gx = narrow_back(depthwise_conv2d_backward_input(grad, wide(weight.unpack(*this)), x_shape,
                                                       stride, padding));
    }
    if (needs_input_grad(1)) {
      gw = narrow_back(
          depthwise_conv2d_backward_weight(grad, wide(x.unpack(*this)), w_shape, stride, padding));
    }
    return {gx, gw};
  }
};

Tensor add_bias(const Tensor& out, const Tensor& bias) {
  if (!bias.defined()) return out;
  return add(out, reshape(bias, {bias.size(0), 1, 1}));
}

// kernel == stride, no padding: [B, C, oh*k, ow*k] -> patches [B, oh*ow, C*k*k] -> linear.
Tensor conv_patches(const Tensor& x, const Tensor& weight, const Tensor& bias, int64_t k) {
  int64_t B = x.size(0), C = x.size(1), oh = x.size(2) / k, ow = x.size(3) / k;
  Tensor xc = x;
  // PyTorch drops the rows/columns a stride-k kernel cannot reach.
  if (x.size(2) != oh * k) xc = narrow(xc, 2, 0, oh * k);
  if (x.size(3) != ow * k) xc = narrow(xc, 3, 0, ow * k);
  Tensor patches;
  const bool same = x.dtype() == weight.dtype();
  if (x.device().is_cpu() && !x.requires_grad() && (x.size(3) <= 1 || x.stride(3) == 1) &&
      (same || (x.dtype() == DType::f32 && weight.dtype() == DType::bf16))) {
    // An image (no gradient): the kernel that reads it row by row (ops/cpu/conv.h).
    patches = Tensor::empty({B, oh * ow, C * k * k}, weight.dtype(), x.device());
    dispatch(x, "gather_patches", [&] { cpu::gather_patches(x, k, patches); });
  } else {
    Tensor gathered = permute(reshape(xc, {B, C, oh, k, ow, k}), {0, 2, 4, 1, 3, 5});
    // In the weight's dtype: the conversion, where there is one, is the gather's copy itself.
    if (!same) gathered = to(gathered, weight.dtype());
    patches = reshape(gathered, {B, oh * ow, C * k * k});
  }
  Tensor y = linear(patches, reshape(weight, {weight.size(0), C * k * k}), bias);  // [B, L, Cout]
  return contiguous(permute(reshape(y, {B, oh, ow, weight.size(0)}), {0, 3, 1, 2}));
}

Tensor conv_1x1(const Tensor& x, const Tensor& weight, const Tensor& bias, int64_t stride,
                int64_t padding) {
  Tensor xs = padding > 0 ? pad(x, {padding, padding, padding, padding}) : x;
  if (stride > 1) {
    xs = slice(slice(xs, 2, 0, xs.size(2), stride), 3, 0, xs.size(3), stride);
  }
  int64_t B = xs.size(0), C = xs.size(1), oh = xs.size(2), ow = xs.size(3);
  Tensor y = matmul(reshape(weight, {weight.size(0), C}), reshape(xs, {B, C, oh * ow}));
  return add_bias(reshape(y, {B, weight.size(0), oh, ow}), bias);
}

Tensor conv_depthwise(const Tensor& x, const Tensor& weight, const Tensor& bias, int64_t stride,
                      int64_t padding) {
  Tensor out = depthwise_conv2d_forward(x, weight, stride, padding);
  if (auto node = make_grad_node<DepthwiseConvBackward>({&x, &weight})) {
    if (weight.requires_grad()) node->x = SavedTensor(x);
    if (x.requires_grad()) node->weight = SavedTensor(weight);
    node->x_shape = x.shape();
    node->w_shape = weight.shape();
    node->stride = stride;
    node->padding = padding;
    set_history(out, node);
  }
  return add_bias(out, bias);
}

#ifdef HD_HAVE_CUDA
// cuDNN on a GPU when enabled (ops/cuda/cudnn_conv.cu says why it is opt-in): one node whose
// backward calls cuDNN's backward-data and backward-filter.
struct CudnnConvBackward final : Node {
  SavedTensor x, weight;
  int64_t stride = 1, padding = 0, groups = 1;
  std::string name() const override { return "CudnnConv2dBackward"; }
  void release_saved() override {
    x.reset();
    weight.reset();
  }
  std::vector<Tensor> backward(const std::vector<Tensor>& g) override {
    Tensor gy = contiguous(g[0]), xv = x.unpack(*this), wv = weight.unpack(*this);
    Tensor gx, gw;
    if (needs_input_grad(0)) {
      gx = Tensor::empty(xv.shape(), xv.dtype(), xv.device());
      cuda::cudnn_conv_backward_data(gy, wv, stride, padding, groups, gx);
    }
    if (needs_input_grad(1)) {
      gw = Tensor::empty(wv.shape(), wv.dtype(), wv.device());
      cuda::cudnn_conv_backward_filter(gy, xv, stride, padding, groups, gw);
    }
    return {gx, gw};
  }
};

Tensor conv_cudnn(const Tensor& x, const Tensor& weight, const Tensor& bias, int64_t stride,
                  int64_t padding, int64_t groups) {
  cpu::Conv2dGeometry g =
      geometry("conv2d", x.shape(), weight.size(2), weight.size(3), stride, padding);
  Tensor xc = contiguous(x.detach()), wc = contiguous(weight.detach());
  Tensor out = Tensor::empty({g.batch, weight.size(0), g.oh, g.ow}, x.dtype(), x.device());
  cuda::cudnn_conv_forward(xc, wc, stride, padding, groups, out);
  if (auto node = make_grad_node<CudnnConvBackward>({&x, &weight})) {
    if (weight.requires_grad()) node->x = SavedTensor(xc);
    if (x.requires_grad()) node->weight = SavedTensor(wc);
    node->stride = stride;
    node->padding = padding;
    node->groups = groups;
    set_history(out, node);
  }
  return add_bias(out, bias);
}
#endif

Tensor conv_im2col(const Tensor& x, const Tensor& weight, const Tensor& bias, int64_t stride,
                   int64_t padding) {
  int64_t kh = weight.size(2), kw = weight.size(3);
  cpu::Conv2dGeometry g = geometry("conv2d", x.shape(), kh, kw, stride, padding);
  Tensor cols = unfold2d(x, kh, kw, stride, padding);  // [B, C*kh*kw, oh*ow]
  Tensor y = matmul(reshape(weight, {weight.size(0), -1}), cols);
  return add_bias(reshape(y, {g.batch, weight.size(0), g.oh, g.ow}), bias);
}

}  // namespace

Tensor unfold2d(const Tensor& x, int64_t kh, int64_t kw, int64_t stride, int64_t padding) {
  cpu::Conv2dGeometry g = geometry("unfold2d", x.shape(), kh, kw, stride, padding);
  Tensor xc = contiguous(x.detach());
  Tensor cols = Tensor::empty({g.batch, g.channels * kh * kw, g.oh * g.ow}, x.dtype(), x.device());
  dispatch(
      x, "unfold2d", [&] { cpu::im2col(xc, g, cols); }, HD_CUDA_KERNEL(cuda::im2col(xc, g, cols)));
  if (auto node = make_grad_node<UnfoldBackward>({&x})) {
    node->in_shape = x.shape();
    node->kh = kh;
    node->kw = kw;
    node->stride = stride;
    node->padding = padding;
    set_history(cols, node);
  }
  return cols;
}

Tensor fold2d(const Tensor& cols, const Shape& input_shape, int64_t kh, int64_t kw, int64_t stride,
              int64_t padding) {
  cpu::Conv2dGeometry g = geometry("fold2d", input_shape, kh, kw, stride, padding);
  Shape want = {g.batch, g.channels * kh * kw, g.oh * g.ow};
  HD_CHECK(cols.shape() == want, "fold2d: cols ", cols.shape(), " do not match ", want,
           " for input ", input_shape);
  Tensor cc = contiguous(cols.detach());
  Tensor out = Tensor::empty(input_shape, cols.dtype(), cols.device());
  dispatch(
      cols, "fold2d", [&] { cpu::col2im(cc, g, out); }, HD_CUDA_KERNEL(cuda::col2im(cc, g, out)));
  return out;
}

Tensor depthwise_conv2d_forward(const Tensor& x, const Tensor& weight, int64_t stride,
                                int64_t padding) {
  cpu::Conv2dGeometry g =
      geometry("depthwise_conv2d", x.shape(), weight.size(2), weight.size(3), stride, padding);
  HD_CHECK(weight.dim() == 4 && weight.size(0) == g.channels && weight.size(1) == 1,
           "depthwise_conv2d: weight ", weight.shape(), " must be [", g.channels, ", 1, kh, kw]");
  check_same_dtype("depthwise_conv2d", x, weight);
  if (is_cpu_half(x) && !reads_16_bit(x, stride)) {  // f32 copies, the answer rounded back
    return to(depthwise_conv2d_forward(to(x.detach(), DType::f32), to(weight.detach(), DType::f32),
                                       stride, padding),
              x.dtype());
  }
  Tensor xc = contiguous(x.detach()), wc = contiguous(weight.detach());
  Tensor out = Tensor::empty({g.batch, g.channels, g.oh, g.ow}, x.dtype(), x.device());
  dispatch(
      x, "depthwise_conv2d", [&] { cpu::depthwise_forward(xc, wc, g, out); },
      HD_CUDA_KERNEL(cuda::depthwise_forward(xc, wc, g, out)));
  return out;
}

Tensor depthwise_conv2d_backward_input(const Tensor& grad_out, const Tensor& weight,
                                       const Shape& input_shape, int64_t stride, int64_t padding) {
  cpu::Conv2dGeometry g = geometry("depthwise_conv2d_backward_input", input_shape, weight.size(2),
                                   weight.size(3), stride, padding);
  HD_CHECK(grad_out.shape() == Shape({g.batch, g.channels, g.oh, g.ow}),
           "depthwise_conv2d_backward_input: grad_out ", grad_out.shape(), " does not match input ",
           input_shape);
  if (is_cpu_half(grad_out) && !reads_16_bit(grad_out, stride)) {
    return to(depthwise_conv2d_backward_input(to(grad_out.detach(), DType::f32),
                                              to(weight.detach(), DType::f32), input_shape, stride,
                                              padding),
              grad_out.dtype());
  }
  Tensor gc = contiguous(grad_out.detach()), wc = contiguous(weight.detach());
  Tensor gx = Tensor::empty(input_shape, grad_out.dtype(), grad_out.device());
  dispatch(
      grad_out, "depthwise_conv2d_backward_input",
      [&] { cpu::depthwise_backward_input(gc, wc, g, gx); },
      HD_CUDA_KERNEL(cuda::depthwise_backward_input(gc, wc, g, gx)));
  return gx;
}

Tensor depthwise_conv2d_backward_weight(const Tensor& grad_out, const Tensor& x,
                                        const Shape& weight_shape, int64_t stride,
                                        int64_t padding) {
  HD_CHECK(weight_shape.size() == 4, "depthwise_conv2d_backward_weight: bad weight shape ",
           weight_shape);
  cpu::Conv2dGeometry g = geometry("depthwise_conv2d_backward_weight", x.shape(), weight_shape[2],
                                   weight_shape[3], stride, padding);
  HD_CHECK(grad_out.shape() == Shape({g.batch, g.channels, g.oh, g.ow}),
           "depthwise_conv2d_backward_weight: grad_out ", grad_out.shape(),
           " does not match input ", x.shape());
  if (is_cpu_half(grad_out) && !reads_16_bit(grad_out, stride)) {
    return to(
        depthwise_conv2d_backward_weight(to(grad_out.detach(), DType::f32),
                                         to(x.detach(), DType::f32), weight_shape, stride, padding),
        grad_out.dtype());
  }
  Tensor gc = contiguous(grad_out.detach()), xc = contiguous(x.detach());
  Tensor gw = Tensor::empty(weight_shape, grad_out.dtype(), grad_out.device());
  dispatch(
      grad_out, "depthwise_conv2d_backward_weight",
      [&] { cpu::depthwise_backward_weight(gc, xc, g, gw); },
      HD_CUDA_KERNEL(cuda::depthwise_backward_weight(gc, xc, g, gw)));
  return gw;
}

Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, int64_t stride,
              int64_t padding, int64_t groups) {
  HD_CHECK(x.defined() && weight.defined(), "conv2d: input and weight must be defined");
  HD_CHECK(x.dim() == 4, "conv2d: input must be [B, C, H, W], got ", x.str());
  HD_CHECK(weight.dim() == 4, "conv2d: weight must be [Cout, Cin/groups, kh, kw], got ",
           weight.str());
  check_same_device("conv2d", {&x, &weight, &bias});
  // A patch convolution (kernel = stride, no padding) may take a float input of another dtype
  // than its weight: its patches are converted as they are gathered, one pass over the image
  // instead of a cast of the whole image and then the gather (PS3's selection stem, a bf16
  // model over an f32 image at 1512 px: 13.7M values).
  const bool patch_conv =
      groups == 1 && weight.size(2) == weight.size(3) && weight.size(2) == stride && padding == 0;
  if (!(patch_conv && is_floating(x.dtype()) && is_floating(weight.dtype()))) {
    check_same_dtype("conv2d", x, weight);
  }
  if (bias.defined()) check_same_dtype("conv2d", weight, bias);
  int64_t cin = x.size(1), cout = weight.size(0), kh = weight.size(2), kw = weight.size(3);
  HD_CHECK(groups >= 1 && cin % groups == 0 && cout % groups == 0, "conv2d: groups = ", groups,
           " must divide input channels ", cin, " and output channels ", cout);
  HD_CHECK(weight.size(1) * groups == cin, "conv2d: weight ", weight.shape(), " with groups ",
           groups, " expects ", weight.size(1) * groups, " input channels, input ", x.shape(),
           " has ", cin);
  HD_CHECK(groups == 1 || (groups == cin && cout == cin), "conv2d: groups = ", groups,
           " is not supported (only 1 or depthwise groups == Cin == Cout; input ", x.shape(),
           ", weight ", weight.shape(), ")");
  HD_CHECK(!bias.defined() || (bias.dim() == 1 && bias.size(0) == cout), "conv2d: bias ",
           bias.str(), " must be [", cout, "] for weight ", weight.shape());
  geometry("conv2d", x.shape(), kh, kw, stride, padding);  // validates sizes

  // 16-bit CPU inputs ([Note: 16-bit saved tensors], ops/cpu_half.h): the depthwise kernels
  // convert inside and its node keeps the 16-bit input; the 1x1 and patch paths are reshapes
  // around a matmul, which takes 16-bit operands; only im2col runs on f32 copies.
#ifdef HD_HAVE_CUDA
  if (!x.device().is_cpu() && cuda::use_cudnn_conv()) {
    return conv_cudnn(to(x, weight.dtype()), weight, bias, stride, padding, groups);
  }
#endif
  if (groups > 1) return conv_depthwise(x, weight, bias, stride, padding);
  if (kh == 1 && kw == 1) return conv_1x1(x, weight, bias, stride, padding);
  if (patch_conv) return conv_patches(x, weight, bias, kh);
  if (is_cpu_half(x)) {
    return to(conv_im2col(half_to_f32(x), half_to_f32(weight), half_to_f32(bias), stride, padding),
              x.dtype());
  }
  return conv_im2col(x, weight, bias, stride, padding);
}

}  // namespace hd
