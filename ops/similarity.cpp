#include "ops/similarity.h"

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

Tensor cosine_similarity(const Tensor& a, const Tensor& b, int64_t dim, double eps) {
  check_same_device("cosine_similarity", {&a, &b});
  check_same_dtype("cosine_similarity", a, b);
  HD_CHECK(is_floating(a.dtype()), "cosine_similarity: expects floating-point tensors, got ",
           a.str());
  Shape shape = broadcast_shapes(a.shape(), b.shape(), "cosine_similarity");
  HD_CHECK(!shape.empty(), "cosine_similarity: expects at least one dim, got ", a.shape(), " and ",
           b.shape());
  int64_t d = normalize_dim("cosine_similarity", dim, int64_t(shape.size()));
  Tensor ae = expand(a, shape), be = expand(b, shape);
  // PyTorch 1.13's formula: w12 / sqrt(max(w1 * w2, eps^2)), one sqrt of the product.
  Tensor w12 = sum(mul(ae, be), {d});
  Tensor w1 = sum(square(ae), {d}), w2 = sum(square(be), {d});
  return div(w12, sqrt(clamp_min(mul(w1, w2), eps * eps)));
}

}  // namespace hd
