// The Qwen2-7B-Instruct chat template (qwen2-reference.md section 8), rendered without Jinja:
//
//   {% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}
//   {{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}
//   {{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}
//   {% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}
//
// Contents are not stripped and no BOS is added. Tokenize the result with
// BpeTokenizer::encode: the special tokens come from its added-token split (as
// apply_chat_template(tokenize=True) does with add_special_tokens=False). A checkpoint that
// ships its own chat template needs its own renderer.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace hd::vilahd {

struct ChatMessage {
  std::string role;  // "system", "user", "assistant", or any other role (rendered verbatim)
  std::string content;
};

// The default system prompt, inserted when the first message is not a system message.
inline constexpr std::string_view kQwen2DefaultSystemPrompt = "You are a helpful assistant.";

// The rendered conversation; add_generation_prompt appends "<|im_start|>assistant\n". An empty
// conversation renders to the generation prompt alone (the template's loop never runs).
std::string apply_chat_template(const std::vector<ChatMessage>& messages,
                                bool add_generation_prompt);

}  // namespace hd::vilahd
