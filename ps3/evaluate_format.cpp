// The evaluation's console table and JSON document (definitions in evaluate.h).
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

#include "ps3/evaluate.h"

namespace hd::ps3 {
namespace {

std::string format(const char* fmt, auto... args) {
  char buf[512];
  std::snprintf(buf, sizeof buf, fmt, args...);
  return buf;
}

double ratio(double a, double b) {
  return b > 0 ? a / b : 0.0;
}

std::string selection_rows(const char* mode, const SelectionScores& s,
                           const std::vector<int64_t>& scales) {
  std::string out;
  for (size_t k = 0; k <= scales.size(); ++k) {
    const bool all = k == scales.size();
    const double rc = all ? s.recall_all : s.recall[k],
                 rr = all ? s.random_recall_all : s.random_recall[k];
    const double pc = all ? s.precision_all : s.precision[k];
    const double pr = all ? s.random_precision_all : s.random_precision[k];
    const double ceiling = all ? s.ceiling_recall_all : s.ceiling_recall[k];
    out += format(
        "  %-10s %6s   %.3f  (random %.4f, %6.1fx; ceiling %.3f)   %.3f  (random %.4f, %6.1fx)\n",
        k == 0 ? mode : "", all ? "all" : std::to_string(scales[k]).c_str(), rc, rr, ratio(rc, rr),
        ceiling, pc, pr, ratio(pc, pr));
  }
  return out;
}

nlohmann::json selection_json(const SelectionScores& s, const std::vector<int64_t>& scales) {
  nlohmann::json per_scale = nlohmann::json::array();
  for (size_t k = 0; k < scales.size(); ++k)
    per_scale.push_back({{"scale", scales[k]},
                         {"recall", s.recall[k]},
                         {"precision", s.precision[k]},
                         {"random_recall", s.random_recall[k]},
                         {"random_precision", s.random_precision[k]},
                         {"ceiling_recall", s.ceiling_recall[k]}});
  return {{"queries", s.queries},
          {"per_scale", per_scale},
          {"all",
           {{"recall", s.recall_all},
            {"precision", s.precision_all},
            {"random_recall", s.random_recall_all},
            {"random_precision", s.random_precision_all},
            {"ceiling_recall", s.ceiling_recall_all}}}};
}

nlohmann::json probs_json(const ProbStats& p) {
  return {{"mean_in_box", p.mean_in},
          {"mean_outside", p.mean_out},
          {"max_in_box", p.max_in},
          {"max_outside", p.max_out},
          {"auc", p.auc}};
}

}  // namespace

std::string eval_table(const EvalResult& r) {
  std::string out = format(
      "selection (top-down: each caption's prompt vs its box; bottom-up: the prior vs the union "
      "of the image's boxes; no GT forcing)\n"
      "  %-10s %6s   %-48s %s\n",
      "mode", "scale", "recall of box patches", "precision of selected patches");
  out += selection_rows("top-down", r.top_down, r.scales);
  out += selection_rows("bottom-up", r.bottom_up, r.scales);
  out += "probability map on the low-res grid (a flat map has AUC 0.5)\n";
  auto probs = [&](const char* mode, const ProbStats& p) {
    return format(
        "  %-10s mean in box %.4f / outside %.4f   max in %.4f / outside %.4f   AUC %.3f\n", mode,
        p.mean_in, p.mean_out, p.max_in, p.max_out, p.auc);
  };
  out += probs("top-down", r.top_down_probs) + probs("bottom-up", r.bottom_up_probs);
  const FirstPick& f = r.top_down_first_pick;
  out += format(
      "top-down's highest cell: in its box %.3f, on another region %.3f, elsewhere %.3f; median "
      "rank of the box's best cell %.0f\n",
      f.own_box, f.other_region, f.elsewhere, f.median_box_rank);
  out += format(
      "retrieval top-1\n  forced to the GT box, caption -> region:    %.3f  (chance %.4f, %.1fx)\n",
      r.retrieval_forced_top1, r.retrieval_forced_chance,
      ratio(r.retrieval_forced_top1, r.retrieval_forced_chance));
  if (r.retrieval_topdown_images > 0)
    out += format(
        "  top-down selection, caption -> image:     %.3f  (chance %.4f, %.1fx; %lld images)\n",
        r.retrieval_topdown_top1, r.retrieval_topdown_chance,
        ratio(r.retrieval_topdown_top1, r.retrieval_topdown_chance),
        static_cast<long long>(r.retrieval_topdown_images));
  return out;
}

std::string eval_json(const EvalResult& r) {
  nlohmann::json j = {{"images", r.images},
                      {"queries", r.queries},
                      {"scales", r.scales},
                      {"top_down", selection_json(r.top_down, r.scales)},
                      {"bottom_up", selection_json(r.bottom_up, r.scales)},
                      {"top_down_probability", probs_json(r.top_down_probs)},
                      {"bottom_up_probability", probs_json(r.bottom_up_probs)},
                      {"top_down_first_pick",
                       {{"own_box", r.top_down_first_pick.own_box},
                        {"other_region", r.top_down_first_pick.other_region},
                        {"elsewhere", r.top_down_first_pick.elsewhere},
                        {"median_box_rank", r.top_down_first_pick.median_box_rank}}},
                      {"retrieval_forced",
                       {{"top1", r.retrieval_forced_top1}, {"chance", r.retrieval_forced_chance}}},
                      {"retrieval_top_down",
                       {{"top1", r.retrieval_topdown_top1},
                        {"chance", r.retrieval_topdown_chance},
                        {"images", r.retrieval_topdown_images}}}};
  return j.dump(2) + "\n";
}

}  // namespace hd::ps3
