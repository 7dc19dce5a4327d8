#include "tokenizer/pretokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <array>

#include "base/check.h"
#include "base/log.h"
#include "tokenizer/unicode.h"

namespace slimkv::tokenizer {

namespace {

// llama.cpp's whitespace set (unicode-data.cpp), as the inside of a character class.
constexpr std::string_view kWhitespaceClass =
    "\\t\\n\\x{0B}\\f\\r\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}"
    "\\x{202F}\\x{205F}\\x{3000}";

// llama.cpp's character classes follow Unicode 15.1; PCRE2 10.42 (Debian 12) has Unicode
// 14. These are the letters, numbers and punctuation assigned in Unicode 15.0 and 15.1
// (Kawi, Nag Mundari, Kaktovik numerals, CJK extensions H and I, ...), added to \p{L},
// \p{N} and \p{P} so both agree (harmless where PCRE2 already knows them).
constexpr std::string_view kUnicode15Letters =
    "\\x{1123F}-\\x{11240}\\x{11F02}\\x{11F04}-\\x{11F10}\\x{11F12}-\\x{11F33}\\x{1342F}"
    "\\x{13441}-\\x{13446}\\x{1B132}\\x{1B155}\\x{1DF25}-\\x{1DF2A}\\x{1E030}-\\x{1E06D}"
    "\\x{1E4D0}-\\x{1E4EB}\\x{2B739}\\x{2EBF0}-\\x{2EE5D}\\x{31350}-\\x{323AF}";
constexpr std::string_view kUnicode15Numbers = "\\x{11F50}-\\x{11F59}\\x{1D2C0}-\\x{1D2D3}\\x{1E4F0}-\\x{1E4F9}";
constexpr std::string_view kUnicode15Punctuation = "\\x{11B00}-\\x{11B09}\\x{11F43}-\\x{11F4F}";

// Rewrites the class escapes of a pattern into llama.cpp's classes: `\s` / `\S` into
// explicit classes of kWhitespaceClass, and \p{L}, \p{N}, \p{P} extended by the Unicode 15
// additions (inside a class the members are added; outside, a class is formed).
std::string ExpandClasses(std::string_view pattern) {
  struct Escape {
    std::string_view escape;
    std::string members;  // inside a class
    bool negated;         // outside a class: [^members]
  };
  const Escape escapes[] = {
      {"\\s", std::string(kWhitespaceClass), false},
      {"\\S", std::string(kWhitespaceClass), true},
      {"\\p{L}", "\\p{L}" + std::string(kUnicode15Letters), false},
      {"\\p{N}", "\\p{N}" + std::string(kUnicode15Numbers), false},
      {"\\p{P}", "\\p{P}" + std::string(kUnicode15Punctuation), false},
  };
  std::string out;
  bool in_class = false;
  for (size_t i = 0; i < pattern.size();) {
    const Escape* hit = nullptr;
    for (const Escape& e : escapes) {
      if (pattern.substr(i, e.escape.size()) == e.escape) hit = &e;
    }
    if (hit != nullptr) {
      CHECK(!(in_class && hit->negated), "a negated class escape inside a class in {}", pattern);
      out += in_class ? hit->members : (hit->negated ? "[^" : "[") + hit->members + "]";
      i += hit->escape.size();
      continue;
    }
    const char c = pattern[i];
    if (c == '\\' && i + 1 < pattern.size()) {  // any other escape, copied as is
      out.append(pattern.substr(i, 2));
      i += 2;
      continue;
    }
    if (c == '[' && !in_class) in_class = true;
    else if (c == ']' && in_class) in_class = false;
    out += c;
    ++i;
  }
  return out;
}

// The regexes of each family, exactly as llama.cpp lists them (llm_tokenizer_bpe), except
// that the GPT-2 pattern gets the trailing `|\s+` that llama.cpp's hand-written matcher
// implements (it only changes whether a lone whitespace character before a non-space is a
// match or a gap between matches; both become a word of their own).
constexpr std::string_view kGpt2 =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
constexpr std::string_view kLlama3 =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"
    "\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
constexpr std::string_view kQwen2 =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"
    "\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

std::vector<std::string_view> PatternsFor(PreType type) {
  switch (type) {
    case PreType::kGpt2: return {kGpt2};
    case PreType::kLlama3: return {kLlama3};
    case PreType::kQwen2: return {kQwen2};
    case PreType::kSmollm: return {"\\p{N}", kGpt2};
    case PreType::kDefault:
      return {"[\\p{P}\\$\\+<=>\\^~\\|]+", kGpt2, "\\p{N}+", "[0-9][0-9][0-9]"};
  }
  return {};
}

struct NameEntry {
  std::string_view name;
  PreTypeInfo info;
};

// tokenizer.ggml.pre values that select the families above (llama-vocab.cpp), with the
// flags llama.cpp sets for them.
constexpr PreTypeInfo kL3{PreType::kLlama3, /*ignore_merges=*/true, /*add_bos=*/true};
constexpr PreTypeInfo kL3Plain{PreType::kLlama3, false, false};
constexpr PreTypeInfo kG2{PreType::kGpt2, false, false};
constexpr PreTypeInfo kQw{PreType::kQwen2, false, false};
constexpr PreTypeInfo kSm{PreType::kSmollm, false, false};
constexpr PreTypeInfo kDf{PreType::kDefault, false, false};
constexpr std::array kNames = {
    NameEntry{"default", kDf},      NameEntry{"", kDf},
    NameEntry{"llama3", kL3},       NameEntry{"llama-v3", kL3},     NameEntry{"llama-bpe", kL3},
    NameEntry{"falcon3", kL3},      NameEntry{"falcon-h1", kL3},    NameEntry{"pixtral", kL3},
    NameEntry{"midm-2.0", kL3},     NameEntry{"lfm2", kL3},         NameEntry{"dbrx", kL3Plain},
    NameEntry{"smaug-bpe", kL3Plain},
    NameEntry{"gpt-2", kG2},        NameEntry{"phi-2", kG2},        NameEntry{"jina-es", kG2},
    NameEntry{"jina-de", kG2},      NameEntry{"gigachat", kG2},     NameEntry{"jina-v2-es", kG2},
    NameEntry{"jina-v2-de", kG2},   NameEntry{"a.x-4.0", kG2},      NameEntry{"mellum", kG2},
    NameEntry{"mpt", kG2},          NameEntry{"olmo", kG2},         NameEntry{"jais", kG2},
    NameEntry{"trillion", kG2},     NameEntry{"granite-docling", kG2},
    NameEntry{"exaone4", kG2},
    NameEntry{"qwen2", kQw},        NameEntry{"deepseek-r1-qwen", kQw}, NameEntry{"megrez", kQw},
    NameEntry{"stablelm2", kQw},    NameEntry{"hunyuan", kQw},      NameEntry{"solar-open", kQw},
    NameEntry{"kormo", kQw},        NameEntry{"f2llmv2", kQw},
    NameEntry{"smollm", kSm},       NameEntry{"starcoder", kSm},    NameEntry{"refact", kSm},
    NameEntry{"command-r", kSm},    NameEntry{"codeshell", kSm},    NameEntry{"exaone", kSm},
    NameEntry{"minerva-7b", kSm},   NameEntry{"mellum2", kSm},
};

}  // namespace

Result<PreTypeInfo> PreTypeFromName(std::string_view name) {
  for (const auto& e : kNames) {
    if (e.name == name) return e.info;
  }
  return Unimplemented("tokenizer.ggml.pre '{}' is not a pre-tokenizer slimkv implements", name);
}

struct PreTokenizer::Regex {
  pcre2_code* code = nullptr;
  ~Regex() { pcre2_code_free(code); }
};

PreTokenizer::~PreTokenizer() = default;

Result<std::unique_ptr<PreTokenizer>> PreTokenizer::Create(PreType type) {
  std::unique_ptr<PreTokenizer> pre(new PreTokenizer());
  for (std::string_view pattern : PatternsFor(type)) {
    const std::string expanded = ExpandClasses(pattern);
    int error = 0;
    PCRE2_SIZE error_offset = 0;
    auto regex = std::make_unique<Regex>();
    regex->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(expanded.data()), expanded.size(),
                                PCRE2_UTF | PCRE2_UCP, &error, &error_offset, nullptr);
    if (regex->code == nullptr) {
      std::array<PCRE2_UCHAR, 256> msg{};
      pcre2_get_error_message(error, msg.data(), msg.size());
      return Internal("pre-tokenizer regex '{}' does not compile at {}: {}", expanded,
                      error_offset, reinterpret_cast<const char*>(msg.data()));
    }
    // JIT is an optimisation; pcre2_match falls back to the interpreter without it.
    pcre2_jit_compile(regex->code, PCRE2_JIT_COMPLETE);
    pre->regexes_.push_back(std::move(regex));
  }
  return pre;
}

namespace {

// The canonical text and, for the regexes, the same text with surrogates (which
// llama.cpp classes as \p{C} and PCRE2 cannot take in UTF mode) replaced by U+E000, also
// \p{C} and also 3 bytes, so offsets agree.
void Canonicalize(std::string_view text, std::string* canonical, std::string* subject) {
  std::vector<uint32_t> cpts;
  DecodeUtf8Lenient(text, &cpts);
  canonical->clear();
  canonical->reserve(text.size() + 8);
  subject->clear();
  bool has_surrogate = false;
  for (uint32_t c : cpts) {
    AppendUtf8(c, canonical);
    has_surrogate |= (c >= 0xD800 && c <= 0xDFFF);
  }
  if (!has_surrogate) return;
  subject->reserve(canonical->size());
  for (uint32_t c : cpts) AppendUtf8(c >= 0xD800 && c <= 0xDFFF ? 0xE000 : c, subject);
}

}  // namespace

void PreTokenizer::Split(std::string_view text, std::string* canonical,
                         std::vector<WordSpan>* words) const {
  std::string surrogate_free;
  Canonicalize(text, canonical, &surrogate_free);
  const std::string& subject = surrogate_free.empty() ? *canonical : surrogate_free;
  words->clear();
  if (canonical->empty()) return;

  std::vector<WordSpan> segments = {{0, static_cast<uint32_t>(subject.size())}};
  std::vector<WordSpan> next;
  pcre2_match_data* md = pcre2_match_data_create(1, nullptr);
  CHECK(md != nullptr);
  const auto* base = reinterpret_cast<PCRE2_SPTR>(subject.data());
  for (const auto& regex : regexes_) {
    next.clear();
    next.reserve(segments.size() * 2);
    for (const auto& [begin, end] : segments) {
      // Each segment is matched on its own, as llama.cpp does: lookaheads stop at its end.
      const PCRE2_SIZE length = end - begin;
      PCRE2_SIZE pos = 0;
      while (pos < length) {
        const int rc = pcre2_match(regex->code, base + begin, length, pos, PCRE2_NO_UTF_CHECK,
                                   md, nullptr);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
          // A resource limit (none is reachable by these patterns in the tests, including
          // megabyte-long runs of one character class); keep the rest as one word rather
          // than fail a request.
          SPDLOG_WARN("pre-tokenizer: PCRE2 error {} on a {}-byte segment", rc, length);
          break;
        }
        const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
        const PCRE2_SIZE ms = ov[0], me = ov[1];
        CHECK(me > ms, "pre-tokenizer regex matched the empty string");  // none of ours can
        if (ms > pos) next.emplace_back(begin + pos, begin + ms);
        next.emplace_back(begin + ms, begin + me);
        pos = me;
      }
      if (pos < length) next.emplace_back(begin + pos, end);
    }
    segments.swap(next);
  }
  pcre2_match_data_free(md);
  *words = std::move(segments);
}

}  // namespace slimkv::tokenizer
