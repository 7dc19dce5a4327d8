// StreamDecoder and UTF-8 validation.
#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode.h"

namespace slimkv::tokenizer {

namespace {

constexpr std::string_view kReplacementUtf8 = "\xEF\xBF\xBD";

// How the bytes at `pos` start: a complete character (returns its length, *complete set),
// a valid but unfinished prefix that reaches the end of `s` (returns its length, *complete
// clear), or an invalid sequence (returns 0; `*invalid_len` is the length of its maximal
// valid prefix, at least 1), following Unicode's "maximal subpart" rule.
size_t Classify(std::string_view s, size_t pos, bool* complete, size_t* invalid_len) {
  const auto b0 = static_cast<uint8_t>(s[pos]);
  *complete = false;
  *invalid_len = 1;
  if (b0 < 0x80) {
    *complete = true;
    return 1;
  }
  size_t need;
  uint8_t lo = 0x80, hi = 0xBF;  // range of the second byte
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    need = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    need = 3;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    need = 4;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  size_t k = 1;
  for (; k < need && pos + k < s.size(); ++k) {
    const auto b = static_cast<uint8_t>(s[pos + k]);
    const bool ok = k == 1 ? (b >= lo && b <= hi) : (b & 0xC0) == 0x80;
    if (!ok) {
      *invalid_len = k;
      return 0;
    }
  }
  *complete = k == need;
  return k;
}

// Emits the valid part of `pending`, replacing invalid sequences; keeps an unfinished
// character at the end unless `flush`.
std::string Drain(std::string* pending, bool flush) {
  std::string out;
  size_t pos = 0;
  while (pos < pending->size()) {
    bool complete = false;
    size_t invalid_len = 1;
    const size_t len = Classify(*pending, pos, &complete, &invalid_len);
    if (len > 0 && complete) {
      out.append(*pending, pos, len);
      pos += len;
    } else if (len > 0 && !flush) {
      break;  // unfinished: wait for the next token
    } else {
      out += kReplacementUtf8;
      pos += len > 0 ? len : invalid_len;
    }
  }
  pending->erase(0, pos);
  return out;
}

}  // namespace

std::string StreamDecoder::Push(TokenId id) {
  pending_ += tok_.TokenToPiece(id, render_special_);
  return Drain(&pending_, /*flush=*/false);
}

std::string StreamDecoder::Flush() { return Drain(&pending_, /*flush=*/true); }

bool IsValidUtf8(std::string_view text, size_t* bad_offset) {
  for (size_t pos = 0; pos < text.size();) {
    uint32_t cpt = 0;
    const size_t len = DecodeUtf8Strict(text, pos, &cpt);
    if (len == 0) {
      if (bad_offset != nullptr) *bad_offset = pos;
      return false;
    }
    pos += len;
  }
  return true;
}

}  // namespace slimkv::tokenizer
