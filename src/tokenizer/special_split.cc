#include "tokenizer/special_split.h"

#include <algorithm>
#include <numeric>

#include "tokenizer/vocab.h"

namespace slimkv::tokenizer {

SpecialSplitter::SpecialSplitter(const Vocab& vocab) : vocab_(vocab) {
  // Built breadth-first from the texts in byte order: a node is the range of sorted texts
  // sharing its prefix, its children the runs of equal next bytes in that range. Only the
  // flat arrays are allocated, about 16 bytes per byte of special text at most (a std::map
  // per node took 116, so a file of special texts could exhaust memory). Texts are unique
  // (Vocab rejects duplicates), so at most one ends at a node, and it sorts first there.
  const std::vector<TokenId>& specials = vocab.special_tokens();
  auto text = [&](uint32_t p) -> std::string_view { return vocab.Text(specials[p]); };
  std::vector<uint32_t> order(specials.size());  // positions in `specials`, by text
  std::iota(order.begin(), order.end(), 0u);
  std::sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) { return text(a) < text(b); });
  struct Range {
    uint32_t lo, hi;  // [lo, hi) of `order`
    uint32_t depth;   // prefix length
  };
  std::vector<Range> nodes = {{0, static_cast<uint32_t>(order.size()), 0}};
  for (size_t i = 0; i < nodes.size(); ++i) {
    const Range r = nodes[i];
    uint32_t lo = r.lo;
    int32_t priority = -1;
    if (lo < r.hi && text(order[lo]).size() == r.depth) priority = static_cast<int32_t>(order[lo++]);
    node_priority_.push_back(priority);
    edge_begin_.push_back(static_cast<uint32_t>(edges_.size()));
    while (lo < r.hi) {
      const auto byte = static_cast<uint8_t>(text(order[lo])[r.depth]);
      uint32_t hi = lo + 1;
      while (hi < r.hi && static_cast<uint8_t>(text(order[hi])[r.depth]) == byte) ++hi;
      edges_.push_back({byte, static_cast<int32_t>(nodes.size())});
      nodes.push_back({lo, hi, r.depth + 1});
      lo = hi;
    }
  }
  edge_begin_.push_back(static_cast<uint32_t>(edges_.size()));
  root_child_.assign(256, -1);
  for (uint32_t e = edge_begin_[0]; e < edge_begin_[1]; ++e) root_child_[edges_[e].byte] = edges_[e].child;
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
