// Stage-2 selection modules and the probability formula: see selection.h.
#include "ps3/selection.h"

#include "ops/elementwise.h"
#include "ops/linalg.h"
#include "ops/resample.h"
#include "ops/shape.h"
#include "ops/similarity.h"

namespace hd::ps3 {

SelectionFeatureProj::SelectionFeatureProj(int64_t in, int64_t out) {
  fc1 = register_module("fc1", std::make_shared<nn::Linear>(in, in));
  norm = register_module("norm", std::make_shared<nn::LayerNorm>(in, 1e-5));  // torch default
  fc2 = register_module("fc2", std::make_shared<nn::Linear>(in, out));
}

Tensor SelectionFeatureProj::forward_rows(const Tensor& x, int64_t rows) const {
  Tensor h = norm->forward(gelu(fc1->forward(x)));
  return linear(h, narrow(fc2->weight, 0, 0, rows), narrow(fc2->bias, 0, 0, rows));
}

ShallowConvNet::Stem::Stem(int64_t channels, int64_t hidden, int64_t kernel) {
  conv = register_module("0", std::make_shared<nn::Conv2d>(channels, hidden, kernel, kernel));
  ln = register_module("1", std::make_shared<nn::LayerNorm2d>(hidden, 1e-6));
}

ShallowConvNet::ShallowConvNet(const VisionConfig& c) {
  stem = register_module("stem",
                         std::make_shared<Stem>(c.channels, c.convnext_hidden, c.convnext_stem));
  blocks = register_module("blocks", std::make_shared<ModuleList<nn::ConvNeXtBlock>>());
  for (int64_t i = 0; i < c.convnext_depth; ++i) {
    blocks->push_back(std::make_shared<nn::ConvNeXtBlock>(c.convnext_hidden));
  }
  out_proj = register_module("out_proj",
                             std::make_shared<nn::Conv2d>(c.convnext_hidden, c.convnext_out, 1));
}

Tensor ShallowConvNet::forward(const Tensor& images) const {
  // Stem in NCHW (a strided conv), then channels-last through the blocks; the 1x1 out_proj is a
  // Linear over channels with the conv weight viewed as [out, in].
  Tensor x = stem->ln->forward(stem->conv->forward(images));  // NCHW
  x = contiguous(permute(x, {0, 2, 3, 1}));
  for (const auto& block : *blocks) x = block->forward_nhwc(x);
  const Tensor& w = out_proj->weight;
  return linear(x, reshape(w, {w.size(0), w.size(1)}), out_proj->bias);
}

Tensor selection_probability(const SelectionFeatures& f, const Tensor& prompt,
                             const nn::Linear& prompt_proj) {
  const int64_t B = f.lowres.size(0), G = f.lowres.size(1), W = f.lowres.size(3);
  const int64_t Co = f.highres.size(3);
  HD_CHECK(prompt.defined() && prompt.shape() == Shape({B, W}), "PS3 selection: prompt must be [",
           B, ", ", W, "], got ", prompt.defined() ? prompt.str() : std::string("undefined"));
  // Low-res logits: cos(F_0[y, x], p) on the G x G grid.
  Tensor p = reshape(prompt, {B, 1, 1, W});
  Tensor cos_low = cosine_similarity(f.lowres, p, -1);  // [B, G, G]
  // High-res logits: cos(G[y, x], q_0) on the ConvNeXt grid, 2x2 (adaptive) max-pooled to G.
  Tensor q =
      linear(prompt, narrow(prompt_proj.weight, 0, 0, Co), narrow(prompt_proj.bias, 0, 0, Co));
  Tensor cos_high = cosine_similarity(f.highres, reshape(q, {B, 1, 1, Co}), -1);  // [B, Gs, Gs]
  Tensor pooled = adaptive_max_pool2d(cos_high, G, G).values;
  // softmax([5 * avg, 0])[0] = sigmoid(5 * avg); the reference's clamp to [-10, 10] never binds.
  return sigmoid(mul(add(cos_low, pooled), 2.5));
}

}  // namespace hd::ps3
