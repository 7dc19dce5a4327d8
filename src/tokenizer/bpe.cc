#include "tokenizer/bpe.h"

#include <algorithm>

#include "gguf/gguf_file.h"
#include "tokenizer/unicode.h"
#include "tokenizer/vocab.h"

namespace slimkv::tokenizer {

namespace {

constexpr std::string_view kMergesKey = "tokenizer.ggml.merges";

// Heap order: lowest rank first, then leftmost (std heaps keep the "largest" on top).
bool BpePairAfter(const BpeModel::Scratch::Pair& a, const BpeModel::Scratch::Pair& b) {
  return a.rank > b.rank || (a.rank == b.rank && a.left > b.left);
}

}  // namespace

Result<std::unique_ptr<BpeModel>> BpeModel::Create(const Vocab& vocab, const gguf::GgufFile& file) {
  const std::string& name = file.name();
  const gguf::MetaArray* merges = file.GetArray(kMergesKey);
  if (merges == nullptr) {
    return DataLoss("{}: {} is missing (or not an array); a BPE vocabulary needs it", name, kMergesKey);
  }
  std::unique_ptr<BpeModel> model(new BpeModel(vocab));
  model->merges_.reserve(merges->items.size());
  for (size_t i = 0; i < merges->items.size(); ++i) {
    const std::string* text = merges->items[i].AsString();
    if (text == nullptr) return DataLoss("{}: {}[{}] is not a string", name, kMergesKey, i);
    // As llama.cpp: the first space after the first byte separates the two parts.
    const size_t space = text->size() > 1 ? text->find(' ', 1) : std::string::npos;
    if (space == std::string::npos) {
      return DataLoss("{}: {}[{}] '{}' is not of the form 'left right'", name, kMergesKey, i, *text);
    }
    const std::string_view left = std::string_view(*text).substr(0, space);
    const std::string_view right = std::string_view(*text).substr(space + 1);
    const std::string merged = std::string(left) + std::string(right);
    const TokenId l = vocab.Find(left), r = vocab.Find(right), m = vocab.Find(merged);
    for (auto [part, id] : {std::pair{left, l}, std::pair{right, r},
                            std::pair{std::string_view(merged), m}}) {
      if (id < 0) {
        return DataLoss("{}: {}[{}] '{}' refers to '{}', which is not a token", name, kMergesKey,
                        i, *text, part);
      }
    }
    // A repeated pair keeps its first (lowest) rank, as llama.cpp's map emplace does.
    model->merges_.emplace(Key(l, r), Merge{static_cast<int32_t>(i), m});
  }
  return model;
}

void BpeModel::PushPair(Scratch* s, int32_t left, int32_t right) const {
  if (left < 0 || right < 0) return;
  const TokenId l = s->symbols[left].id, r = s->symbols[right].id;
  if (l < 0 || r < 0) return;
  const auto it = merges_.find(Key(l, r));
  if (it == merges_.end()) return;
  s->heap.push_back({it->second.rank, left, right, l, r, it->second.result});
  std::push_heap(s->heap.begin(), s->heap.end(), BpePairAfter);
}

void BpeModel::EncodeWord(std::string_view word, Scratch* s, std::vector<TokenId>* out) const {
  if (word.empty()) return;
  if (vocab_.pre().ignore_merges) {
    s->encoded.clear();
    for (char c : word) s->encoded += ByteLevelChar(static_cast<uint8_t>(c));
    const TokenId whole = vocab_.Find(s->encoded);
    if (whole >= 0) {
      out->push_back(whole);
      return;
    }
  }
  const auto n = static_cast<int32_t>(word.size());
  s->symbols.resize(n);
  for (int32_t i = 0; i < n; ++i) {
    s->symbols[i] = {vocab_.ByteToken(static_cast<uint8_t>(word[i])), i - 1, i + 1 < n ? i + 1 : -1, 1};
  }
  s->heap.clear();
  for (int32_t i = 1; i < n; ++i) PushPair(s, i - 1, i);

  while (!s->heap.empty()) {
    std::pop_heap(s->heap.begin(), s->heap.end(), BpePairAfter);
    const Scratch::Pair p = s->heap.back();
    s->heap.pop_back();
    Scratch::Symbol& left = s->symbols[p.left];
    Scratch::Symbol& right = s->symbols[p.right];
    // Stale: one side was merged away or has become a different token since the push.
    if (left.len == 0 || right.len == 0 || left.id != p.left_id || right.id != p.right_id) continue;
    left.id = p.merged_id;
    left.len += right.len;
    right.len = 0;
    left.next = right.next;
    if (right.next >= 0) s->symbols[right.next].prev = p.left;
    PushPair(s, left.prev, p.left);
    PushPair(s, p.left, left.next);
  }

  for (int32_t i = 0; i >= 0; i = s->symbols[i].next) {
    const Scratch::Symbol& sym = s->symbols[i];
    if (sym.id >= 0) {
      out->push_back(sym.id);
      continue;
    }
    // A byte whose byte-level character is not in the vocabulary (never merged, so one
    // byte): llama.cpp then looks up each byte of that character's UTF-8 as a one-byte
    // token text and drops the ones it does not find.
    for (char c : ByteLevelChar(static_cast<uint8_t>(word[i]))) {
      const TokenId id = vocab_.Find(std::string_view(&c, 1));
      if (id >= 0) out->push_back(id);
    }
  }
}

}  // namespace slimkv::tokenizer
