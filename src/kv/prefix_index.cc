#include "kv/prefix_index.h"

#include <cstring>

#include "base/hash.h"

namespace slimkv::kv {

uint64_t PrefixIndex::Key(uint64_t salt, uint64_t parent, std::span<const int32_t> tokens) {
  std::vector<uint8_t> buf(16 + tokens.size_bytes());
  std::memcpy(buf.data(), &salt, 8);
  std::memcpy(buf.data() + 8, &parent, 8);
  std::memcpy(buf.data() + 16, tokens.data(), tokens.size_bytes());
  const uint64_t k = SipHash24(buf.data(), buf.size());
  return k == kRoot ? 1 : k;
}

std::vector<const PrefixEntry*> PrefixIndex::Match(uint64_t salt, std::span<const int32_t> tokens, int bt) {
  std::vector<const PrefixEntry*> chain;
  uint64_t parent = kRoot;
  ++clock_;
  for (size_t i = 0; (i + 1) * bt <= tokens.size(); ++i) {
    const auto block = tokens.subspan(i * bt, bt);
    auto it = entries_.find(Key(salt, parent, block));
    if (it == entries_.end()) break;
    PrefixEntry& e = it->second;
    if (e.salt != salt || e.parent != parent || !std::equal(block.begin(), block.end(), e.tokens.begin())) break;
    e.last_use = clock_;
    chain.push_back(&e);
    parent = e.key;
  }
  return chain;
}

bool PrefixIndex::Insert(PrefixEntry entry) {
  if (entries_.count(entry.key)) return false;
  if (entry.parent != kRoot) {
    auto p = entries_.find(entry.parent);
    if (p == entries_.end()) return false;  // parents are inserted first
    ++p->second.children;
  }
  entry.last_use = ++clock_;
  entries_.emplace(entry.key, std::move(entry));
  return true;
}

const PrefixEntry* PrefixIndex::Oldest() const {
  const PrefixEntry* best = nullptr;
  for (const auto& [k, e] : entries_) {
    if (e.children == 0 && (!best || e.last_use < best->last_use)) best = &e;
  }
  return best;
}

void PrefixIndex::Erase(uint64_t key) {
  auto it = entries_.find(key);
  if (it == entries_.end()) return;
  if (it->second.parent != kRoot) {
    auto p = entries_.find(it->second.parent);
    if (p != entries_.end()) --p->second.children;
  }
  entries_.erase(it);
}

const PrefixEntry* PrefixIndex::Find(uint64_t key) const {
  auto it = entries_.find(key);
  return it == entries_.end() ? nullptr : &it->second;
}

}  // namespace slimkv::kv
