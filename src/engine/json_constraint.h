// Constrained decoding for response_format {"type": "json_object"}: which tokens may come
// next so that the generated text stays a prefix of one JSON object (JsonValidator), and the
// vocabulary's bytes the check reads.
//
// A token is allowed when its bytes (Tokenizer::TokenToPiece: byte-level BPE decoded to raw
// bytes, SentencePiece's "▁" as a space, <0xAB> as the byte) keep the text a valid prefix.
// End-of-generation tokens are allowed only once the object is complete; control, unknown,
// unused and user-defined tokens (chat markers, <unusedN>, image markers; but not the
// whitespace runs Gemma marks user-defined) and tokens of no bytes never are. The scheduler ends a request with finish_reason stop as soon as the
// object is complete (nothing but whitespace could follow it), so a well-formed vocabulary
// (one with a token for every byte, as byte-level BPE and SentencePiece with byte fallback
// have) always has an allowed token.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "engine/json_validator.h"
#include "engine/sampler.h"

namespace slimkv::tokenizer {
class Tokenizer;
}

namespace slimkv::engine {

// Each token's bytes and kind, flat: built once per scheduler, shared read-only by every
// constrained request.
class ConstraintVocab {
 public:
  enum class Kind : uint8_t {
    kText,             // ordinary text: allowed when its bytes fit
    kEndOfGeneration,  // allowed only after the object is complete
    kNever,            // control / special / empty: never allowed
  };
  static std::unique_ptr<ConstraintVocab> FromTokenizer(const tokenizer::Tokenizer& tok);
  // For tests: token i is `bytes[i]` of `kinds[i]` (the sizes must match); a kText token of
  // no bytes becomes kNever.
  ConstraintVocab(const std::vector<std::string>& bytes, const std::vector<Kind>& kinds);

  // Appends every kText token whose bytes `v` accepts: a walk of the vocabulary's byte trie
  // that skips a whole subtree at its first rejected byte, so it costs what the allowed tokens
  // and their rejected one-byte extensions cost, not the vocabulary (a few tokens' worth
  // outside strings; about one pass over the vocabulary inside a string, where most tokens fit).
  void AppendAllowedText(const JsonValidator& v, std::vector<TokenId>* out) const;
  const std::vector<TokenId>& end_of_generation() const { return eog_; }

  int size() const { return static_cast<int>(kinds_.size()); }
  Kind kind(TokenId t) const { return kinds_[t]; }
  std::string_view bytes(TokenId t) const {
    return std::string_view(bytes_).substr(offsets_[t], offsets_[t + 1] - offsets_[t]);
  }

 private:
  void BuildTrie();

  std::string bytes_;              // every token's bytes, concatenated
  std::vector<uint32_t> offsets_;  // [size + 1]: token t is bytes_[offsets_[t], offsets_[t+1])
  std::vector<Kind> kinds_;        // [size]
  std::vector<TokenId> eog_;       // the kEndOfGeneration tokens

  // The byte trie of the kText tokens, in depth-first preorder: node i's subtree is
  // [i, trie_[i].end); its children follow it. The root (the empty prefix) is implicit.
  struct TrieNode {
    uint8_t byte;           // the last byte of the node's prefix
    uint32_t depth;         // bytes in the prefix (>= 1)
    uint32_t end;           // one past the subtree's last node
    uint32_t tokens_begin;  // trie_tokens_[tokens_begin, tokens_end): the tokens of exactly this prefix
    uint32_t tokens_end;
  };
  std::vector<TrieNode> trie_;
  std::vector<TokenId> trie_tokens_;
  uint32_t max_token_bytes_ = 0;
};

class JsonConstraint {
 public:
  // `vocab` must outlive the constraint.
  explicit JsonConstraint(const ConstraintVocab* vocab) : vocab_(vocab) {}
  // Whether `t` may be the next token. Cheap: a copy of the validator fed the token's bytes.
  bool Allows(TokenId t) const;
  // Writes every allowed token (in no particular order), for when most are not: the sampler
  // asks this when a few tries of Allows found too few.
  void AllowedTokens(std::vector<TokenId>* out) const;
  // Advances past `t`, which must be allowed (CHECKed: a bug otherwise).
  void Accept(TokenId t);
  // The object is complete.
  bool Complete() const { return validator_.Complete(); }

 private:
  const ConstraintVocab* vocab_;
  JsonValidator validator_;
};

}  // namespace slimkv::engine
