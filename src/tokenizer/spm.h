// SentencePiece-style BPE over a score table (tokenizer.ggml.model "llama": Llama-2,
// TinyLlama, Gemma), as llama.cpp's llm_tokenizer_spm_session:
//  - the text (spaces already replaced by "▁") is cut into symbols of one UTF-8 character
//    each, a character's length read from its lead byte alone;
//  - repeatedly, of all adjacent pairs whose concatenation is a token, the one whose token
//    has the highest score merges (ties: leftmost);
//  - a final symbol that is not a token becomes one byte token <0xAB> per byte.
// There is no pre-tokenization: a whole fragment between special tokens is one sequence,
// so a binary heap of candidate pairs keeps it O(n log n).
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace slimkv::tokenizer {

class Vocab;

class SpmModel {
 public:
  explicit SpmModel(const Vocab& vocab) : vocab_(vocab) {}

  struct Scratch {
    struct Symbol {
      uint32_t begin;  // byte offset in the text
      uint32_t len;    // bytes; 0 once merged into its left neighbour
      int32_t prev, next;
    };
    struct Pair {
      float score;
      int32_t left, right;
      uint32_t len;  // bytes of the merged text when pushed
    };
    std::vector<Symbol> symbols;
    std::vector<Pair> heap;
  };

  // Appends the tokens of `text` (already escaped: "▁" for spaces, with the space prefix).
  void Encode(std::string_view text, Scratch* scratch, std::vector<TokenId>* out) const;

 private:
  void PushPair(std::string_view text, Scratch* s, int32_t left, int32_t right) const;

  const Vocab& vocab_;
};

}  // namespace slimkv::tokenizer
