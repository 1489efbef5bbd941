// Selection BCE over local rows; the weighting's why is in selection_loss.h.
#include "ps3/selection_loss.h"

#include "autograd/error.h"
#include "ops/elementwise.h"
#include "ops/factory.h"
#include "ops/index.h"
#include "ops/loss.h"
#include "ops/reduce.h"
#include "ops/shape.h"

namespace hd::ps3 {

Tensor selection_bce(const std::vector<Tensor>& probs, const std::vector<Tensor>& gt_maps,
                     const std::vector<bool>& is_local, double row_weight) {
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
      term = binary_cross_entropy(index_select(p, 0, idx), index_select(target, 0, idx));
    }
    total = total.defined() ? add(total, term) : term;
  }
  const double weight = rows.empty() ? 0.0 : row_weight;
  return mul(total, weight / double(probs.size()));
}

}  // namespace hd::ps3
