// How an eval task puts its question to the model (needle, ruler): through the model's chat
// template, or plainly — the text, then "Answer:" for the model to continue — which a base
// model (pretrained, not instruction-tuned) answers where it cannot follow a chat.
#pragma once

#include <string_view>

#include "tokenizer/tokenizer.h"

namespace slimkv::eval {

enum class PromptStyle {
  kAuto,   // plain when the model file carries no chat template (base models ship none), else chat
  kChat,
  kPlain,
};

// "auto", "chat", "plain" (the CLI's --prompt); kAuto for anything else.
PromptStyle ParsePromptStyle(std::string_view name);
// Whether prompts for this tokenizer's model are plain.
bool PlainPrompt(PromptStyle style, const tokenizer::Tokenizer& tok);

}  // namespace slimkv::eval
