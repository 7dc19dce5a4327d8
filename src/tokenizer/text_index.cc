#include "tokenizer/text_index.h"

#include <cstring>

namespace slimkv::tokenizer {

uint64_t TextIndex::Hash(std::string_view s) {
  // 8 bytes at a time, multiply-xorshift mixing (token texts are short).
  uint64_t h = 0x9E3779B97F4A7C15ull ^ (s.size() * 0xC2B2AE3D27D4EB4Full);
  size_t i = 0;
  for (; i + 8 <= s.size(); i += 8) {
    uint64_t w;
    std::memcpy(&w, s.data() + i, 8);
    h = (h ^ w) * 0xFF51AFD7ED558CCDull;
    h ^= h >> 32;
  }
  uint64_t w = 0;
  std::memcpy(&w, s.data() + i, s.size() - i);
  h = (h ^ w) * 0xC4CEB9FE1A85EC53ull;
  h ^= h >> 29;
  h *= 0x94D049BB133111EBull;
  h ^= h >> 31;
  return h;
}

std::optional<std::pair<int32_t, int32_t>> TextIndex::Build(const std::vector<std::string>* texts) {
  texts_ = texts;
  uint64_t capacity = 16;
  while (capacity < 2 * texts->size()) capacity *= 2;
  slots_.assign(capacity, Slot{0, -1});
  mask_ = capacity - 1;
  std::optional<std::pair<int32_t, int32_t>> duplicate;
  for (size_t id = 0; id < texts->size(); ++id) {
    const std::string& text = (*texts)[id];
    const uint64_t h = Hash(text);
    const auto tag = static_cast<uint32_t>(h >> 32);
    for (uint64_t i = h & mask_;; i = (i + 1) & mask_) {
      Slot& slot = slots_[i];
      if (slot.id < 0) {
        slot = {tag, static_cast<int32_t>(id)};
        break;
      }
      if (slot.tag == tag && (*texts)[slot.id] == text) {
        if (!duplicate) duplicate = std::pair{slot.id, static_cast<int32_t>(id)};
        break;
      }
    }
  }
  return duplicate;
}

}  // namespace slimkv::tokenizer
