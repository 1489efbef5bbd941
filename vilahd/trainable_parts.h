// VILA-HD's trainable parts (ps3-reference-implementation.md §3.7): which parameters a stage
// trains. Frozen parameters stop requiring gradients, so autograd computes none for them, the
// optimizer is built without them (no AdamW moments) and FSDP communicates no gradient for them.
//   llm                 llm.*
//   projector           mm_projector.* except the prompt head
//   top_down_selection  mm_projector.top_down_prompt_head.* and PS3's selection modules
//                       (selection_feature_proj, highres_selection_feature_module,
//                       prompt_proj_for_highres); not prior_prompt, as in the reference
//   vision_tower        the rest of vision_tower.*
#pragma once

#include <set>
#include <string>

#include "autograd/module.h"

namespace hd::vilahd {

// "llm,projector" -> {"llm", "projector"}; throws naming an unknown part.
std::set<std::string> parse_trainable_parts(const std::string& csv);
std::string trainable_part_of(const std::string& parameter_name);
// Parameters outside `parts` stop requiring gradients; returns how many stay trainable.
int64_t freeze_all_but(Module& model, const std::set<std::string>& parts);

}  // namespace hd::vilahd
