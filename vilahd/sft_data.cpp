#include "vilahd/sft_data.h"

#include <algorithm>

#include "autograd/error.h"
#include "ps3/data/image.h"
#include "vilahd/conversation.h"

namespace hd::vilahd {

namespace fs = std::filesystem;

ImageCache::ImageCache(const ps3::VisionConfig& vision, size_t capacity)
    : vision_(vision), capacity_(std::max<size_t>(capacity, 1)) {}

std::shared_ptr<const ps3::PreparedImage> ImageCache::get(const fs::path& file) {
  const std::string key = file.string();
  auto it = images_.find(key);
  if (it != images_.end()) {
    order_.remove(key);
    order_.push_front(key);
    return it->second;
  }
  HD_CHECK(fs::is_regular_file(file), "image '", key, "' does not exist");
  data::Image img = data::decode_image(data::read_file(key), key);
  auto prepared =
      std::make_shared<const ps3::PreparedImage>(ps3::prepare_image(std::move(img), vision_));
  images_[key] = prepared;
  order_.push_front(key);
  while (order_.size() > capacity_) {
    images_.erase(order_.back());
    order_.pop_back();
  }
  return prepared;
}

VilaImage vila_image(std::shared_ptr<const ps3::PreparedImage> image) {
  VilaImage v;
  v.inputs = ps3::vision_inputs(*image);
  v.inputs.patches = [image](int64_t row, int64_t scale, const std::vector<int64_t>& idx) {
    return image->batch.patches(row, scale, idx);
  };
  return v;
}

std::vector<Tensor> box_gt_maps(const ps3::PreparedImage& image, const data::Box& box,
                                const ps3::VisionConfig& vision) {
  const data::Image& o = *image.original;
  const float sx = float(image.batch.size) / float(o.width),
              sy = float(image.batch.size) / float(o.height);
  data::Batch b = image.batch;  // shares the pixels; only the box list differs
  b.boxes = {{data::Box{box.x1 * sx, box.y1 * sy, box.x2 * sx, box.y2 * sy}}};
  std::vector<Tensor> maps;
  for (size_t s = 0; s < vision.scales.size(); ++s) maps.push_back(b.gt_map(vision.grid(s)));
  return maps;
}

VilaSample sft_sample(const BpeTokenizer& tokenizer, const data::SftRecord& record,
                      std::shared_ptr<const ps3::PreparedImage> image,
                      const ps3::VisionConfig& vision, bool with_box) {
  VilaImage v = vila_image(image);
  if (with_box && record.box) v.gt_maps = box_gt_maps(*image, *record.box, vision);
  return sft_sample(tokenizer, record, std::move(v));
}

VilaSample sft_sample(const BpeTokenizer& tokenizer, const data::SftRecord& record,
                      VilaImage image) {
  std::vector<ChatMessage> turns;
  for (const auto& [from, value] : record.conversations) {
    const std::string role = from == "human" || from == "user"      ? "user"
                             : from == "gpt" || from == "assistant" ? "assistant"
                                                                    : from;
    turns.push_back({role, value});
  }
  std::vector<VilaImage> images;
  images.push_back(std::move(image));
  return conversation_sample(tokenizer, turns, std::move(images));
}

}  // namespace hd::vilahd
