// VILA-HD samples from the data files (docs/data.md): SFT records (VILA's JSON / JSON lines,
// `hdtrain data synth` writes sft.jsonl) and multiple-choice questions (eval_mc.jsonl).
//
// Images are decoded and prepared like PS3 training samples (ps3/image_inputs.h); a 4K image
// takes a few hundred milliseconds to decode and squash-resize and several records share one
// image, so prepared images are kept in a small LRU cache. Boxes (pixels of the original image)
// become the per-scale GT maps of the selection loss, [area(box, g) > 0] after the resize (§3.7).
#pragma once

#include <filesystem>
#include <list>
#include <map>
#include <memory>
#include <vector>

#include "ps3/data/records.h"
#include "ps3/image_inputs.h"
#include "vilahd/text/bpe_tokenizer.h"
#include "vilahd/vila_hd.h"

namespace hd::vilahd {

class ImageCache {
 public:
  ImageCache(const ps3::VisionConfig& vision, size_t capacity);
  // Decodes and prepares `file` (or returns it from the cache); throws naming the file.
  std::shared_ptr<const ps3::PreparedImage> get(const std::filesystem::path& file);

 private:
  ps3::VisionConfig vision_;
  size_t capacity_;
  std::list<std::string> order_;  // most recent first
  std::map<std::string, std::shared_ptr<const ps3::PreparedImage>> images_;
};

// The model's view of one prepared image; the patch source keeps the image alive.
VilaImage vila_image(std::shared_ptr<const ps3::PreparedImage> image);

// Per PS3 scale [1, g, g] in {0, 1}: the box (original-image pixels) after the squash resize.
std::vector<Tensor> box_gt_maps(const ps3::PreparedImage& image, const data::Box& box,
                                const ps3::VisionConfig& vision);

// An SFT record as a training sample: the conversation ("human"/"gpt" turns) with labels on the
// answers; the record's box as the image's GT maps when `with_box` (and it has one).
VilaSample sft_sample(const BpeTokenizer& tokenizer, const data::SftRecord& record,
                      std::shared_ptr<const ps3::PreparedImage> image,
                      const ps3::VisionConfig& vision, bool with_box);
// The same with the image's view given: a memo hit needs no PS3 inputs, so `image` may hold
// only its GT maps and memo key (launcher/vilahd_memo.h).
VilaSample sft_sample(const BpeTokenizer& tokenizer, const data::SftRecord& record,
                      VilaImage image);

}  // namespace hd::vilahd
