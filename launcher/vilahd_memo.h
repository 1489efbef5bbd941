// Filling the vision memo of a VILA-HD stage (vilahd/vision_memo.h) across ranks.
//
// With the memo on, PS3 runs once per distinct (image, box) before step 0 instead of once per
// sample per step. Filling is the stage's largest fixed cost (~0.27 s per record on the demo's
// CPU), so it is split: the distinct keys are dealt round-robin, rank r runs PS3 on its share,
// and every entry then reaches every rank by broadcast (~0.3 MB each; memory, not time, is what
// a full memo costs). Two rules keep it correct under FSDP:
//  * every rank runs PS3 the same number of times (the vision blocks' all-gathers pair up): a
//    rank with a smaller share runs padding passes whose outputs are dropped;
//  * the deal and the broadcast order depend only on the record list, which every rank reads
//    the same, so the job agrees on which rank sends what without asking.
// A receiver never decodes the image: the GT maps (which the memo key and the selection loss
// need) come with the entry.
#pragma once

#include <filesystem>
#include <vector>

#include "parallel/process_group.h"
#include "ps3/data/records.h"
#include "vilahd/sft_data.h"
#include "vilahd/text/bpe_tokenizer.h"
#include "vilahd/vila_hd.h"

namespace hd::launcher {

// The memo key of a record's image: the file and its box (forcing is added by the model).
std::string record_memo_key(const data::SftRecord& record);

// Fills the model's memo (set_vision_memo before) for `records` and returns, per record, its
// training sample without PS3 inputs (a memo hit needs none). `with_box`: the records' boxes
// become GT maps (all records boxed) or are ignored. Every rank calls it with the same records.
std::vector<vilahd::VilaSample> fill_vision_memo_across_ranks(
    const vilahd::VilaHdModel& model, vilahd::VisionMemo& memo,
    const std::vector<const data::SftRecord*>& records, bool with_box,
    const vilahd::BpeTokenizer& tok, vilahd::ImageCache& images,
    const std::filesystem::path& data_dir, parallel::ProcessGroup& pg);

}  // namespace hd::launcher
