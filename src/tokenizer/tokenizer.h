// Text <-> token ids from a GGUF vocabulary: byte-level BPE (GPT-2 style, pre-tokenizer
// regexes via PCRE2; SmolLM2, Llama-3, Qwen2) and SentencePiece-style (Llama-2, TinyLlama,
// Gemma: score-ordered merges with byte fallback). Ids equal llama.cpp's for the same file.
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

class Tokenizer {
 public:
  // Reads tokenizer.ggml.* metadata; DataLoss/Unimplemented naming the key when it is
  // missing, inconsistent (array lengths, ids out of range) or of an unknown model kind.
  static Result<std::unique_ptr<Tokenizer>> FromGguf(const gguf::GgufFile& file);
  virtual ~Tokenizer() = default;

  // Encodes UTF-8 text. `add_bos` prepends BOS when the vocabulary has one. With
  // `parse_special`, control/user-defined token texts in `text` (e.g. "<|im_start|>") become
  // their ids; otherwise they are tokenized as plain text. Invalid UTF-8 is not an error
  // here: it is tokenized exactly as llama.cpp does (see docs/TOKENIZER.md).
  virtual std::vector<TokenId> Encode(std::string_view text, bool add_bos, bool parse_special) const = 0;

  // Bytes of one token as it contributes to the output text (byte-level BPE decoded to raw
  // bytes, SPM "▁" -> " ", <0xAB> byte tokens -> the byte). Control tokens give "" unless
  // `render_special`. May be a partial UTF-8 sequence.
  virtual std::string TokenToPiece(TokenId id, bool render_special = false) const = 0;
  std::string Decode(std::span<const TokenId> ids, bool render_special = false) const;

  Kind kind() const { return kind_; }
  int32_t vocab_size() const { return static_cast<int32_t>(texts_.size()); }
  const std::string& TokenText(TokenId id) const { return texts_.at(id); }
  TokenType GetTokenType(TokenId id) const { return types_.at(id); }
  TokenId bos() const { return bos_; }  // -1 if none
  TokenId eos() const { return eos_; }  // -1 if none
  bool add_bos_default() const { return add_bos_; }
  // End-of-generation: EOS, EOT and the other control tokens that end a turn
  // (<|im_end|>, <end_of_turn>, <|eot_id|>, ...).
  bool IsEndOfGeneration(TokenId id) const;
  // Looks up the id of an exact token text, or -1.
  TokenId Find(std::string_view text) const;

 protected:
  Kind kind_ = Kind::kBpe;
  std::vector<std::string> texts_;
  std::vector<float> scores_;
  std::vector<TokenType> types_;
  TokenId bos_ = -1, eos_ = -1;
  bool add_bos_ = false;
  std::vector<TokenId> eog_ids_;
};

// Turns a stream of token ids into complete UTF-8 text, holding back the bytes of a
// character that is not finished yet (one emoji can span several tokens).
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tok) : tok_(tok) {}
  // Returns the text that became complete with this token (possibly empty).
  std::string Push(TokenId id);
  // Whatever is still held back (invalid or truncated UTF-8 is emitted as U+FFFD).
  std::string Flush();

 private:
  const Tokenizer& tok_;
  std::string pending_;
};

// Returns true if `text` is valid UTF-8; otherwise sets *bad_offset to the first bad byte.
bool IsValidUtf8(std::string_view text, size_t* bad_offset);

}  // namespace slimkv::tokenizer
