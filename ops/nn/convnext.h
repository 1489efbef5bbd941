// ConvNeXt pieces (timm ConvNeXtBlock, LayerNorm2d) and a plain Conv2d module. PS3's light
// high-res selection encoder is a stem conv + LayerNorm2d + 3 of these blocks + a 1x1 conv
// (reference §1.5.4); they are generic, so they live with the other layers.
//
// The blocks work channels-last ([B, H, W, C]) between calls: the LayerNorm and the MLP are
// per-pixel over C, so only the depthwise conv needs NCHW, and staying NHWC saves a
// permute-copy per norm. Names are timm's: conv_dw, norm, mlp.fc1, mlp.fc2 and the layer scale
// as `weight` (PS3 renamed timm's `gamma` to dodge an HF save_pretrained bug).
#pragma once

#include <memory>

#include "autograd/module.h"
#include "ops/nn/layers.h"

namespace hd::nn {

// PyTorch Conv2d: weight [out, in / groups, k, k], bias [out]; default init U(+-1/sqrt(fan_in)).
class Conv2d : public Module {
 public:
  Conv2d(int64_t in, int64_t out, int64_t kernel, int64_t stride = 1, int64_t padding = 0,
         int64_t groups = 1, bool bias = true);
  Tensor forward(const Tensor& x) const;  // NCHW -> NCHW
  Tensor weight, bias;
  int64_t stride, padding, groups;
};

// LayerNorm over the channel dim of an NCHW map (timm LayerNorm2d). Returns NCHW.
class LayerNorm2d : public Module {
 public:
  explicit LayerNorm2d(int64_t channels, double eps = 1e-6);
  Tensor forward(const Tensor& x) const;
  Tensor weight, bias;
  double eps;
};

// x + gamma * mlp(LN(dwconv7x7(x))), channels-last in and out.
class ConvNeXtBlock : public Module {
 public:
  ConvNeXtBlock(int64_t dim, int64_t mlp_ratio = 4, double ln_eps = 1e-6,
                double layer_scale_init = 1e-6);
  Tensor forward_nhwc(const Tensor& x) const;  // [B, H, W, C] -> [B, H, W, C]
  std::shared_ptr<Conv2d> conv_dw;
  std::shared_ptr<LayerNorm> norm;
  std::shared_ptr<MLP> mlp;
  Tensor weight;  // layer scale [C]
};

}  // namespace hd::nn
