// Exact-text lookup of token ids: an open-addressing hash table (linear probing, load <= 1/2)
// over the vocabulary's texts. The SentencePiece merge loop looks up several candidate texts
// per input character in a 262k-entry vocabulary; a flat array of (hash, id) slots costs one
// cache miss per lookup where std::unordered_map's bucket-and-node chase costs three.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace slimkv::tokenizer {

class TextIndex {
 public:
  // Indexes texts[i] -> i. `texts` must outlive the index and not change. Returns the ids of
  // the first pair of equal texts (earlier, later) if there is one, indexing the earlier.
  std::optional<std::pair<int32_t, int32_t>> Build(const std::vector<std::string>* texts);

  // Id of the text equal to `s`, or -1.
  int32_t Find(std::string_view s) const {
    if (slots_.empty()) return -1;
    const uint64_t h = Hash(s);
    const auto tag = static_cast<uint32_t>(h >> 32);
    for (uint64_t i = h & mask_;; i = (i + 1) & mask_) {
      const Slot& slot = slots_[i];
      if (slot.id < 0) return -1;
      if (slot.tag == tag && (*texts_)[slot.id] == s) return slot.id;
    }
  }

  static uint64_t Hash(std::string_view s);

 private:
  struct Slot {
    uint32_t tag;  // high half of the hash, compared before the text
    int32_t id;    // -1: empty
  };
  std::vector<Slot> slots_;
  uint64_t mask_ = 0;
  const std::vector<std::string>* texts_ = nullptr;
};

}  // namespace slimkv::tokenizer
