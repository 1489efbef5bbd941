// Conversations to VILA-HD samples with the Qwen2 tokenizer and chat template: "<image>" in a
// message becomes kImageToken (VILA's IMAGE_TOKEN_INDEX), labels cover the assistant's answers,
// and the look-close position is found the way the reference finds it (§3.2.1): render the
// template for a dummy user message with the generation prompt, tokenize what follows the dummy
// text (for Qwen2 "<|im_end|>\n<|im_start|>assistant\n"), find its first occurrence in the ids;
// the token before it is the last token of the first user turn.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "vilahd/text/bpe_tokenizer.h"
#include "vilahd/text/chat_template.h"
#include "vilahd/vila_hd.h"

namespace hd::vilahd {

inline constexpr std::string_view kImagePlaceholder = "<image>";

// Encodes `text` with every "<image>" replaced by kImageToken (text between them is encoded on
// its own, so the placeholder never merges with its neighbours).
std::vector<int64_t> encode_with_images(const BpeTokenizer& tokenizer, std::string_view text);

// §3.2.1; the last index when the end-of-user marker is absent (the reference's fallback).
int64_t look_close_position(const BpeTokenizer& tokenizer, const std::vector<int64_t>& ids);

// A question about `images` as the prompt to answer: the default system turn, the user turn
// (the question; "<image>\n" is put in front once per image when it has no placeholder), and
// the assistant header. Throws when the placeholders and the images do not match in number.
VilaSample question_sample(const BpeTokenizer& tokenizer, const std::string& question,
                           std::vector<VilaImage> images);

// A conversation for training (user/assistant turns, optionally a leading system turn): labels
// are the ids of every assistant answer and its <|im_end|>; everything else is -100.
VilaSample conversation_sample(const BpeTokenizer& tokenizer, const std::vector<ChatMessage>& turns,
                               std::vector<VilaImage> images);

// The stop tokens of a Qwen2 chat model: <|im_end|> and <|endoftext|> when the tokenizer has them.
std::vector<int64_t> chat_stop_tokens(const BpeTokenizer& tokenizer);

}  // namespace hd::vilahd
