// The vocabulary read from a GGUF file's tokenizer.ggml.* keys: token texts, scores, types,
// the attributes llama.cpp derives from them, special token ids and flags.
//
// Validation is stricter than llama.cpp where llama.cpp would crash or silently misbehave:
// duplicate token texts, a special token id key outside the vocabulary and short score/type
// arrays are DataLoss errors naming the key.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "tokenizer/pretokenizer.h"
#include "tokenizer/text_index.h"
#include "tokenizer/tokenizer.h"

namespace slimkv::gguf {
class GgufFile;
}

namespace slimkv::tokenizer {

// llama.cpp's llama_token_attr bits. A token has the bit of its GGUF type; llama.cpp then
// adds kControl to end-of-turn / FIM tokens recognised by text and kUnused to control
// tokens named "...unused...".
enum TokenAttr : uint32_t {
  kAttrUndefined = 0,
  kAttrUnknown = 1u << 0,
  kAttrUnused = 1u << 1,
  kAttrNormal = 1u << 2,
  kAttrControl = 1u << 3,
  kAttrUserDefined = 1u << 4,
  kAttrByte = 1u << 5,
};

// Not copyable or movable: `index_` refers to `texts_`.
class Vocab {
 public:
  static Result<std::unique_ptr<Vocab>> Load(const gguf::GgufFile& file);
  Vocab(const Vocab&) = delete;
  Vocab& operator=(const Vocab&) = delete;

  Kind kind() const { return kind_; }
  int32_t size() const { return static_cast<int32_t>(texts_.size()); }
  bool Valid(TokenId id) const { return id >= 0 && id < size(); }
  const std::string& Text(TokenId id) const { return texts_[id]; }
  float Score(TokenId id) const { return scores_[id]; }
  TokenType Type(TokenId id) const { return types_[id]; }
  uint32_t Attr(TokenId id) const { return attrs_[id]; }
  // Id of an exact token text, or -1.
  TokenId Find(std::string_view text) const { return index_.Find(text); }
  // The token of one raw byte: <0xAB> for SentencePiece, the byte-level character for BPE;
  // -1 if the vocabulary has none.
  TokenId ByteToken(uint8_t b) const { return byte_tokens_[b]; }

  TokenId bos() const { return bos_; }
  TokenId eos() const { return eos_; }
  TokenId eot() const { return eot_; }
  TokenId unk() const { return unk_; }
  bool add_bos() const { return add_bos_; }
  bool add_eos() const { return add_eos_; }
  bool add_space_prefix() const { return add_space_prefix_; }
  const PreTypeInfo& pre() const { return pre_; }
  const std::string& chat_template() const { return chat_template_; }
  bool IsEog(TokenId id) const;
  // Control, user-defined and unknown tokens, longest text first (ties by id): the order in
  // which llama.cpp cuts them out of the text before tokenizing the rest.
  const std::vector<TokenId>& special_tokens() const { return special_tokens_; }

 private:
  Vocab() = default;
  Status LoadTokens(const gguf::GgufFile& file);
  Status LoadSpecialIds(const gguf::GgufFile& file);
  void DeriveAttributes();

  Kind kind_ = Kind::kBpe;
  PreTypeInfo pre_;
  std::vector<std::string> texts_;
  std::vector<float> scores_;
  std::vector<TokenType> types_;
  std::vector<uint32_t> attrs_;  // TokenAttr bits
  TextIndex index_;  // text -> id
  std::array<TokenId, 256> byte_tokens_{};
  TokenId bos_ = -1, eos_ = -1, eot_ = -1, eom_ = -1, unk_ = -1, pad_ = -1;
  TokenId fim_pad_ = -1, fim_rep_ = -1, fim_sep_ = -1;
  bool add_bos_ = false, add_eos_ = false, add_space_prefix_ = false;
  std::vector<TokenId> eog_ids_;  // sorted
  std::vector<TokenId> special_tokens_;
  std::string chat_template_;
};

}  // namespace slimkv::tokenizer
