// Chat templates: the model's own template (tokenizer.chat_template) recognised by its
// markers, as llama.cpp's llm_chat_apply_template does, rather than a Jinja interpreter.
#pragma once

#include <string>
#include <vector>

#include "base/status.h"

namespace slimkv::tokenizer {

struct ChatMessage {
  std::string role;     // "system", "user", "assistant"
  std::string content;
};

enum class ChatStyle { kChatMl, kGemma, kLlama2, kLlama3, kZephyr };

// Detects the style from the template text; Unimplemented naming the template's first line
// if it is not one of the known styles. An empty template falls back to ChatML.
Result<ChatStyle> DetectChatStyle(const std::string& template_text);

// Renders `messages` ending with the assistant prefix when `add_generation_prompt`.
// Applies the template's own defaults (e.g. SmolLM2's default system message when the
// template inserts one).
std::string ApplyChatTemplate(ChatStyle style, const std::string& template_text,
                              const std::vector<ChatMessage>& messages, bool add_generation_prompt);

}  // namespace slimkv::tokenizer
