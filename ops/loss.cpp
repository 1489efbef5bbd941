#include "ops/loss.h"

#include <cmath>
#include <limits>

#include "autograd/node.h"
#include "ops/cpu_half.h"
#include "ops/dispatch.h"
#include "ops/elementwise.h"
#include "ops/factory.h"
#include "ops/linalg.h"
#include "ops/reduce.h"
#include "ops/shape.h"
#include "ops/softmax.h"

namespace hd {
namespace {

Tensor reduce(const Tensor& per_element, Reduction reduction) {
  switch (reduction) {
    case Reduction::none:
      return per_element;
    case Reduction::sum:
      return sum(per_element);
    case Reduction::mean:
      return mean(per_element);
  }
  return per_element;
}

void check_pair(const char* op, const Tensor& input, const Tensor& target) {
  check_same_device(op, {&input, &target});
  HD_CHECK(input.dtype() == DType::f32 || input.dtype() == DType::f64, op,
           ": expects a f32 or f64 input, got ", input.str(), " (convert with hd::to)");
  check_same_dtype(op, input, target);
  HD_CHECK(input.shape() == target.shape(), op, ": input ", input.shape(), " and target ",
           target.shape(), " must have the same shape");
}

// Checks lo <= x <= hi for every element (NaN fails, as in PyTorch).
void check_range(const char* op, const char* what, const Tensor& x) {
  if (x.numel() == 0) return;
  NoGradGuard no_grad;
  double hi = amax(x).item<double>(), lo = -amax(neg(x)).item<double>();
  HD_CHECK(lo >= 0.0 && hi <= 1.0, op, ": all elements of ", what,
           " should be between 0 and 1, got values in [", lo, ", ", hi, "] in ", x.str());
}

// log clamped at -100, PyTorch's guard against log(0) = -inf.
Tensor clamped_log(const Tensor& x) {
  return clamp_min(log(x), -100.0);
}
Tensor clamped_log1m(const Tensor& x) {
  return clamp_min(log1p(neg(x)), -100.0);
}

// BCE's backward is not the derivative of the clamped forward: PyTorch uses
// (p - y) / max(p (1 - p), 1e-12), which stays finite at p = 0 and p = 1.
struct BinaryCrossEntropyBackward final : Node {
  SavedTensor probs, target;
  std::string name() const override { return "BinaryCrossEntropyBackward"; }
  void release_saved() override {
    probs.reset();
    target.reset();
  }
  std::vector<Tensor> backward(const std::vector<Tensor>& grads) override {
    const Tensor& g = grads[0];
    Tensor p = probs.unpack(*this), y = target.unpack(*this);
    Tensor gp, gt;
    if (needs_input_grad(0)) gp = div(mul(g, sub(p, y)), clamp_min(mul(p, rsub(p, 1.0)), 1e-12));
    // PyTorch's target gradient is -logit(p), unclamped (+-inf at p = 0 or 1); matched as is.
    if (needs_input_grad(1)) gt = mul(g, sub(log1p(neg(p)), log(p)));
    return {gp, gt};
  }
};

}  // namespace

Tensor cross_entropy(const Tensor& logits, const Tensor& target, int64_t ignore_index,
                     Reduction reduction) {
  if (is_cpu_half(logits)) {  // ops/cpu_half.h: losses compute in f32
    return to(cross_entropy(half_to_f32(logits), target, ignore_index, reduction), logits.dtype());
  }
  const char* op = "cross_entropy";
  check_same_device(op, {&logits, &target});
  HD_CHECK(target.dtype() == DType::i64, op, ": target must hold i64 class indices, got ",
           target.str());
  HD_CHECK(logits.dim() == 1 || logits.dim() == 2, op, ": logits must be [N, C] or [C], got ",
           logits.shape());
  const bool batched = logits.dim() == 2;
  HD_CHECK(batched ? (target.dim() == 1 && target.size(0) == logits.size(0)) : target.dim() == 0,
           op, ": target ", target.shape(), " does not match logits ", logits.shape(),
           " (expected ", batched ? "[N]" : "a scalar", ")");
  Tensor lg = batched ? logits : unsqueeze(logits, 0);
  const int64_t n = lg.size(0), c = lg.size(1);
  Tensor tg = reshape(target, {n, 1});
  int64_t valid_rows = 0;
  for (int64_t t : target.to_vector<int64_t>()) {
    if (t == ignore_index) continue;
    HD_CHECK(t >= 0 && t < c, op, ": target ", t, " is out of range for ", c, " classes");
    ++valid_rows;
  }
  // Pick log p[target] with a one-hot mask: rows that match no class (ignored) pick 0.
  Tensor logp = log_softmax(lg, 1);
  Tensor hit = eq(reshape(arange(0, double(c), 1, DType::i64, lg.device()), {1, c}), tg);
  Tensor picked = sum(where(hit, logp, 0.0), {1});
  Tensor valid = ne(reshape(tg, {n}), double(ignore_index));
  Tensor per_row = where(valid, neg(picked), 0.0);
  if (!batched) per_row = reshape(per_row, {});
  switch (reduction) {
    case Reduction::none:
      return per_row;
    case Reduction::sum:
      return sum(per_row);
    case Reduction::mean:
      // All rows ignored: PyTorch returns 0/0 = nan (and zero gradients); so do we.
      return mul(sum(per_row), valid_rows > 0 ? 1.0 / double(valid_rows)
                                              : std::numeric_limits<double>::quiet_NaN());
  }
  return per_row;
}

Tensor binary_cross_entropy(const Tensor& probs, const Tensor& target, Reduction reduction) {
  if (is_cpu_half(probs) && probs.dtype() == target.dtype()) {  // ops/cpu_half.h
    return to(binary_cross_entropy(half_to_f32(probs), half_to_f32(target), reduction),
              probs.dtype());
  }
  const char* op = "binary_cross_entropy";
  check_pair(op, probs, target);
  check_range(op, "input", probs);
  check_range(op, "target", target);
  Tensor p = probs.detach(), y = target.detach();
  Tensor loss;
  {
    NoGradGuard no_grad;
    loss = neg(add(mul(y, clamped_log(p)), mul(rsub(y, 1.0), clamped_log1m(p))));
  }
  if (auto node = make_grad_node<BinaryCrossEntropyBackward>({&probs, &target})) {
    node->probs = SavedTensor(p);
    node->target = SavedTensor(y);
    set_history(loss, node);
  }
  return reduce(loss, reduction);
}

Tensor binary_cross_entropy_with_logits(const Tensor& logits, const Tensor& target,
                                        Reduction reduction) {
  if (is_cpu_half(logits) && logits.dtype() == target.dtype()) {  // in f32, as every loss
    return to(binary_cross_entropy_with_logits(half_to_f32(logits), half_to_f32(target), reduction),
              logits.dtype());
  }
  check_pair("binary_cross_entropy_with_logits", logits, target);
  // softplus(x) - x y == max(x,0) - x y + log(1 + exp(-|x|)) (softplus is the stable form), and
  // its gradient sigmoid(x) - y is right at x = 0, where relu/abs composites would give -y.
  return reduce(sub(softplus(logits), mul(logits, target)), reduction);
}

Tensor dice_loss(const Tensor& probs, const Tensor& target, double eps) {
  if (is_cpu_half(probs) && probs.dtype() == target.dtype()) {
    return to(dice_loss(half_to_f32(probs), half_to_f32(target), eps), probs.dtype());
  }
  const char* op = "dice_loss";
  check_pair(op, probs, target);
  HD_CHECK(probs.dim() >= 1 && probs.size(0) > 0, op, ": expects [B, ...] with B > 0, got ",
           probs.shape());
  const int64_t b = probs.size(0);
  Tensor p = div(reshape(probs, {b, -1}), 100.0), g = reshape(target, {b, -1});
  // The /100 follows VILA-HD; it only rescales the effective epsilon.
  Tensor num = add(mul(sum(mul(p, g), {1}), 2.0), eps);
  Tensor den = add(add(sum(p, {1}), sum(div(g, 100.0), {1})), eps);
  return mean(rsub(div(num, den), 1.0));
}

Tensor siglip_loss(const Tensor& image_emb, const Tensor& text_emb, const Tensor& logit_scale,
                   const Tensor& logit_bias, bool positives_on_diagonal) {
  if (is_cpu_half(image_emb)) {
    return to(siglip_loss(half_to_f32(image_emb), half_to_f32(text_emb), half_to_f32(logit_scale),
                          half_to_f32(logit_bias), positives_on_diagonal),
              image_emb.dtype());
  }
  const char* op = "siglip_loss";
  check_same_device(op, {&image_emb, &text_emb, &logit_scale, &logit_bias});
  HD_CHECK(image_emb.dim() == 2 && text_emb.dim() == 2 && image_emb.size(1) == text_emb.size(1), op,
           ": expects image_emb [B, D] and text_emb [M, D], got ", image_emb.shape(), " and ",
           text_emb.shape());
  HD_CHECK(image_emb.size(0) > 0, op, ": empty batch ", image_emb.shape());
  HD_CHECK(logit_scale.numel() == 1 && logit_bias.numel() == 1, op,
           ": logit_scale and logit_bias must be scalars, got ", logit_scale.shape(), " and ",
           logit_bias.shape());
  check_same_dtype(op, image_emb, text_emb);
  check_same_dtype(op, image_emb, logit_scale);
  check_same_dtype(op, image_emb, logit_bias);
  const int64_t b = image_emb.size(0), m = text_emb.size(0);
  const DType dt = image_emb.dtype();
  Tensor scale = exp(reshape(logit_scale, {})), bias = reshape(logit_bias, {});
  Tensor logits = add(mul(matmul(image_emb, transpose(text_emb, 0, 1)), scale), bias);
  Tensor labels = full({b, m}, -1.0, dt, image_emb.device());
  if (positives_on_diagonal) {
    Tensor rows = reshape(arange(0, double(b), 1, DType::i64, image_emb.device()), {b, 1});
    Tensor cols = reshape(arange(0, double(m), 1, DType::i64, image_emb.device()), {1, m});
    labels = where(eq(rows, cols), full({}, 1.0, dt, image_emb.device()), labels);
  }
  return div(neg(sum(log_sigmoid(mul(labels, logits)))), double(b));
}

}  // namespace hd
