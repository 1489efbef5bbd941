#include "vilahd/trainable_parts.h"

#include <sstream>

#include "autograd/error.h"

namespace hd::vilahd {

namespace {
const std::set<std::string> kParts = {"llm", "projector", "top_down_selection", "vision_tower"};
bool starts_with(const std::string& s, const char* p) {
  return s.rfind(p, 0) == 0;
}
}  // namespace

std::set<std::string> parse_trainable_parts(const std::string& csv) {
  std::set<std::string> parts;
  std::stringstream in(csv);
  std::string item;
  while (std::getline(in, item, ',')) {
    if (item.empty()) continue;
    HD_CHECK(kParts.count(item), "trainable part '", item,
             "' is not one of llm, projector, top_down_selection, vision_tower");
    parts.insert(item);
  }
  HD_CHECK(!parts.empty(),
           "no trainable part given (llm, projector, top_down_selection, vision_tower)");
  return parts;
}

std::string trainable_part_of(const std::string& n) {
  if (starts_with(n, "llm.")) return "llm";
  if (starts_with(n, "mm_projector.top_down_prompt_head.")) return "top_down_selection";
  if (starts_with(n, "mm_projector.")) return "projector";
  for (const char* m :
       {"vision_tower.selection_feature_proj.", "vision_tower.highres_selection_feature_module.",
        "vision_tower.prompt_proj_for_highres."})
    if (starts_with(n, m)) return "top_down_selection";
  HD_CHECK(starts_with(n, "vision_tower."), "parameter '", n, "' belongs to no VILA-HD part");
  return "vision_tower";
}

int64_t freeze_all_but(Module& model, const std::set<std::string>& parts) {
  int64_t trainable = 0;
  for (auto& [name, p] : model.named_parameters()) {
    const bool train = parts.count(trainable_part_of(name)) > 0;
    Tensor t = p;
    t.requires_grad_(train);
    trainable += train;
  }
  return trainable;
}

}  // namespace hd::vilahd
