// Chat templates: the model's own template (tokenizer.chat_template) recognised by its
// markers, as llama.cpp's llm_chat_detect_template does, rather than a Jinja interpreter;
// then rendered the way the model's Jinja template renders it (where that differs from
// llama.cpp's built-in rendering, the Jinja template wins; docs/TOKENIZER.md lists where).
//
// The rendered text never starts with the BOS token text, even where the Jinja template
// prints {{ bos_token }} (Gemma, Llama-3): EncodePrompt(tok, text, /*chat=*/true) gives the
// model's prompt.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"

namespace slimkv::tokenizer {

class Tokenizer;

struct ChatMessage {
  std::string role;     // "system", "user", "assistant"
  std::string content;
};

enum class ChatStyle {
  kChatMl,
  kGemma,
  kLlama2,
  kLlama3,
  kZephyr,
  kPhi3,
  kMistralV1,        // Mistral 7B v0.1/v0.2 official template: " [INST] ... [/INST]"
  kMistralV3,        // Mistral 7B v0.3, Mixtral 8x22B: "[INST] ... [/INST]", trimmed replies
  kMistralV3Tekken,  // Mistral Nemo: "[INST]...[/INST]"
  kMistralV7,        // Mistral Large 2411, Small 3: [SYSTEM_PROMPT] ... [/SYSTEM_PROMPT]
};

const char* ChatStyleName(ChatStyle style);  // "chatml", "gemma", ...

// Detects the style from the template text (or a style name such as "chatml"), testing
// markers in llama.cpp's order; Unimplemented naming the template's first line if it is not
// one of the known styles. An empty template falls back to ChatML.
Result<ChatStyle> DetectChatStyle(const std::string& template_text);
// As above for the tokenizer's own template; when the file has none (e.g. the Gemma-3 270M
// GGUF), the style is guessed from the vocabulary's turn tokens (<start_of_turn>,
// <|start_header_id|>, <|im_start|>), ChatML if none is there.
Result<ChatStyle> DetectChatStyle(const Tokenizer& tok);

// Renders `messages` ending with the assistant prefix when `add_generation_prompt`.
// Applies the template's own defaults read from `template_text`: SmolLM2's default system
// message when the first message is not a system one, Gemma's separator after the system
// text, Llama-2's <<SYS>> / BOS / strip variants. Roles are not checked for alternation
// (Gemma's Jinja template raises on that; here the turns are rendered as given).
std::string ApplyChatTemplate(ChatStyle style, const std::string& template_text,
                              const std::vector<ChatMessage>& messages, bool add_generation_prompt);

// A prompt's ids with the BOS the model wants (add_bos_default): a rendered chat (`chat`) has
// its special tokens read and a BOS of its own is not doubled; plain text reads none (a
// user's or an eval's text is text, whatever it holds).
std::vector<int32_t> EncodePrompt(const Tokenizer& tok, const std::string& text, bool chat);

}  // namespace slimkv::tokenizer
