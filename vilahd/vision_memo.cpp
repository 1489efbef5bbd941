#include "vilahd/vision_memo.h"

#include "autograd/error.h"
#include "ops/factory.h"

namespace hd::vilahd {

ps3::VisionOutputs memo_entry(const ps3::VisionOutputs& out) {
  ps3::VisionOutputs kept;
  kept.low_res_features = out.low_res_features;
  kept.high_res_features = out.high_res_features;
  kept.high_res_positions = out.high_res_positions;
  kept.prior_probs = out.prior_probs;
  kept.selection_maps = out.selection_maps;
  return kept;
}

// Layout: [counts = i64 {#prior, #selection}, low-res features, high-res features, positions,
// prior maps..., selection maps...].
std::vector<Tensor> memo_entry_to_tensors(const ps3::VisionOutputs& entry) {
  std::vector<Tensor> list;
  list.push_back(from_vector<int64_t>(
      {int64_t(entry.prior_probs.size()), int64_t(entry.selection_maps.size())}, {2}));
  list.push_back(entry.low_res_features);
  list.push_back(entry.high_res_features);
  list.push_back(entry.high_res_positions);
  list.insert(list.end(), entry.prior_probs.begin(), entry.prior_probs.end());
  list.insert(list.end(), entry.selection_maps.begin(), entry.selection_maps.end());
  return list;
}

ps3::VisionOutputs memo_entry_from_tensors(const std::vector<Tensor>& list) {
  HD_CHECK(
      !list.empty() && list[0].defined() && list[0].dtype() == DType::i64 && list[0].numel() == 2,
      "vision memo entry: the list does not start with its counts (", list.size(), " tensors)");
  const std::vector<int64_t> counts = list[0].to_vector<int64_t>();
  HD_CHECK(counts[0] >= 0 && counts[1] >= 0 && int64_t(list.size()) == 4 + counts[0] + counts[1],
           "vision memo entry: ", list.size(), " tensors for ", counts[0], " prior and ", counts[1],
           " selection maps");
  ps3::VisionOutputs e;
  e.low_res_features = list[1];
  e.high_res_features = list[2];
  e.high_res_positions = list[3];
  e.prior_probs.assign(list.begin() + 4, list.begin() + 4 + counts[0]);
  e.selection_maps.assign(list.begin() + 4 + counts[0], list.end());
  return e;
}

}  // namespace hd::vilahd
