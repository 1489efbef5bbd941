// Sigmoid contrast with the text exchange; the normaliser's why is in contrastive_loss.h.
#include "ps3/contrastive_loss.h"

#include "autograd/error.h"
#include "ops/elementwise.h"
#include "ops/loss.h"
#include "ops/reduce.h"
#include "ops/shape.h"
#include "parallel/autograd_collectives.h"
#include "parallel/process_group.h"

namespace hd::ps3 {

Tensor distributed_sigmoid_loss(const Tensor& image_emb, const Tensor& text_emb,
                                const Tensor& logit_scale, const Tensor& logit_bias,
                                parallel::ProcessGroup* pg) {
  HD_CHECK(image_emb.defined() && text_emb.defined() && image_emb.dim() == 2 &&
               text_emb.dim() == 2 && image_emb.size(0) == text_emb.size(0) &&
               image_emb.size(1) == text_emb.size(1),
           "distributed_sigmoid_loss: image and text embeddings must be paired [B, D] rows, got ",
           image_emb.defined() ? image_emb.str() : "undefined", " and ",
           text_emb.defined() ? text_emb.str() : "undefined");
  const int64_t b = image_emb.size(0);
  if (!pg || pg->world_size() == 1) {
    HD_CHECK(b > 0, "distributed_sigmoid_loss: empty batch on a single process");
    return siglip_loss(image_emb, text_emb, logit_scale, logit_bias, true);
  }
  // Every rank's texts; local texts first (the positives sit on the diagonal), then the other
  // ranks' in rank order. The local block is taken from text_emb itself, so its gradient comes
  // straight back; the gathered copy of it only carries other ranks' (zero) contributions.
  parallel::GatheredRows gathered = parallel::all_gather_rows(text_emb, *pg);
  const int rank = pg->rank(), n = pg->world_size();
  int64_t total = 0;
  for (int64_t c : gathered.counts) total += c;
  HD_CHECK(total > 0, "distributed_sigmoid_loss: the global batch is empty on all ", n, " ranks");
  if (b == 0) {
    // Nothing to contrast here, but the graph must still reach the gathered texts so that this
    // rank runs the exchange's backward with the others.
    return mul(add(add(sum(gathered.all), sum(logit_scale)), sum(logit_bias)), 0.0);
  }
  std::vector<Tensor> texts{text_emb};
  for (int r = 0; r < n; ++r) {
    if (r == rank || gathered.counts[size_t(r)] == 0) continue;
    texts.push_back(narrow(gathered.all, 0, gathered.offset(r), gathered.counts[size_t(r)]));
  }
  Tensor loss = siglip_loss(image_emb, cat(texts, 0), logit_scale, logit_bias, true);
  // siglip_loss divides by B_local; rescale to B_total / N.
  const double rescale = double(b) * double(n) / double(total);
  Tensor out = rescale == 1.0 ? loss : mul(loss, rescale);
  // Keep the gathered own rows in the graph: the backward reduce-scatter needs every rank.
  return add(out, mul(sum(narrow(gathered.all, 0, gathered.offset(rank), b)), 0.0));
}

}  // namespace hd::ps3
