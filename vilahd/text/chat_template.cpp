// Qwen2 chat template (see chat_template.h for the Jinja source it reproduces).
#include "vilahd/text/chat_template.h"

namespace hd::vilahd {
namespace {

void turn(std::string& out, std::string_view role, std::string_view content) {
  out += "<|im_start|>";
  out += role;
  out += '\n';
  out += content;
  out += "<|im_end|>\n";
}

}  // namespace

std::string apply_chat_template(const std::vector<ChatMessage>& messages,
                                bool add_generation_prompt) {
  std::string out;
  // The template tests messages[0] inside the loop, so it never inserts the system prompt into
  // an empty conversation; an empty system message still renders an (empty) system block.
  if (!messages.empty() && messages[0].role != "system")
    turn(out, "system", kQwen2DefaultSystemPrompt);
  for (const ChatMessage& m : messages) turn(out, m.role, m.content);
  if (add_generation_prompt) out += "<|im_start|>assistant\n";
  return out;
}

}  // namespace hd::vilahd
