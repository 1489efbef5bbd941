#include "ops/similarity.h"

#include <string>
#include <vector>

#include "autograd/node.h"
#include "ops/cpu/similarity.h"
#include "ops/dispatch.h"
#include "ops/elementwise.h"
#include "ops/reduce.h"
#include "ops/shape.h"

namespace hd {

// Composites of differentiable ops. The clamp is applied to the squared norm (sqrt is
// monotonic, so max(||x||, eps) == sqrt(max(||x||^2, eps^2))): clamping after the sqrt would
// send 0 * inf = NaN gradients back through sqrt for an all-zero vector, where PyTorch gives 0.

Tensor l2_normalize(const Tensor& x, int64_t dim, double eps) {
  HD_CHECK(is_floating(x.dtype()), "l2_normalize: expects a floating-point tensor, got ", x.str());
  HD_CHECK(x.dim() >= 1, "l2_normalize: expects at least one dim, got ", x.str());
  int64_t d = normalize_dim("l2_normalize", dim, x.dim());
  Tensor sq = sum(square(x), {d}, /*keepdim=*/true);
  return div(x, sqrt(clamp_min(sq, eps * eps)));
}

namespace {

// [Note: fused cosine similarity] Over the last dim on the CPU (PS3's selection heads: a grid of
// features against one prompt per image) the similarity is one kernel each way
// (ops/cpu/similarity.h) instead of the composite's ten maps and sums over the broadcast grid:
// bf16 [2, 54, 54, 32] against [2, 1, 1, 32], forward + backward, ~500 us composed. Sums are in
// f32 (f64 for f64) and only the results are rounded, where the composite rounded every step;
// the formula is the composite's (PyTorch 1.13's).
struct CosineSimilarityBackward final : Node {
  SavedTensor a, b;
  Tensor stats;  // [..., 3]: w12, w1, w2 per row, compute type
  Shape a_shape, b_shape, shape;
  double eps = 0;
  std::string name() const override { return "CosineSimilarityBackward"; }
  void release_saved() override {
    a.reset();
    b.reset();
    stats = Tensor();
  }
  std::vector<Tensor> backward(const std::vector<Tensor>& grads) override {
    const Tensor ae = expand(a.unpack(*this), shape), be = expand(b.unpack(*this), shape);
    Tensor ga = Tensor::empty(shape, ae.dtype(), ae.device());
    Tensor gb = Tensor::empty(shape, ae.dtype(), ae.device());
    const Tensor g = grads[0];
    dispatch(g, "cosine_similarity_backward",
             [&] { cpu::cosine_backward(ae, be, g, stats, eps, ga, gb); });
    return {needs_input_grad(0) ? sum_to(ga, a_shape) : Tensor(),
            needs_input_grad(1) ? sum_to(gb, b_shape) : Tensor()};
  }
};

// The operand as the kernel reads it: unit stride along the last dim.
Tensor last_dim_unit_stride(const Tensor& t) {
  return t.size(-1) <= 1 || t.stride(-1) == 1 ? t.detach() : contiguous(t.detach());
}

Tensor cosine_similarity_fused(const Tensor& a, const Tensor& b, const Shape& shape, double eps) {
  const Tensor ac = last_dim_unit_stride(a), bc = last_dim_unit_stride(b);
  const Tensor ae = expand(ac, shape), be = expand(bc, shape);
  const Shape lead(shape.begin(), shape.end() - 1);
  Tensor out = Tensor::empty(lead, a.dtype(), a.device());
  Shape stats_shape = lead;
  stats_shape.push_back(3);
  Tensor stats =
      Tensor::empty(stats_shape, a.dtype() == DType::f64 ? DType::f64 : DType::f32, a.device());
  dispatch(a, "cosine_similarity", [&] { cpu::cosine_forward(ae, be, eps, out, stats); });
  if (auto node = make_grad_node<CosineSimilarityBackward>({&a, &b})) {
    node->a = SavedTensor(ac);
    node->b = SavedTensor(bc);
    node->stats = stats;
    node->a_shape = a.shape();
    node->b_shape = b.shape();
    node->shape = shape;
    node->eps = eps;
    set_history(out, node);
  }
  return out;
}

}  // namespace

Tensor cosine_similarity(const Tensor& a, const Tensor& b, int64_t dim, double eps) {
  check_same_device("cosine_similarity", {&a, &b});
  check_same_dtype("cosine_similarity", a, b);
  HD_CHECK(is_floating(a.dtype()), "cosine_similarity: expects floating-point tensors, got ",
           a.str());
  Shape shape = broadcast_shapes(a.shape(), b.shape(), "cosine_similarity");
  HD_CHECK(!shape.empty(), "cosine_similarity: expects at least one dim, got ", a.shape(), " and ",
           b.shape());
  int64_t d = normalize_dim("cosine_similarity", dim, int64_t(shape.size()));
  if (d == int64_t(shape.size()) - 1 && a.device().is_cpu() && shape.back() > 0) {
    return cosine_similarity_fused(a, b, shape, eps);  // [Note: fused cosine similarity]
  }
  Tensor ae = expand(a, shape), be = expand(b, shape);
  // PyTorch 1.13's formula: w12 / sqrt(max(w1 * w2, eps^2)), one sqrt of the product.
  Tensor w12 = sum(mul(ae, be), {d});
  Tensor w1 = sum(square(ae), {d}), w2 = sum(square(be), {d});
  return div(w12, sqrt(clamp_min(mul(w1, w2), eps * eps)));
}

}  // namespace hd
