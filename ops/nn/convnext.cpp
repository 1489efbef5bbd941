// ConvNeXt pieces: see convnext.h.
#include "ops/nn/convnext.h"

#include <cmath>

#include "ops/conv.h"
#include "ops/elementwise.h"
#include "ops/norm.h"
#include "ops/shape.h"

namespace hd::nn {

Conv2d::Conv2d(int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t padding,
               int64_t groups, bool with_bias)
    : stride(stride), padding(padding), groups(groups) {
  HD_CHECK(groups > 0 && in % groups == 0 && out % groups == 0, "Conv2d: groups ", groups,
           " must divide in ", in, " and out ", out);
  double bound = 1.0 / std::sqrt(double(in / groups * kernel * kernel));
  weight = register_parameter("weight", {out, in / groups, kernel, kernel},
                              Init::uniform(-bound, bound));
  if (with_bias) bias = register_parameter("bias", {out}, Init::uniform(-bound, bound));
}

Tensor Conv2d::forward(const Tensor& x) const {
  return conv2d(x, weight, bias, stride, padding, groups);
}

LayerNorm2d::LayerNorm2d(int64_t channels, double eps) : eps(eps) {
  weight = register_parameter("weight", {channels}, Init::ones());
  bias = register_parameter("bias", {channels}, Init::zeros());
}

Tensor LayerNorm2d::forward(const Tensor& x) const {
  HD_CHECK(x.dim() == 4 && x.size(1) == weight.size(0), "LayerNorm2d: expected [B, ",
           weight.size(0), ", H, W], got ", x.str());
  Tensor nhwc = contiguous(permute(x, {0, 2, 3, 1}));
  return permute(layer_norm(nhwc, weight, bias, eps), {0, 3, 1, 2});
}

ConvNeXtBlock::ConvNeXtBlock(int64_t dim, int64_t mlp_ratio, double ln_eps,
                             double layer_scale_init) {
  conv_dw = register_module("conv_dw", std::make_shared<Conv2d>(dim, dim, 7, 1, 3, dim));
  norm = register_module("norm", std::make_shared<LayerNorm>(dim, ln_eps));
  mlp = register_module("mlp", std::make_shared<MLP>(dim, mlp_ratio * dim));
  weight = register_parameter("weight", {dim}, Init::constant(layer_scale_init));
}

Tensor ConvNeXtBlock::forward_nhwc(const Tensor& x) const {
  HD_CHECK(x.dim() == 4 && x.size(3) == weight.size(0), "ConvNeXtBlock: expected [B, H, W, ",
           weight.size(0), "], got ", x.str());
  Tensor nchw = contiguous(permute(x, {0, 3, 1, 2}));
  Tensor h = contiguous(permute(conv_dw->forward(nchw), {0, 2, 3, 1}));
  h = mlp->forward(norm->forward(h));
  return add(x, mul(h, weight));
}

}  // namespace hd::nn
