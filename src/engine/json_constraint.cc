#include "engine/json_constraint.h"

#include <algorithm>

#include "base/check.h"
#include "tokenizer/tokenizer.h"

namespace slimkv::engine {

std::unique_ptr<ConstraintVocab> ConstraintVocab::FromTokenizer(const tokenizer::Tokenizer& tok) {
  using tokenizer::TokenType;
  const int n = tok.vocab_size();
  std::vector<std::string> bytes(n);
  std::vector<Kind> kinds(n, Kind::kNever);
  for (TokenId t = 0; t < n; ++t) {
    if (tok.IsEndOfGeneration(t)) {
      kinds[t] = Kind::kEndOfGeneration;
      continue;
    }
    const TokenType type = tok.GetTokenType(t);
    const std::string piece = tok.TokenToPiece(t);
    // User-defined tokens are markers ("<start_of_image>", "<tool_call>") except the runs of
    // whitespace some vocabularies (Gemma's "\n\n", "    ") mark user-defined: those are text.
    const bool whitespace_run = type == TokenType::kUserDefined && !piece.empty() &&
                                piece.find_first_not_of(" \t\n\r") == std::string::npos;
    if (type != TokenType::kNormal && type != TokenType::kByte && !whitespace_run) continue;
    bytes[t] = piece;
    kinds[t] = Kind::kText;
  }
  return std::make_unique<ConstraintVocab>(bytes, kinds);
}

ConstraintVocab::ConstraintVocab(const std::vector<std::string>& bytes, const std::vector<Kind>& kinds)
    : kinds_(kinds) {
  CHECK(bytes.size() == kinds.size(), "ConstraintVocab: {} byte strings for {} kinds", bytes.size(),
        kinds.size());
  for (size_t t = 0; t < bytes.size(); ++t) {
    if (kinds_[t] == Kind::kEndOfGeneration) eog_.push_back(static_cast<TokenId>(t));
  }
  offsets_.reserve(bytes.size() + 1);
  offsets_.push_back(0);
  for (size_t t = 0; t < bytes.size(); ++t) {
    bytes_ += bytes[t];
    offsets_.push_back(static_cast<uint32_t>(bytes_.size()));
    // A text token of no bytes would make no progress: never allowed.
    if (kinds_[t] == Kind::kText && bytes[t].empty()) kinds_[t] = Kind::kNever;
  }
  BuildTrie();
}

void ConstraintVocab::BuildTrie() {
  std::vector<TokenId> order;
  for (TokenId t = 0; t < size(); ++t) {
    if (kinds_[t] == Kind::kText) order.push_back(t);
  }
  // Sorted, a prefix comes before its extensions and equal strings are adjacent: each new
  // string shares its longest common prefix with the one before, and the rest are new nodes.
  std::sort(order.begin(), order.end(), [&](TokenId a, TokenId b) { return bytes(a) < bytes(b); });
  std::vector<uint32_t> path;  // node of each depth of the previous string
  std::string_view prev;
  for (TokenId t : order) {
    const std::string_view b = bytes(t);
    size_t common = 0;
    while (common < prev.size() && common < b.size() && prev[common] == b[common]) ++common;
    while (path.size() > common) {
      trie_[path.back()].end = static_cast<uint32_t>(trie_.size());
      path.pop_back();
    }
    for (size_t d = common; d < b.size(); ++d) {
      path.push_back(static_cast<uint32_t>(trie_.size()));
      const uint32_t here = static_cast<uint32_t>(trie_tokens_.size());
      trie_.push_back({static_cast<uint8_t>(b[d]), static_cast<uint32_t>(d + 1), 0, here, here});
    }
    trie_tokens_.push_back(t);
    trie_[path.back()].tokens_end = static_cast<uint32_t>(trie_tokens_.size());
    max_token_bytes_ = std::max(max_token_bytes_, static_cast<uint32_t>(b.size()));
    prev = b;
  }
  while (!path.empty()) {
    trie_[path.back()].end = static_cast<uint32_t>(trie_.size());
    path.pop_back();
  }
}

void ConstraintVocab::AppendAllowedText(const JsonValidator& v, std::vector<TokenId>* out) const {
  // states[d]: the validator after the first d bytes of the current path.
  std::vector<JsonValidator> states(max_token_bytes_ + 1);
  states[0] = v;
  for (uint32_t i = 0; i < trie_.size();) {
    const TrieNode& node = trie_[i];
    JsonValidator next = states[node.depth - 1];
    if (!next.PushByte(node.byte)) {
      i = node.end;  // no token under this prefix fits
      continue;
    }
    states[node.depth] = next;
    out->insert(out->end(), trie_tokens_.begin() + node.tokens_begin, trie_tokens_.begin() + node.tokens_end);
    ++i;
  }
}

void JsonConstraint::AllowedTokens(std::vector<TokenId>* out) const {
  out->clear();
  vocab_->AppendAllowedText(validator_, out);
  if (validator_.Complete())
    out->insert(out->end(), vocab_->end_of_generation().begin(), vocab_->end_of_generation().end());
}

bool JsonConstraint::Allows(TokenId t) const {
  if (t < 0 || t >= vocab_->size()) return false;
  switch (vocab_->kind(t)) {
    case ConstraintVocab::Kind::kText:
      return validator_.Accepts(vocab_->bytes(t));
    case ConstraintVocab::Kind::kEndOfGeneration:
      return validator_.Complete();
    case ConstraintVocab::Kind::kNever:
      return false;
  }
  return false;
}

void JsonConstraint::Accept(TokenId t) {
  CHECK(Allows(t), "JsonConstraint: token {} does not continue the JSON object", t);
  if (vocab_->kind(t) == ConstraintVocab::Kind::kText) validator_.Push(vocab_->bytes(t));
}

}  // namespace slimkv::engine
