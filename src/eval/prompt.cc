#include "eval/prompt.h"

namespace slimkv::eval {

PromptStyle ParsePromptStyle(std::string_view name) {
  if (name == "chat") return PromptStyle::kChat;
  if (name == "plain") return PromptStyle::kPlain;
  return PromptStyle::kAuto;
}

bool PlainPrompt(PromptStyle style, const tokenizer::Tokenizer& tok) {
  return style == PromptStyle::kPlain || (style == PromptStyle::kAuto && tok.chat_template().empty());
}

}  // namespace slimkv::eval
