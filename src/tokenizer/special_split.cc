#include "tokenizer/special_split.h"

#include <algorithm>
#include <map>

#include "tokenizer/vocab.h"

namespace slimkv::tokenizer {

SpecialSplitter::SpecialSplitter(const Vocab& vocab) : vocab_(vocab) {
  // Build with maps, then flatten.
  std::vector<std::map<uint8_t, int32_t>> children(1);
  std::vector<int32_t> priority(1, -1);
  const std::vector<TokenId>& specials = vocab.special_tokens();
  for (size_t p = 0; p < specials.size(); ++p) {
    int32_t node = 0;
    for (char c : vocab.Text(specials[p])) {
      const auto b = static_cast<uint8_t>(c);
      auto it = children[node].find(b);
      if (it == children[node].end()) {
        it = children[node].emplace(b, static_cast<int32_t>(children.size())).first;
        children.emplace_back();
        priority.push_back(-1);
      }
      node = it->second;
    }
    priority[node] = static_cast<int32_t>(p);
  }
  node_priority_ = std::move(priority);
  edge_begin_.reserve(children.size() + 1);
  for (const auto& c : children) {
    edge_begin_.push_back(static_cast<uint32_t>(edges_.size()));
    for (const auto& [byte, child] : c) edges_.push_back({byte, child});
  }
  edge_begin_.push_back(static_cast<uint32_t>(edges_.size()));
  root_child_.assign(256, -1);
  for (const auto& [byte, child] : children[0]) root_child_[byte] = child;
}

int32_t SpecialSplitter::Child(int32_t node, uint8_t byte) const {
  for (uint32_t e = edge_begin_[node]; e < edge_begin_[node + 1]; ++e) {
    if (edges_[e].byte == byte) return edges_[e].child;
    if (edges_[e].byte > byte) break;
  }
  return -1;
}

void SpecialSplitter::Split(std::string_view text, bool parse_special,
                            std::vector<Fragment>* fragments) const {
  fragments->clear();
  const auto n = static_cast<uint32_t>(text.size());
  const std::vector<TokenId>& specials = vocab_.special_tokens();

  // Every occurrence of every special text that may be cut out.
  std::vector<Occurrence> found;
  for (uint32_t p = 0; p < n; ++p) {
    int32_t node = root_child_[static_cast<uint8_t>(text[p])];
    for (uint32_t q = p + 1; node >= 0; ++q) {
      const int32_t pr = node_priority_[node];
      if (pr >= 0) {
        const TokenId id = specials[pr];
        if (parse_special || !(vocab_.Attr(id) & (kAttrControl | kAttrUnknown))) {
          found.push_back({static_cast<uint32_t>(pr), p, q - p, id});
        }
      }
      if (q >= n) break;
      node = Child(node, static_cast<uint8_t>(text[q]));
    }
  }
  if (found.empty()) {
    if (n > 0) fragments->push_back({-1, 0, n});
    return;
  }

  // Replay llama.cpp's order: token by token, longest first, each taking its leftmost
  // non-overlapping occurrences that lie inside text nothing has claimed yet.
  std::sort(found.begin(), found.end(), [](const Occurrence& a, const Occurrence& b) {
    return a.priority != b.priority ? a.priority < b.priority : a.begin < b.begin;
  });
  std::vector<uint8_t> claimed(n, 0);
  std::vector<Occurrence> taken;
  uint32_t current = UINT32_MAX, last_end = 0;
  for (const Occurrence& o : found) {
    if (o.priority != current) {
      current = o.priority;
      last_end = 0;
    }
    if (o.begin < last_end) continue;
    if (std::any_of(claimed.begin() + o.begin, claimed.begin() + o.begin + o.len,
                    [](uint8_t c) { return c != 0; })) {
      continue;
    }
    std::fill(claimed.begin() + o.begin, claimed.begin() + o.begin + o.len, 1);
    taken.push_back(o);
    last_end = o.begin + o.len;
  }
  std::sort(taken.begin(), taken.end(),
            [](const Occurrence& a, const Occurrence& b) { return a.begin < b.begin; });
  uint32_t pos = 0;
  for (const Occurrence& o : taken) {
    if (o.begin > pos) fragments->push_back({-1, pos, o.begin});
    fragments->push_back({o.id, o.begin, o.begin + o.len});
    pos = o.begin + o.len;
  }
  if (pos < n) fragments->push_back({-1, pos, n});
}

}  // namespace slimkv::tokenizer
