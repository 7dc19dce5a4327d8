#include "tokenizer/chat_template.h"

#include <optional>
#include <string_view>

#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode.h"

namespace slimkv::tokenizer {

namespace {

bool Contains(std::string_view text, std::string_view marker) {
  return text.find(marker) != std::string_view::npos;
}

// Python's str.isspace, which Jinja's `trim` filter (str.strip) uses.
bool IsPythonSpace(uint32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
         c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 ||
         c == 0x202F || c == 0x205F || c == 0x3000;
}

// Jinja's `trim`: strips leading and trailing whitespace characters.
std::string Trim(std::string_view s) {
  size_t begin = 0;
  while (begin < s.size()) {
    uint32_t c = 0;
    const size_t len = DecodeUtf8Strict(s, begin, &c);
    if (len == 0 || !IsPythonSpace(c)) break;
    begin += len;
  }
  size_t end = s.size();
  while (end > begin) {
    size_t start = end - 1;  // back up to the start of the last character
    while (start > begin && (static_cast<uint8_t>(s[start]) & 0xC0) == 0x80 && end - start < 4) {
      --start;
    }
    uint32_t c = 0;
    const size_t len = DecodeUtf8Strict(s, start, &c);
    if (len != end - start || !IsPythonSpace(c)) break;
    end = start;
  }
  return std::string(s.substr(begin, end - begin));
}

// Parses the Jinja (Python) string literal that starts at text[pos]; returns its value and
// sets *end past the closing quote.
std::optional<std::string> ParseStringLiteral(std::string_view text, size_t pos, size_t* end) {
  if (pos >= text.size() || (text[pos] != '\'' && text[pos] != '"')) return std::nullopt;
  const char quote = text[pos];
  std::string value;
  for (size_t i = pos + 1; i < text.size(); ++i) {
    const char c = text[i];
    if (c == quote) {
      *end = i + 1;
      return value;
    }
    if (c != '\\' || i + 1 >= text.size()) {
      value += c;
      continue;
    }
    const char e = text[++i];
    switch (e) {
      case 'n': value += '\n'; break;
      case 't': value += '\t'; break;
      case 'r': value += '\r'; break;
      case '\\': value += '\\'; break;
      case '\'': value += '\''; break;
      case '"': value += '"'; break;
      default: value += '\\'; value += e; break;
    }
  }
  return std::nullopt;
}

size_t SkipSpaces(std::string_view text, size_t pos) {
  while (pos < text.size() && (text[pos] == ' ' || text[pos] == '\n' || text[pos] == '\t')) ++pos;
  return pos;
}

// The literal printed by `{{ '...' }}` right after `marker` in the template, if any. This
// is how SmolLM2's template spells its default system message:
//   {% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n...' }}
std::optional<std::string> LiteralPrintedAfter(std::string_view tmpl, std::string_view marker) {
  size_t pos = tmpl.find(marker);
  if (pos == std::string_view::npos) return std::nullopt;
  pos = tmpl.find("%}", pos);
  if (pos == std::string_view::npos) return std::nullopt;
  pos = SkipSpaces(tmpl, pos + 2);
  if (tmpl.substr(pos, 2) != "{{") return std::nullopt;
  pos += 2;
  if (pos < tmpl.size() && tmpl[pos] == '-') ++pos;
  size_t end = 0;
  auto literal = ParseStringLiteral(tmpl, SkipSpaces(tmpl, pos), &end);
  if (!literal) return std::nullopt;
  end = SkipSpaces(tmpl, end);
  if (end < tmpl.size() && tmpl[end] == '-') ++end;
  if (tmpl.substr(end, 2) != "}}") return std::nullopt;  // an expression, not a literal
  return literal;
}

// The literal in `marker + '...'`, e.g. Gemma-3's
//   {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}
std::optional<std::string> LiteralAppendedAfter(std::string_view tmpl, std::string_view marker) {
  size_t pos = tmpl.find(marker);
  if (pos == std::string_view::npos) return std::nullopt;
  pos = SkipSpaces(tmpl, pos + marker.size());
  if (pos >= tmpl.size() || tmpl[pos] != '+') return std::nullopt;
  size_t end = 0;
  return ParseStringLiteral(tmpl, SkipSpaces(tmpl, pos + 1), &end);
}

std::optional<std::string> DefaultSystemMessage(std::string_view tmpl) {
  for (std::string_view marker : {"messages[0]['role'] != 'system'",
                                  "messages[0][\"role\"] != \"system\""}) {
    if (auto literal = LiteralPrintedAfter(tmpl, marker)) return literal;
  }
  return std::nullopt;
}

std::string RenderChatMl(const std::string& tmpl, const std::vector<ChatMessage>& messages, bool add_ass) {
  std::string out;
  if (!messages.empty() && messages[0].role != "system") {
    if (auto system = DefaultSystemMessage(tmpl)) out += *system;
  }
  for (const ChatMessage& m : messages) {
    out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
  }
  if (add_ass) out += "<|im_start|>assistant\n";
  return out;
}

// Gemma's template: no system role; a first system message becomes a prefix of the first
// turn (untrimmed, followed by the template's separator), turns are trimmed, "assistant"
// is "model".
std::string RenderGemma(const std::string& tmpl, const std::vector<ChatMessage>& messages, bool add_ass) {
  std::string out;
  std::string prefix;
  size_t first = 0;
  if (!messages.empty() && messages[0].role == "system") {
    const std::string sep =
        LiteralAppendedAfter(tmpl, "first_user_prefix = messages[0]['content']").value_or("\n\n");
    prefix = messages[0].content + sep;
    first = 1;
  }
  for (size_t i = first; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    const std::string role = m.role == "assistant" ? "model" : m.role;
    out += "<start_of_turn>" + role + "\n";
    if (i == first) out += prefix;
    out += Trim(m.content) + "<end_of_turn>\n";
  }
  if (add_ass) out += "<start_of_turn>model\n";
  return out;
}

std::string RenderLlama3(const std::vector<ChatMessage>& messages, bool add_ass) {
  std::string out;
  for (const ChatMessage& m : messages) {
    out += "<|start_header_id|>" + m.role + "<|end_header_id|>\n\n" + Trim(m.content) + "<|eot_id|>";
  }
  if (add_ass) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
  return out;
}

// Llama-2 "[INST]" and its variants, told apart by the template text as llama.cpp does.
// Llama-2 has no generation prompt: the text after [/INST] is the assistant's.
std::string RenderLlama2(const std::string& tmpl, const std::vector<ChatMessage>& messages) {
  // llama.cpp's variants are exclusive, tested in this order.
  const bool strip = Contains(tmpl, "content.strip()");
  const bool bos_inside = !strip && Contains(tmpl, "bos_token + '[INST]");
  const bool system_block = strip || bos_inside || Contains(tmpl, "<<SYS>>");
  std::string out = "[INST] ";
  bool inside_turn = true;
  for (const ChatMessage& m : messages) {
    const std::string content = strip ? Trim(m.content) : m.content;
    if (!inside_turn) {
      inside_turn = true;
      out += bos_inside ? "<s>[INST] " : "[INST] ";
    }
    if (m.role == "system") {
      out += system_block ? "<<SYS>>\n" + content + "\n<</SYS>>\n\n" : content + "\n";
    } else if (m.role == "user") {
      out += content + " [/INST]";
    } else {
      out += content + "</s>";
      inside_turn = false;
    }
  }
  return out;
}

std::string RenderPhi3(const std::vector<ChatMessage>& messages, bool add_ass) {
  std::string out;
  for (const ChatMessage& m : messages) out += "<|" + m.role + "|>\n" + m.content + "<|end|>\n";
  if (add_ass) out += "<|assistant|>\n";
  return out;
}

// Mistral's official templates (mistralai/cookbook tokenization): v1 puts a space before
// [INST] and after [/INST], v3 only after [INST] and trims replies, v3-tekken no spaces; the
// system message opens the first turn. No generation prompt: the reply follows [/INST].
std::string RenderMistral(ChatStyle style, const std::vector<ChatMessage>& messages) {
  const std::string lead = style == ChatStyle::kMistralV1 ? " " : "";
  const std::string trail = style == ChatStyle::kMistralV3Tekken ? "" : " ";
  std::string out;
  bool inside_turn = false;
  for (const ChatMessage& m : messages) {
    if (!inside_turn) {
      out += lead + "[INST]" + trail;
      inside_turn = true;
    }
    if (m.role == "system") {
      out += m.content + "\n\n";
    } else if (m.role == "user") {
      out += m.content + lead + "[/INST]";
    } else {
      out += trail + (style == ChatStyle::kMistralV3 ? Trim(m.content) : m.content) + "</s>";
      inside_turn = false;
    }
  }
  return out;
}

// Mistral v7: system prompts in [SYSTEM_PROMPT] blocks, each turn closed.
std::string RenderMistralV7(const std::vector<ChatMessage>& messages) {
  std::string out;
  for (const ChatMessage& m : messages) {
    if (m.role == "system") {
      out += "[SYSTEM_PROMPT] " + m.content + "[/SYSTEM_PROMPT]";
    } else if (m.role == "user") {
      out += "[INST] " + m.content + "[/INST]";
    } else {
      out += " " + m.content + "</s>";
    }
  }
  return out;
}

std::string RenderZephyr(const std::vector<ChatMessage>& messages, bool add_ass) {
  std::string out;
  for (const ChatMessage& m : messages) out += "<|" + m.role + "|>\n" + m.content + "<|endoftext|>\n";
  if (add_ass) out += "<|assistant|>\n";
  return out;
}

}  // namespace

const char* ChatStyleName(ChatStyle style) {
  switch (style) {
    case ChatStyle::kChatMl: return "chatml";
    case ChatStyle::kGemma: return "gemma";
    case ChatStyle::kLlama2: return "llama2";
    case ChatStyle::kLlama3: return "llama3";
    case ChatStyle::kZephyr: return "zephyr";
    case ChatStyle::kPhi3:
      return "phi3";
    case ChatStyle::kMistralV1:
      return "mistral-v1";
    case ChatStyle::kMistralV3:
      return "mistral-v3";
    case ChatStyle::kMistralV3Tekken:
      return "mistral-v3-tekken";
    case ChatStyle::kMistralV7:
      return "mistral-v7";
  }
  return "unknown";
}

Result<ChatStyle> DetectChatStyle(const std::string& tmpl) {
  if (tmpl.empty()) return ChatStyle::kChatMl;
  for (ChatStyle s : {ChatStyle::kChatMl, ChatStyle::kGemma, ChatStyle::kLlama2, ChatStyle::kLlama3,
                      ChatStyle::kZephyr, ChatStyle::kPhi3, ChatStyle::kMistralV1, ChatStyle::kMistralV3,
                      ChatStyle::kMistralV3Tekken, ChatStyle::kMistralV7}) {
    if (tmpl == ChatStyleName(s)) return s;
  }
  const std::string first_line = tmpl.substr(0, std::min(tmpl.find('\n'), size_t{120}));
  auto other = [&](std::string_view llama_cpp_name) -> Result<ChatStyle> {
    return Unimplemented("chat template '{}' is llama.cpp's '{}' style, which slimkv does not render",
                         first_line, llama_cpp_name);
  };
  // The order of llama.cpp's llm_chat_detect_template, for the markers it tests before the
  // styles slimkv renders.
  auto has = [&](std::string_view m) { return Contains(tmpl, m); };
  if (has("<|im_start|>")) {
    if (has("<|im_sep|>")) return other("phi4");
    if (has("<end_of_utterance>")) return other("smolvlm");
    return ChatStyle::kChatMl;
  }
  if (tmpl.rfind("mistral", 0) == 0 || has("[INST]")) {
    if (has("[SYSTEM_PROMPT]")) return ChatStyle::kMistralV7;
    if (has("' [INST] ' + system_message") || has("[AVAILABLE_TOOLS]")) {
      if (has(" [INST]")) return ChatStyle::kMistralV1;
      if (has("\"[INST]\"")) return ChatStyle::kMistralV3Tekken;
      return ChatStyle::kMistralV3;
    }
    return ChatStyle::kLlama2;
  }
  if (has("<|assistant|>") && has("<|end|>")) return ChatStyle::kPhi3;
  if (has("[gMASK]<sop>")) return other("chatglm4");
  if (has("<|assistant|>") && has("<|user|>")) return other(has("</s>") ? "falcon3" : "glmedge");
  if (has("<|{{ item['role'] }}|>") && has("<|begin_of_image|>")) return other("glmedge");
  if (has("<|user|>") && has("<|endoftext|>")) return ChatStyle::kZephyr;
  if (has("bos_token + message['role']")) return other("monarch");
  if (has("<start_of_turn>")) return ChatStyle::kGemma;
  if (has("'\\n\\nAssistant: ' + eos_token")) return other("orion");
  if (has("GPT4 Correct ")) return other("openchat");
  if (has("USER: ") && has("ASSISTANT: ")) return other("vicuna");
  if (has("### Instruction:") && has("<|EOT|>")) return other("deepseek");
  if (has("<|START_OF_TURN_TOKEN|>") && has("<|USER_TOKEN|>")) return other("command-r");
  if (has("<|start_header_id|>") && has("<|end_header_id|>")) return ChatStyle::kLlama3;
  return Unimplemented("chat template '{}' is not one slimkv recognises", first_line);
}

Result<ChatStyle> DetectChatStyle(const Tokenizer& tok) {
  if (!tok.chat_template().empty()) return DetectChatStyle(tok.chat_template());
  if (tok.Find("<start_of_turn>") >= 0 && tok.Find("<end_of_turn>") >= 0) return ChatStyle::kGemma;
  if (tok.Find("<|start_header_id|>") >= 0 && tok.Find("<|eot_id|>") >= 0) return ChatStyle::kLlama3;
  return ChatStyle::kChatMl;
}

std::string ApplyChatTemplate(ChatStyle style, const std::string& tmpl,
                              const std::vector<ChatMessage>& messages, bool add_generation_prompt) {
  switch (style) {
    case ChatStyle::kChatMl: return RenderChatMl(tmpl, messages, add_generation_prompt);
    case ChatStyle::kGemma: return RenderGemma(tmpl, messages, add_generation_prompt);
    case ChatStyle::kLlama2: return RenderLlama2(tmpl, messages);
    case ChatStyle::kLlama3: return RenderLlama3(messages, add_generation_prompt);
    case ChatStyle::kZephyr: return RenderZephyr(messages, add_generation_prompt);
    case ChatStyle::kPhi3:
      return RenderPhi3(messages, add_generation_prompt);
    case ChatStyle::kMistralV1:
    case ChatStyle::kMistralV3:
    case ChatStyle::kMistralV3Tekken:
      return RenderMistral(style, messages);
    case ChatStyle::kMistralV7:
      return RenderMistralV7(messages);
  }
  return {};
}

std::vector<int32_t> EncodePrompt(const Tokenizer& tok, const std::string& text, bool chat) {
  std::vector<int32_t> ids = tok.Encode(text, tok.add_bos_default(), /*parse_special=*/chat);
  if (ids.size() >= 2 && ids[0] == tok.bos() && ids[1] == tok.bos()) ids.erase(ids.begin());
  return ids;
}

}  // namespace slimkv::tokenizer
