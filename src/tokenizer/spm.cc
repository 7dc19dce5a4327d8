#include "tokenizer/spm.h"

#include <algorithm>

#include "tokenizer/unicode.h"
#include "tokenizer/vocab.h"

namespace slimkv::tokenizer {

namespace {

// Heap order: highest score first, then leftmost.
bool SpmPairAfter(const SpmModel::Scratch::Pair& a, const SpmModel::Scratch::Pair& b) {
  return a.score < b.score || (a.score == b.score && a.left > b.left);
}

}  // namespace

void SpmModel::PushPair(std::string_view text, Scratch* s, int32_t left, int32_t right) const {
  if (left < 0 || right < 0) return;
  const Scratch::Symbol& l = s->symbols[left];
  const Scratch::Symbol& r = s->symbols[right];
  // Symbols are contiguous in the text, so the pair's text is a slice of it.
  const uint32_t len = l.len + r.len;
  const TokenId id = vocab_.Find(text.substr(l.begin, len));
  if (id < 0) return;
  s->heap.push_back({vocab_.Score(id), left, right, len});
  std::push_heap(s->heap.begin(), s->heap.end(), SpmPairAfter);
}

void SpmModel::Encode(std::string_view text, Scratch* s, std::vector<TokenId>* out) const {
  s->symbols.clear();
  s->heap.clear();
  for (size_t pos = 0; pos < text.size();) {
    const size_t len = std::min(Utf8LenFromLeadByte(static_cast<uint8_t>(text[pos])), text.size() - pos);
    const auto index = static_cast<int32_t>(s->symbols.size());
    s->symbols.push_back({static_cast<uint32_t>(pos), static_cast<uint32_t>(len), index - 1,
                          pos + len == text.size() ? -1 : index + 1});
    pos += len;
  }
  const auto n = static_cast<int32_t>(s->symbols.size());
  for (int32_t i = 1; i < n; ++i) PushPair(text, s, i - 1, i);

  while (!s->heap.empty()) {
    std::pop_heap(s->heap.begin(), s->heap.end(), SpmPairAfter);
    const Scratch::Pair p = s->heap.back();
    s->heap.pop_back();
    Scratch::Symbol& left = s->symbols[p.left];
    Scratch::Symbol& right = s->symbols[p.right];
    // Stale: a side was merged away, or grew, since the push.
    if (left.len == 0 || right.len == 0 || left.len + right.len != p.len) continue;
    left.len += right.len;
    right.len = 0;
    left.next = right.next;
    if (right.next >= 0) s->symbols[right.next].prev = p.left;
    PushPair(text, s, left.prev, p.left);
    PushPair(text, s, p.left, left.next);
  }

  for (int32_t i = 0; i >= 0 && i < n; i = s->symbols[i].next) {
    const Scratch::Symbol& sym = s->symbols[i];
    const std::string_view piece = text.substr(sym.begin, sym.len);
    const TokenId id = vocab_.Find(piece);
    if (id >= 0) {
      out->push_back(id);
      continue;
    }
    // Byte fallback. A vocabulary without a token for some byte makes llama.cpp throw;
    // slimkv uses the unknown token there (or drops the byte if there is none).
    for (char c : piece) {
      const TokenId b = vocab_.ByteToken(static_cast<uint8_t>(c));
      if (b >= 0) out->push_back(b);
      else if (vocab_.unk() >= 0) out->push_back(vocab_.unk());
    }
  }
}

}  // namespace slimkv::tokenizer
