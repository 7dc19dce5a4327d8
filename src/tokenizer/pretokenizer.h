// Byte-level BPE pre-tokenizer: splits text into words with the regexes llama.cpp selects
// from tokenizer.ggml.pre (PCRE2, UTF + UCP), before merges run inside each word.
//
// llama.cpp runs most of these regexes through hand-written matchers (unicode.cpp) and the
// rest through std::regex on a "collapsed" text; both are equivalent to the PCRE2 patterns
// here, with one substitution: `\s` is spelled out as llama.cpp's whitespace set (Unicode
// White_Space: TAB..CR, SPACE, U+0085, U+00A0, U+1680, U+2000..U+200A, U+2028, U+2029,
// U+202F, U+205F, U+3000), because PCRE2's UCP `\s` also matches U+180E. See
// docs/TOKENIZER.md for the equivalence argument and its tests.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/status.h"

namespace slimkv::tokenizer {

// The regex families, named after llama.cpp's LLAMA_VOCAB_PRE_TYPE_*.
enum class PreType { kDefault, kGpt2, kLlama3, kQwen2, kSmollm };

struct PreTypeInfo {
  PreType type = PreType::kDefault;
  bool ignore_merges = false;  // a word that is already a token is not merged further
  bool add_bos = false;        // default for tokenizer.ggml.add_bos_token
};

// Maps a tokenizer.ggml.pre value ("smollm", "llama-bpe", "qwen2", "gpt-2", "default",
// "" ...) to its family; Unimplemented naming it if slimkv does not know it.
Result<PreTypeInfo> PreTypeFromName(std::string_view name);

// [begin, end) byte offsets of one word.
using WordSpan = std::pair<uint32_t, uint32_t>;

class PreTokenizer {
 public:
  static Result<std::unique_ptr<PreTokenizer>> Create(PreType type);
  ~PreTokenizer();
  PreTokenizer(const PreTokenizer&) = delete;
  PreTokenizer& operator=(const PreTokenizer&) = delete;

  // Splits `text` into words. `canonical` receives the text as llama.cpp sees it (decoded
  // leniently, invalid bytes as U+FFFD, then re-encoded; see unicode.h) and `words` byte
  // ranges of it that tile it in order. Thread-safe.
  void Split(std::string_view text, std::string* canonical, std::vector<WordSpan>* words) const;

 private:
  PreTokenizer() = default;
  struct Regex;
  std::vector<std::unique_ptr<Regex>> regexes_;  // applied in order, each inside the last's words
};

}  // namespace slimkv::tokenizer
