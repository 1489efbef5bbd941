#include "vilahd/conversation.h"

#include <algorithm>

#include "autograd/error.h"

namespace hd::vilahd {

namespace {

int64_t count_placeholders(std::string_view text) {
  int64_t n = 0;
  for (size_t p = text.find(kImagePlaceholder); p != std::string_view::npos;
       p = text.find(kImagePlaceholder, p + kImagePlaceholder.size()))
    ++n;
  return n;
}

void append(std::vector<int64_t>& out, const std::vector<int32_t>& ids) {
  out.insert(out.end(), ids.begin(), ids.end());
}

std::string with_placeholders(const std::string& content, size_t images) {
  if (count_placeholders(content) > 0 || images == 0) return content;
  std::string prefix;
  for (size_t i = 0; i < images; ++i) prefix += std::string(kImagePlaceholder) + "\n";
  return prefix + content;
}

}  // namespace

std::vector<int64_t> encode_with_images(const BpeTokenizer& tokenizer, std::string_view text) {
  std::vector<int64_t> ids;
  size_t start = 0;
  while (true) {
    const size_t p = text.find(kImagePlaceholder, start);
    const std::string_view part = text.substr(start, p == std::string_view::npos ? p : p - start);
    if (!part.empty()) append(ids, tokenizer.encode(part));
    if (p == std::string_view::npos) break;
    ids.push_back(kImageToken);
    start = p + kImagePlaceholder.size();
  }
  return ids;
}

int64_t look_close_position(const BpeTokenizer& tokenizer, const std::vector<int64_t>& ids) {
  static const std::string kDummy = "DUMMY_USER_MESSAGE_FOR_LOOK_CLOSE";
  const std::string rendered = apply_chat_template({{"user", kDummy}}, true);
  const std::string after = rendered.substr(rendered.find(kDummy) + kDummy.size());
  std::vector<int64_t> marker;
  append(marker, tokenizer.encode(after));
  auto it = std::search(ids.begin(), ids.end(), marker.begin(), marker.end());
  if (marker.empty() || it == ids.end() || it == ids.begin()) return int64_t(ids.size()) - 1;
  return int64_t(it - ids.begin()) - 1;
}

VilaSample question_sample(const BpeTokenizer& tokenizer, const std::string& question,
                           std::vector<VilaImage> images) {
  const std::string content = with_placeholders(question, images.size());
  HD_CHECK(count_placeholders(content) == int64_t(images.size()), "the question has ",
           count_placeholders(content), " <image> placeholders for ", images.size(), " images");
  VilaSample s;
  s.input_ids = encode_with_images(tokenizer, apply_chat_template({{"user", content}}, true));
  s.prompt_position = look_close_position(tokenizer, s.input_ids);
  s.images = std::move(images);
  return s;
}

VilaSample conversation_sample(const BpeTokenizer& tokenizer, const std::vector<ChatMessage>& turns,
                               std::vector<VilaImage> images) {
  HD_CHECK(!turns.empty(), "conversation_sample: no turns");
  std::vector<ChatMessage> messages = turns;
  // Images go into the first user turn unless a turn already places them.
  int64_t placed = 0;
  for (const ChatMessage& m : messages) placed += count_placeholders(m.content);
  if (placed == 0) {
    for (ChatMessage& m : messages)
      if (m.role == "user") {
        m.content = with_placeholders(m.content, images.size());
        break;
      }
  }
  placed = 0;
  for (const ChatMessage& m : messages) placed += count_placeholders(m.content);
  HD_CHECK(placed == int64_t(images.size()), "the conversation has ", placed,
           " <image> placeholders for ", images.size(), " images");

  // Render turn by turn so each token is known to belong to an answer or not: the template is
  // a concatenation of per-message blocks (after the default system block).
  VilaSample s;
  const bool has_system = messages.front().role == "system";
  if (!has_system) {
    const std::string sys =
        apply_chat_template({{"system", std::string(kQwen2DefaultSystemPrompt)}}, false);
    const std::vector<int64_t> ids = encode_with_images(tokenizer, sys);
    s.input_ids.insert(s.input_ids.end(), ids.begin(), ids.end());
    s.labels.insert(s.labels.end(), ids.size(), -100);
  }
  for (const ChatMessage& m : messages) {
    if (m.role != "assistant") {
      const std::vector<int64_t> ids = encode_with_images(
          tokenizer, "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n");
      s.input_ids.insert(s.input_ids.end(), ids.begin(), ids.end());
      s.labels.insert(s.labels.end(), ids.size(), -100);
      continue;
    }
    const std::vector<int64_t> header = encode_with_images(tokenizer, "<|im_start|>assistant\n");
    const std::vector<int64_t> answer = encode_with_images(tokenizer, m.content + "<|im_end|>");
    const std::vector<int64_t> newline = encode_with_images(tokenizer, "\n");
    HD_CHECK(std::find(answer.begin(), answer.end(), kImageToken) == answer.end(),
             "an assistant turn cannot hold an <image>");
    s.input_ids.insert(s.input_ids.end(), header.begin(), header.end());
    s.labels.insert(s.labels.end(), header.size(), -100);
    s.input_ids.insert(s.input_ids.end(), answer.begin(), answer.end());
    s.labels.insert(s.labels.end(), answer.begin(), answer.end());
    s.input_ids.insert(s.input_ids.end(), newline.begin(), newline.end());
    s.labels.insert(s.labels.end(), newline.size(), -100);
  }
  s.prompt_position = look_close_position(tokenizer, s.input_ids);
  s.images = std::move(images);
  return s;
}

std::vector<int64_t> chat_stop_tokens(const BpeTokenizer& tokenizer) {
  std::vector<int64_t> stops;
  for (const char* t : {"<|im_end|>", "<|endoftext|>"})
    if (auto id = tokenizer.find_token(t)) stops.push_back(*id);
  return stops;
}

}  // namespace hd::vilahd
