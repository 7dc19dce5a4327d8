#include "tokenizer/tokenizer.h"

#include <cstdint>
#include <limits>

#include "base/check.h"
#include "gguf/gguf_file.h"
#include "tokenizer/bpe.h"
#include "tokenizer/pretokenizer.h"
#include "tokenizer/special_split.h"
#include "tokenizer/spm.h"
#include "tokenizer/unicode.h"
#include "tokenizer/vocab.h"

namespace slimkv::tokenizer {

namespace {

constexpr std::string_view kSpmSpace = "\xE2\x96\x81";  // "▁" U+2581

// The byte a <0xAB> token stands for, or -1 if its text is not of that form.
int ByteOfByteToken(const std::string& text) {
  if (text.size() != 6 || text.compare(0, 3, "<0x") != 0 || text[5] != '>') return -1;
  int value = 0;
  for (int i = 3; i < 5; ++i) {
    const char c = text[i];
    const int d = (c >= '0' && c <= '9') ? c - '0'
                  : (c >= 'A' && c <= 'F') ? c - 'A' + 10
                  : (c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1;
    if (d < 0) return -1;
    value = value * 16 + d;
  }
  return value;
}

void ReplaceAll(std::string_view from, std::string_view to, std::string* s) {
  std::string out;
  out.reserve(s->size());
  size_t pos = 0;
  for (size_t hit; (hit = s->find(from, pos)) != std::string::npos; pos = hit + from.size()) {
    out.append(*s, pos, hit - pos);
    out += to;
  }
  out.append(*s, pos);
  s->swap(out);
}

// The text a token stands for (llama.cpp's token_to_piece with special = true).
std::string PieceOf(const Vocab& vocab, TokenId id) {
  const uint32_t attr = vocab.Attr(id);
  const std::string& text = vocab.Text(id);
  if (attr & (kAttrUnknown | kAttrControl | kAttrUserDefined)) return text;
  if (attr & kAttrNormal) {
    if (vocab.kind() == Kind::kSpm) {
      std::string s = text;
      ReplaceAll(kSpmSpace, " ", &s);
      return s;
    }
    // Byte-level: every character stands for one byte. (llama.cpp pastes an
    // "[UNK_BYTE_..." marker for characters outside the alphabet; no vocabulary has them,
    // and slimkv keeps such a character as it is.)
    std::string s;
    for (size_t pos = 0; pos < text.size();) {
      uint32_t cpt = 0;
      const size_t len = DecodeUtf8Strict(text, pos, &cpt);
      const int byte = len > 0 ? ByteLevelByte(cpt) : -1;
      if (byte >= 0) {
        s.push_back(static_cast<char>(byte));
      } else {
        s.append(text, pos, len > 0 ? len : 1);
      }
      pos += len > 0 ? len : 1;
    }
    return s;
  }
  if (attr & kAttrByte) {
    const int b = ByteOfByteToken(text);
    return b >= 0 ? std::string(1, static_cast<char>(b)) : std::string();
  }
  return {};  // unused or undefined
}

}  // namespace

Tokenizer::Tokenizer() = default;
Tokenizer::~Tokenizer() = default;

Result<std::unique_ptr<Tokenizer>> Tokenizer::FromGguf(const gguf::GgufFile& file) {
  std::unique_ptr<Tokenizer> tok(new Tokenizer());
  ASSIGN_OR_RETURN(tok->vocab_, Vocab::Load(file));
  const Vocab& vocab = *tok->vocab_;
  if (vocab.kind() == Kind::kBpe) {
    ASSIGN_OR_RETURN(tok->pre_, PreTokenizer::Create(vocab.pre().type));
    ASSIGN_OR_RETURN(tok->bpe_, BpeModel::Create(vocab, file));
  } else {
    tok->spm_ = std::make_unique<SpmModel>(vocab);
  }
  tok->splitter_ = std::make_unique<SpecialSplitter>(vocab);
  tok->pieces_.resize(vocab.size());
  for (TokenId id = 0; id < vocab.size(); ++id) tok->pieces_[id] = PieceOf(vocab, id);
  return tok;
}

Result<std::vector<TokenId>> Tokenizer::EncodeText(std::string_view text, bool add_bos, bool parse_special) const {
  if (text.size() > kMaxTextBytes) {
    return InvalidArgument("the text is {} bytes; at most {} bytes can be tokenized", text.size(), kMaxTextBytes);
  }
  return Encode(text, add_bos, parse_special);
}

std::vector<TokenId> Tokenizer::Encode(std::string_view text, bool add_bos, bool parse_special) const {
  CHECK(text.size() <= kMaxTextBytes, "Encode: {} bytes is more than the 1 GiB a text may have (EncodeText for "
        "text from outside)", text.size());
  std::vector<TokenId> out;
  out.reserve(text.size() / 3 + 2);
  if (add_bos && vocab_->bos() >= 0) out.push_back(vocab_->bos());
  std::vector<Fragment> fragments;
  splitter_->Split(text, parse_special, &fragments);

  if (vocab_->kind() == Kind::kBpe) {
    std::string canonical;
    std::vector<WordSpan> words;
    BpeModel::Scratch scratch;
    for (const Fragment& f : fragments) {
      if (f.token >= 0) {
        out.push_back(f.token);
        continue;
      }
      pre_->Split(text.substr(f.begin, f.end - f.begin), &canonical, &words);
      for (const auto& [b, e] : words) {
        bpe_->EncodeWord(std::string_view(canonical).substr(b, e - b), &scratch, &out);
      }
    }
    return out;
  }

  // SentencePiece: a space is prefixed to the text at the start and after each special
  // token (when the vocabulary asks for it), then spaces become "▁".
  SpmModel::Scratch scratch;
  std::string escaped;
  bool after_special = true;
  for (const Fragment& f : fragments) {
    if (f.token >= 0) {
      out.push_back(f.token);
      after_special = true;
      continue;
    }
    escaped.clear();
    if (vocab_->add_space_prefix() && after_special) escaped += kSpmSpace;
    for (char c : text.substr(f.begin, f.end - f.begin)) {
      if (c == ' ') {
        escaped += kSpmSpace;
      } else {
        escaped += c;
      }
    }
    spm_->Encode(escaped, &scratch, &out);
    after_special = false;
  }
  return out;
}

std::string Tokenizer::TokenToPiece(TokenId id, bool render_special) const {
  if (!vocab_->Valid(id)) return {};
  if (!render_special && (vocab_->Attr(id) & (kAttrUnknown | kAttrControl))) return {};
  return pieces_[id];
}

std::string Tokenizer::Decode(std::span<const TokenId> ids, bool render_special) const {
  std::string out;
  size_t i = 0;
  if (vocab_->add_space_prefix()) {
    for (; i < ids.size() && ids[i] == vocab_->bos() && ids[i] >= 0; ++i) {
      out += TokenToPiece(ids[i], render_special);
    }
    if (i < ids.size()) {
      std::string first = TokenToPiece(ids[i++], render_special);
      out.append(first, !first.empty() && first[0] == ' ' ? 1 : 0);
    }
  }
  for (; i < ids.size(); ++i) out += TokenToPiece(ids[i], render_special);
  return out;
}

Kind Tokenizer::kind() const { return vocab_->kind(); }
int32_t Tokenizer::vocab_size() const { return vocab_->size(); }
const std::string& Tokenizer::TokenText(TokenId id) const {
  CHECK(vocab_->Valid(id), "token id {} outside the vocabulary [0, {})", id, vocab_->size());
  return vocab_->Text(id);
}
TokenType Tokenizer::GetTokenType(TokenId id) const {
  CHECK(vocab_->Valid(id), "token id {} outside the vocabulary [0, {})", id, vocab_->size());
  return vocab_->Type(id);
}
TokenId Tokenizer::bos() const { return vocab_->bos(); }
TokenId Tokenizer::eos() const { return vocab_->eos(); }
TokenId Tokenizer::eot() const { return vocab_->eot(); }
bool Tokenizer::add_bos_default() const { return vocab_->add_bos(); }
bool Tokenizer::IsEndOfGeneration(TokenId id) const { return vocab_->IsEog(id); }
TokenId Tokenizer::Find(std::string_view text) const { return vocab_->Find(text); }
const std::string& Tokenizer::chat_template() const { return vocab_->chat_template(); }

}  // namespace slimkv::tokenizer
