// The vision memo: PS3's outputs per image, kept across training steps.
//
// Valid only while PS3 cannot change them: the vision tower and the selection modules frozen,
// selection bottom-up or teacher-forced (no prompt). Then a training step costs the projector and
// the LLM only: on the demo's CPU ~10x cheaper, which buys the LLM the thousands of steps it
// needs to learn to read (docs/vilahd.md). An entry keeps only what VilaHdModel::look reads, and
// travels between ranks as a flat tensor list, so that each rank can run PS3 on its share of the
// records and still hold every entry (launcher/vilahd_memo.h).
#pragma once

#include <map>
#include <string>
#include <vector>

#include "ps3/vision_model.h"

namespace hd::vilahd {

struct VisionMemo {
  std::map<std::string, ps3::VisionOutputs> outputs;  // by VilaHdModel::vision_memo_key
};

// What an entry keeps of PS3's outputs: the projector's features, the high-res positions, the
// prior and the selection maps (the tensors are shared, not copied).
ps3::VisionOutputs memo_entry(const ps3::VisionOutputs& out);

// An entry as a flat list for parallel::broadcast_tensor_list, and back. Throws on a list that
// is not one entry's.
std::vector<Tensor> memo_entry_to_tensors(const ps3::VisionOutputs& entry);
ps3::VisionOutputs memo_entry_from_tensors(const std::vector<Tensor>& tensors);

}  // namespace hd::vilahd
