// Cuts special-token texts out of the input before the rest is tokenized, with the result
// of llama.cpp's tokenizer_st_partition: special tokens are taken longest text first; each
// one claims, left to right, every non-overlapping occurrence that lies wholly inside text
// no earlier token has claimed. With parse_special off, control and unknown tokens are not
// looked for, but user-defined ones still are (as Hugging Face tokenizers do).
//
// llama.cpp searches the text once per special token (Gemma has 6,400 of them); here one
// pass finds every occurrence of every special text and the claiming order is then replayed
// over that list, which gives the same fragments in O(text + occurrences log occurrences).
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace slimkv::tokenizer {

class Vocab;

struct Fragment {
  TokenId token;        // a special token, or -1 for text
  uint32_t begin, end;  // byte range of the input
};

class SpecialSplitter {
 public:
  explicit SpecialSplitter(const Vocab& vocab);

  // Fragments tiling `text` in order. Text fragments are never empty.
  void Split(std::string_view text, bool parse_special, std::vector<Fragment>* fragments) const;

 private:
  // A byte trie of the special texts, flattened: node i's children are
  // edges_[edge_begin_[i] .. edge_begin_[i + 1]), sorted by byte.
  struct Edge {
    uint8_t byte;
    int32_t child;
  };
  struct Occurrence {
    uint32_t priority;  // position in Vocab::special_tokens(): lower claims first
    uint32_t begin, len;
    TokenId id;
  };
  int32_t Child(int32_t node, uint8_t byte) const;

  const Vocab& vocab_;
  std::vector<int32_t> node_priority_;  // special token ending at the node, or -1
  std::vector<uint32_t> edge_begin_;    // [nodes + 1]
  std::vector<Edge> edges_;
  std::vector<int32_t> root_child_;     // [256], the root's children for direct lookup
};

}  // namespace slimkv::tokenizer
