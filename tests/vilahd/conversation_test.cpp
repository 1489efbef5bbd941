// Conversations to samples with the fixture Qwen2-layout tokenizer (tests/fixtures/bpe_tokenizer):
// ids equal the tokenized chat template with each <image> as kImageToken, labels cover exactly
// the assistant answers and their <|im_end|>, and the look-close position is the last token of
// the first user turn, for one and two images.
#include <gtest/gtest.h>

#include <algorithm>

#include "tests/testing/errors.h"
#include "vilahd/conversation.h"

namespace hd::vilahd {
namespace {

const BpeTokenizer& tok() {
  static BpeTokenizer t =
      BpeTokenizer::load(std::string(HD_FIXTURE_DIR) + "/bpe_tokenizer/tokenizer.json");
  return t;
}

std::vector<VilaImage> images(int n) {
  return std::vector<VilaImage>(size_t(n));
}

// The ids of `text` with <image> -> kImageToken, computed independently: tokenize the text
// with a stand-in special token, then swap its id.
std::vector<int64_t> reference_ids(const std::string& text) {
  std::vector<int64_t> out;
  size_t start = 0;
  while (true) {
    size_t p = text.find("<image>", start);
    std::vector<int32_t> part =
        tok().encode(text.substr(start, p == std::string::npos ? p : p - start));
    out.insert(out.end(), part.begin(), part.end());
    if (p == std::string::npos) return out;
    out.push_back(kImageToken);
    start = p + 7;
  }
}

TEST(Conversation, QuestionSampleIsTheTemplateWithImageTokensAndTheUserTurnsLastToken) {
  const int64_t im_end = tok().token_id("<|im_end|>");
  for (int n : {1, 2}) {
    VilaSample s = question_sample(tok(), "What is written on the sign?", images(n));
    std::string content;
    for (int i = 0; i < n; ++i) content += "<image>\n";
    content += "What is written on the sign?";
    EXPECT_EQ(s.input_ids, reference_ids(apply_chat_template({{"user", content}}, true)));
    EXPECT_EQ(std::count(s.input_ids.begin(), s.input_ids.end(), kImageToken), n);
    ASSERT_GE(s.prompt_position, 0);
    // The next token closes the first user turn; this one ends the question ("?").
    EXPECT_EQ(s.input_ids[size_t(s.prompt_position + 1)], im_end);
    EXPECT_EQ(tok().decode({int32_t(s.input_ids[size_t(s.prompt_position)])}), "?");
    EXPECT_TRUE(s.labels.empty());
  }
}

TEST(Conversation, LabelsAreTheAnswersAndTheirEndMarker) {
  std::vector<ChatMessage> turns = {{"user", "<image>\nwhat colour?"},
                                    {"assistant", "red"},
                                    {"user", "and the text?"},
                                    {"assistant", "hello world"}};
  VilaSample s = conversation_sample(tok(), turns, images(1));
  std::vector<ChatMessage> full = turns;
  EXPECT_EQ(s.input_ids, reference_ids(apply_chat_template(full, false)));
  ASSERT_EQ(s.labels.size(), s.input_ids.size());
  std::vector<int32_t> labelled;
  for (size_t i = 0; i < s.labels.size(); ++i) {
    if (s.labels[i] == -100) continue;
    EXPECT_EQ(s.labels[i], s.input_ids[i]);
    labelled.push_back(int32_t(s.labels[i]));
  }
  EXPECT_EQ(tok().decode(labelled), "red<|im_end|>hello world<|im_end|>");
  // The look-close position is in the first user turn, not the second.
  EXPECT_EQ(tok().decode({int32_t(s.input_ids[size_t(s.prompt_position)])}), "?");
}

TEST(Conversation, PlaceholdersMustMatchTheImages) {
  hd::testing::expect_error([] { question_sample(tok(), "<image> and <image>", images(1)); },
                            "2 <image> placeholders for 1 images");
  hd::testing::expect_error(
      [] {
        conversation_sample(tok(), {{"user", "hi"}, {"assistant", "<image>"}}, images(1));
      },
      "assistant turn");
  EXPECT_EQ(chat_stop_tokens(tok()).size(), 2u);
}

}  // namespace
}  // namespace hd::vilahd
