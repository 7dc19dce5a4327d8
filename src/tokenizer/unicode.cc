#include "tokenizer/unicode.h"

#include "base/check.h"

namespace slimkv::tokenizer {

void AppendUtf8(uint32_t cpt, std::string* out) {
  DCHECK(cpt <= 0x10FFFF);
  if (cpt <= 0x7F) {
    out->push_back(static_cast<char>(cpt));
  } else if (cpt <= 0x7FF) {
    out->push_back(static_cast<char>(0xC0 | (cpt >> 6)));
    out->push_back(static_cast<char>(0x80 | (cpt & 0x3F)));
  } else if (cpt <= 0xFFFF) {
    out->push_back(static_cast<char>(0xE0 | (cpt >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cpt >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cpt & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cpt >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cpt >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cpt >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cpt & 0x3F)));
  }
}

namespace {

bool IsContinuation(uint8_t b) { return (b & 0xC0) == 0x80; }

// One step of the lenient decoder: the code point at `pos` and its length, or length 0
// when the bytes there do not form a sequence the decoder accepts.
size_t DecodeLenientAt(std::string_view text, size_t pos, uint32_t* cpt) {
  const auto* s = reinterpret_cast<const uint8_t*>(text.data());
  const size_t n = text.size();
  const uint8_t b0 = s[pos];
  if (b0 < 0x80) {
    *cpt = b0;
    return 1;
  }
  if ((b0 & 0x40) == 0) return 0;  // stray continuation byte
  if ((b0 & 0x20) == 0) {
    if (pos + 1 >= n || !IsContinuation(s[pos + 1])) return 0;
    *cpt = ((b0 & 0x1Fu) << 6) | (s[pos + 1] & 0x3Fu);
    return 2;
  }
  if ((b0 & 0x10) == 0) {
    if (pos + 2 >= n || !IsContinuation(s[pos + 1]) || !IsContinuation(s[pos + 2])) return 0;
    *cpt = ((b0 & 0x0Fu) << 12) | ((s[pos + 1] & 0x3Fu) << 6) | (s[pos + 2] & 0x3Fu);
    return 3;
  }
  if ((b0 & 0x08) == 0) {
    if (pos + 3 >= n || !IsContinuation(s[pos + 1]) || !IsContinuation(s[pos + 2]) ||
        !IsContinuation(s[pos + 3])) {
      return 0;
    }
    *cpt = ((b0 & 0x07u) << 18) | ((s[pos + 1] & 0x3Fu) << 12) | ((s[pos + 2] & 0x3Fu) << 6) |
           (s[pos + 3] & 0x3Fu);
    // llama.cpp aborts on these (it cannot re-encode them); slimkv treats them as invalid.
    return *cpt <= 0x10FFFF ? 4 : 0;
  }
  return 0;  // F8..FF
}

}  // namespace

void DecodeUtf8Lenient(std::string_view text, std::vector<uint32_t>* cpts) {
  cpts->clear();
  cpts->reserve(text.size());
  size_t pos = 0;
  while (pos < text.size()) {
    uint32_t cpt = 0;
    const size_t len = DecodeLenientAt(text, pos, &cpt);
    if (len == 0) {
      cpts->push_back(kReplacementChar);
      pos += 1;
    } else {
      cpts->push_back(cpt);
      pos += len;
    }
  }
}

size_t DecodeUtf8Strict(std::string_view text, size_t pos, uint32_t* cpt) {
  uint32_t c = 0;
  const size_t len = DecodeLenientAt(text, pos, &c);
  if (len == 0) return 0;
  constexpr uint32_t kMinForLength[5] = {0, 0, 0x80, 0x800, 0x10000};
  if (c < kMinForLength[len]) return 0;          // overlong
  if (c >= 0xD800 && c <= 0xDFFF) return 0;      // surrogate
  *cpt = c;
  return len;
}

namespace {

struct ByteLevelTable {
  std::array<std::string, 256> chars;
  std::array<int16_t, 324> bytes;  // code points 0..323 cover the whole alphabet
  ByteLevelTable() {
    bytes.fill(-1);
    auto printable = [](int b) {
      return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    };
    int next = 256;
    for (int b = 0; b < 256; ++b) {
      const uint32_t cpt = printable(b) ? b : next++;
      AppendUtf8(cpt, &chars[b]);
      bytes[cpt] = static_cast<int16_t>(b);
    }
    CHECK(next == 256 + 68);
  }
};

const ByteLevelTable& Table() {
  static const ByteLevelTable table;
  return table;
}

}  // namespace

const std::string& ByteLevelChar(uint8_t b) { return Table().chars[b]; }

int ByteLevelByte(uint32_t cpt) { return cpt < Table().bytes.size() ? Table().bytes[cpt] : -1; }

}  // namespace slimkv::tokenizer
