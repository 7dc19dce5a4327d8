// Byte-level BPE merges (GPT-2 style; tokenizer.ggml.model "gpt2"): inside one pre-tokenized
// word, repeatedly merge the adjacent pair with the lowest merge rank (ties: leftmost), as
// llama.cpp's llm_tokenizer_bpe_session. A binary heap of candidate pairs makes a word of n
// bytes cost O(n log n).
#pragma once

#include <cstdint>
#include <memory>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "base/status.h"
#include "tokenizer/tokenizer.h"

namespace slimkv::gguf {
class GgufFile;
}

namespace slimkv::tokenizer {

class Vocab;

class BpeModel {
 public:
  // Reads tokenizer.ggml.merges ("left right" per entry, rank = index). DataLoss naming the
  // entry when one is not of that form or when left, right or left+right is not a token
  // (llama.cpp accepts such entries; no published vocabulary has them).
  static Result<std::unique_ptr<BpeModel>> Create(const Vocab& vocab, const gguf::GgufFile& file);

  // Reusable buffers, so that encoding a text does not allocate per word.
  struct Scratch {
    struct Symbol {
      TokenId id;     // token of the symbol's text, -1 if it is not one
      int32_t prev, next;
      uint32_t len;   // bytes of the word; 0 once merged into its left neighbour
    };
    struct Pair {
      int32_t rank;
      int32_t left, right;
      TokenId left_id, right_id, merged_id;
    };
    std::vector<Symbol> symbols;
    std::vector<Pair> heap;
    std::string encoded;
  };

  // Appends the tokens of one word, given as raw bytes (each byte is one byte-level
  // character of the vocabulary's alphabet).
  void EncodeWord(std::string_view word, Scratch* scratch, std::vector<TokenId>* out) const;

  size_t num_merges() const { return merges_.size(); }

 private:
  BpeModel(const Vocab& vocab) : vocab_(vocab) {}
  struct Merge {
    int32_t rank;
    TokenId result;
  };
  static uint64_t Key(TokenId left, TokenId right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
  }
  void PushPair(Scratch* s, int32_t left, int32_t right) const;

  const Vocab& vocab_;
  std::unordered_map<uint64_t, Merge> merges_;  // (left id, right id) -> rank, merged id
};

}  // namespace slimkv::tokenizer
