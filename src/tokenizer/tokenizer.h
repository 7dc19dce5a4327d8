// Text <-> token ids from a GGUF vocabulary: byte-level BPE (GPT-2 style, pre-tokenizer
// regexes via PCRE2; SmolLM2, Llama-3, Qwen2) and SentencePiece-style (Llama-2, TinyLlama,
// Gemma: score-ordered merges with byte fallback). Ids equal llama.cpp's for the same file
// (docs/TOKENIZER.md says how that is checked and where slimkv deliberately differs).
//
// A Tokenizer is immutable after FromGguf; every method is const and thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace slimkv::gguf {
class GgufFile;
}

namespace slimkv::tokenizer {

using TokenId = int32_t;

enum class Kind { kBpe, kSpm };

// GGUF token types (tokenizer.ggml.token_type).
enum class TokenType : int32_t {
  kUndefined = 0, kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6,
};

class Vocab;
class PreTokenizer;
class BpeModel;
class SpmModel;
class SpecialSplitter;

class Tokenizer {
 public:
  // Reads tokenizer.ggml.* metadata. DataLoss naming the key when it is missing or
  // inconsistent (array lengths, duplicate token texts, merges naming unknown tokens, special
  // token ids out of range); Unimplemented for a model kind or pre-tokenizer slimkv lacks.
  static Result<std::unique_ptr<Tokenizer>> FromGguf(const gguf::GgufFile& file);
  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // Encodes UTF-8 text (< 1 GiB: offsets are 32-bit and escaping may triple it). `add_bos`
  // prepends BOS when the vocabulary has one (pass add_bos_default() for what the model
  // expects). With `parse_special`, control and user-defined token texts in `text` (e.g.
  // "<|im_start|>") become their ids; without it, control tokens are tokenized as plain
  // text, while user-defined ones are still matched (llama.cpp and Hugging Face do the
  // same). Invalid UTF-8 is not an error: it is tokenized exactly as llama.cpp does (see
  // docs/TOKENIZER.md).
  std::vector<TokenId> Encode(std::string_view text, bool add_bos, bool parse_special) const;
  // The longest text Encode takes.
  static constexpr size_t kMaxTextBytes = (size_t{1} << 30) - 1;
  // Encode for text from outside the program (a request): InvalidArgument naming both sizes
  // for a text longer than kMaxTextBytes, where Encode would stop the program.
  Result<std::vector<TokenId>> EncodeText(std::string_view text, bool add_bos, bool parse_special) const;

  // Bytes of one token as it contributes to the output text (byte-level BPE decoded to raw
  // bytes, SPM "▁" -> " ", <0xAB> byte tokens -> the byte). Control and unknown tokens give
  // "" unless `render_special`; user-defined tokens always give their text. May be a partial
  // UTF-8 sequence. An id outside the vocabulary gives "".
  std::string TokenToPiece(TokenId id, bool render_special = false) const;
  // The pieces concatenated. When the vocabulary prefixes a space on encoding
  // (add_space_prefix), the first piece after any leading BOS loses one leading space, so
  // that Decode(Encode(text, ...)) == text for valid UTF-8 without special token texts.
  std::string Decode(std::span<const TokenId> ids, bool render_special = false) const;

  Kind kind() const;
  int32_t vocab_size() const;
  const std::string& TokenText(TokenId id) const;  // CHECKs the id
  TokenType GetTokenType(TokenId id) const;        // CHECKs the id
  TokenId bos() const;  // -1 if none
  TokenId eos() const;  // -1 if none
  TokenId eot() const;  // end of turn (<|im_end|>, <end_of_turn>, ...), -1 if none
  bool add_bos_default() const;
  // End-of-generation: EOS, EOT and the other tokens llama.cpp stops on (<|im_end|>,
  // <end_of_turn>, <|eot_id|>, <|endoftext|>, ...).
  bool IsEndOfGeneration(TokenId id) const;
  // Looks up the id of an exact token text, or -1.
  TokenId Find(std::string_view text) const;
  // tokenizer.chat_template, "" if the file has none.
  const std::string& chat_template() const;

 private:
  Tokenizer();

  std::unique_ptr<Vocab> vocab_;
  std::unique_ptr<SpecialSplitter> splitter_;
  std::unique_ptr<PreTokenizer> pre_;  // BPE only
  std::unique_ptr<BpeModel> bpe_;      // BPE only
  std::unique_ptr<SpmModel> spm_;      // SPM only
  std::vector<std::string> pieces_;    // TokenToPiece(id, render_special=true)
};

// Turns a stream of token ids into complete UTF-8 text, holding back the bytes of a
// character that is not finished yet (one emoji can span several tokens). Bytes that can
// never become valid UTF-8 are emitted as U+FFFD, one per maximal invalid sequence.
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tok, bool render_special = false)
      : tok_(tok), render_special_(render_special) {}
  // Returns the text that became complete with this token (possibly empty).
  std::string Push(TokenId id);
  // Whatever is still held back (a truncated character is emitted as U+FFFD).
  std::string Flush();

 private:
  const Tokenizer& tok_;
  bool render_special_;
  std::string pending_;
};

// Returns true if `text` is valid UTF-8 (no overlong forms, surrogates or code points
// above U+10FFFF); otherwise sets *bad_offset (when not null) to the first bad byte.
bool IsValidUtf8(std::string_view text, size_t* bad_offset);

}  // namespace slimkv::tokenizer
