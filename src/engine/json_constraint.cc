#include "engine/json_constraint.h"

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
    if (type != TokenType::kNormal && type != TokenType::kByte) continue;
    bytes[t] = tok.TokenToPiece(t);
    kinds[t] = Kind::kText;
  }
  return std::make_unique<ConstraintVocab>(bytes, kinds);
}

ConstraintVocab::ConstraintVocab(const std::vector<std::string>& bytes, const std::vector<Kind>& kinds)
    : kinds_(kinds) {
  CHECK(bytes.size() == kinds.size(), "ConstraintVocab: {} byte strings for {} kinds", bytes.size(),
        kinds.size());
  offsets_.reserve(bytes.size() + 1);
  offsets_.push_back(0);
  for (size_t t = 0; t < bytes.size(); ++t) {
    bytes_ += bytes[t];
    offsets_.push_back(static_cast<uint32_t>(bytes_.size()));
    // A text token of no bytes would make no progress: never allowed.
    if (kinds_[t] == Kind::kText && bytes[t].empty()) kinds_[t] = Kind::kNever;
  }
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
