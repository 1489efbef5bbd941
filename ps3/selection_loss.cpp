// Selection BCE over local rows; the weighting's why is in selection_loss.h.
#include "ps3/selection_loss.h"

#include <algorithm>

#include "autograd/error.h"
#include "ops/elementwise.h"
#include "ops/factory.h"
#include "ops/index.h"
#include "ops/loss.h"
#include "ops/reduce.h"
#include "ops/shape.h"

namespace hd::ps3 {
namespace {

// Per-element weights [n, H, W] that turn a sum of elementwise BCE into, per row, half the mean
// over the box cells plus half the mean over the rest (the plain mean for a row without box
// cells), averaged over rows. A constant of the targets: no gradient flows through it.
Tensor balanced_weights(const Tensor& target) {
  std::vector<double> g = target.to_vector<double>();
  const int64_t n = target.size(0), cells = target.numel() / std::max<int64_t>(n, 1);
  std::vector<double> w(g.size());  // in double: exact for f64 maps, rounded once for f32
  for (int64_t r = 0; r < n; ++r) {
    const double* gr = g.data() + r * cells;
    double pos = 0;
    for (int64_t k = 0; k < cells; ++k) pos += gr[k] > 0.5;
    const double neg = double(cells) - pos;
    const double wp = pos > 0 && neg > 0 ? 0.5 / pos : 1.0 / double(cells);
    const double wn = pos > 0 && neg > 0 ? 0.5 / neg : 1.0 / double(cells);
    for (int64_t k = 0; k < cells; ++k)
      w[size_t(r * cells + k)] = (gr[k] > 0.5 ? wp : wn) / double(n);
  }
  return from_vector<double>(w, target.shape(), target.dtype(), target.device());
}

// Mean over `rows` with box cells of logsumexp(z) - logsumexp(z over box cells), z = logit(p):
// the negative log of the softmax mass on the box. Rows without a box cell add nothing.
Tensor box_rank_loss(const Tensor& p_rows, const Tensor& g_rows) {
  const int64_t n = p_rows.size(0), cells = p_rows.numel() / n;
  std::vector<float> g = to(g_rows, DType::f32).to_vector<float>();
  std::vector<uint8_t> outside(g.size());
  std::vector<double> row_weight(size_t(n), 0.0);
  int64_t with_box = 0;
  for (int64_t r = 0; r < n; ++r) {
    bool any = false;
    for (int64_t k = 0; k < cells; ++k) {
      outside[size_t(r * cells + k)] = g[size_t(r * cells + k)] <= 0.5f;
      any = any || g[size_t(r * cells + k)] > 0.5f;
    }
    if (any) row_weight[size_t(r)] = 1.0, ++with_box;
  }
  Tensor flat = reshape(clamp(p_rows, 1e-6, 1.0 - 1e-6), {n, cells});
  Tensor z = sub(log(flat), log(rsub(flat, 1.0)));
  Tensor mask = from_vector(std::vector<bool>(outside.begin(), outside.end()), {n, cells},
                            DType::boolean, p_rows.device());
  Tensor rank = sub(logsumexp(z, 1), logsumexp(masked_fill(z, mask, -1e4), 1));
  if (with_box == 0) return mul(sum(rank), 0.0);
  for (double& w : row_weight) w /= double(with_box);
  return sum(mul(rank, from_vector<double>(row_weight, {n}, rank.dtype(), rank.device())));
}

}  // namespace

Tensor selection_bce(const std::vector<Tensor>& probs, const std::vector<Tensor>& gt_maps,
                     const std::vector<bool>& is_local, double row_weight, SelectionLoss mode) {
  HD_CHECK(!probs.empty() && probs.size() == gt_maps.size(), "selection_bce: ", probs.size(),
           " probability maps for ", gt_maps.size(), " ground-truth maps (one per high-res scale)");
  std::vector<int64_t> rows;
  for (size_t b = 0; b < is_local.size(); ++b)
    if (is_local[b]) rows.push_back(int64_t(b));
  Tensor total;
  for (size_t s = 0; s < probs.size(); ++s) {
    const Tensor& p = probs[s];
    const Tensor& g = gt_maps[s];
    HD_CHECK(p.defined() && g.defined() && p.shape() == g.shape() && p.dim() == 3 &&
                 p.size(0) == int64_t(is_local.size()),
             "selection_bce: scale ", s, ": probabilities ", p.defined() ? p.str() : "undefined",
             " and ground truth ", g.defined() ? g.str() : "undefined",
             " must both be [B = ", is_local.size(), ", H, W]");
    Tensor term;
    if (rows.empty()) {
      term = mul(sum(p), 0.0);
    } else {
      Tensor idx = from_vector<int64_t>(rows, {int64_t(rows.size())});
      Tensor target = g.dtype() == p.dtype() ? g : to(g, p.dtype());
      Tensor p_rows = index_select(p, 0, idx), g_rows = index_select(target, 0, idx);
      term = mode == SelectionLoss::bce
                 ? binary_cross_entropy(p_rows, g_rows)
                 : sum(mul(binary_cross_entropy(p_rows, g_rows, Reduction::none),
                           balanced_weights(g_rows)));
      if (mode == SelectionLoss::balanced_rank) term = add(term, box_rank_loss(p_rows, g_rows));
    }
    total = total.defined() ? add(total, term) : term;
  }
  const double weight = rows.empty() ? 0.0 : row_weight;
  return mul(total, weight / double(probs.size()));
}

}  // namespace hd::ps3
