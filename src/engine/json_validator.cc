#include "engine/json_validator.h"

namespace slimkv::engine {
namespace {

constexpr std::string_view kLiterals[] = {"true", "false", "null"};

bool IsWhitespace(uint8_t b) { return b == ' ' || b == '\t' || b == '\n' || b == '\r'; }
bool IsDigit(uint8_t b) { return b >= '0' && b <= '9'; }
int HexValue(uint8_t b) {
  if (b >= '0' && b <= '9') return b - '0';
  if (b >= 'a' && b <= 'f') return b - 'a' + 10;
  if (b >= 'A' && b <= 'F') return b - 'A' + 10;
  return -1;
}

}  // namespace

bool JsonValidator::Push(std::string_view bytes) {
  JsonValidator next = *this;
  if (!next.PushAll(bytes)) return false;
  *this = next;
  return true;
}

bool JsonValidator::PushAll(std::string_view bytes) {
  for (char c : bytes) {
    if (!PushByte(static_cast<uint8_t>(c))) return false;
  }
  return true;
}

bool JsonValidator::Whitespace() {
  if (ws_run_ >= kMaxWhitespaceRun) return false;
  ++ws_run_;
  return true;
}

bool JsonValidator::OpenContainer(bool object) {
  if (depth_ >= kMaxDepth) return false;
  const uint64_t bit = uint64_t{1} << depth_;
  stack_ = object ? (stack_ | bit) : (stack_ & ~bit);
  ++depth_;
  mode_ = object ? Mode::kObjectFirst : Mode::kArrayFirst;
  return true;
}

bool JsonValidator::CloseContainer(bool object) {
  if (depth_ == 0 || InObject() != object) return false;
  --depth_;
  EndValue();
  return true;
}

void JsonValidator::EndValue() { mode_ = depth_ == 0 ? Mode::kDone : Mode::kAfterValue; }

// The first byte of a value (not whitespace).
bool JsonValidator::StartValue(uint8_t b) {
  switch (b) {
    case '{':
      return OpenContainer(true);
    case '[':
      return OpenContainer(false);
    case '"':
      mode_ = Mode::kString;
      in_key_ = false;
      return true;
    case '-':
      mode_ = Mode::kNumMinus;
      return true;
    case '0':
      mode_ = Mode::kNumZero;
      return true;
    case 't':
    case 'f':
    case 'n':
      mode_ = Mode::kLiteral;
      literal_ = b == 't' ? 0 : b == 'f' ? 1 : 2;
      literal_pos_ = 1;
      return true;
    default:
      if (b >= '1' && b <= '9') {
        mode_ = Mode::kNumInt;
        return true;
      }
      return false;
  }
}

bool JsonValidator::PushByte(uint8_t b) {
  const bool ws = IsWhitespace(b);
  // Whitespace runs are counted between tokens of the grammar, never inside strings.
  const bool in_string = mode_ == Mode::kString || mode_ == Mode::kEscape || mode_ == Mode::kHex ||
                         mode_ == Mode::kLowBackslash || mode_ == Mode::kLowU || mode_ == Mode::kUtf8;
  if (!ws && !in_string) ws_run_ = 0;
  switch (mode_) {
    case Mode::kStart:
      if (ws) return Whitespace();
      return b == '{' && OpenContainer(true);
    case Mode::kObjectFirst:
    case Mode::kKey:
      if (ws) return Whitespace();
      if (b == '}' && mode_ == Mode::kObjectFirst) return CloseContainer(true);
      if (b != '"') return false;
      mode_ = Mode::kString;
      in_key_ = true;
      return true;
    case Mode::kColon:
      if (ws) return Whitespace();
      if (b != ':') return false;
      mode_ = Mode::kValue;
      return true;
    case Mode::kArrayFirst:
      if (b == ']') return CloseContainer(false);
      [[fallthrough]];
    case Mode::kValue:
      if (ws) return Whitespace();
      return StartValue(b);
    case Mode::kAfterValue:
      if (ws) return Whitespace();
      if (b == ',') {
        mode_ = InObject() ? Mode::kKey : Mode::kValue;
        return true;
      }
      if (b == '}') return CloseContainer(true);
      if (b == ']') return CloseContainer(false);
      return false;
    case Mode::kString:
      if (b == '"') {
        if (in_key_) {
          mode_ = Mode::kColon;
        } else {
          EndValue();
        }
        return true;
      }
      if (b == '\\') {
        mode_ = Mode::kEscape;
        return true;
      }
      if (b < 0x20) return false;  // control characters must be escaped
      if (b < 0x80) return true;
      // The lead byte of a multi-byte UTF-8 character and the range of its next byte.
      utf8_lo_ = 0x80;
      utf8_hi_ = 0xBF;
      if (b >= 0xC2 && b <= 0xDF) {
        utf8_left_ = 1;
      } else if (b >= 0xE0 && b <= 0xEF) {
        utf8_left_ = 2;
        if (b == 0xE0) utf8_lo_ = 0xA0;  // no overlong forms
        if (b == 0xED) utf8_hi_ = 0x9F;  // no surrogates
      } else if (b >= 0xF0 && b <= 0xF4) {
        utf8_left_ = 3;
        if (b == 0xF0) utf8_lo_ = 0x90;  // no overlong forms
        if (b == 0xF4) utf8_hi_ = 0x8F;  // nothing above U+10FFFF
      } else {
        return false;
      }
      mode_ = Mode::kUtf8;
      return true;
    case Mode::kUtf8:
      if (b < utf8_lo_ || b > utf8_hi_) return false;
      utf8_lo_ = 0x80;
      utf8_hi_ = 0xBF;
      if (--utf8_left_ == 0) mode_ = Mode::kString;
      return true;
    case Mode::kEscape:
      switch (b) {
        case '"':
        case '\\':
        case '/':
        case 'b':
        case 'f':
        case 'n':
        case 'r':
        case 't':
          mode_ = Mode::kString;
          return true;
        case 'u':
          mode_ = Mode::kHex;
          hex_left_ = 4;
          hex_value_ = 0;
          return true;
        default:
          return false;
      }
    case Mode::kLowBackslash:
      if (b != '\\') return false;
      mode_ = Mode::kLowU;
      return true;
    case Mode::kLowU:
      if (b != 'u') return false;
      mode_ = Mode::kHex;
      hex_left_ = 4;
      hex_value_ = 0;
      return true;
    case Mode::kHex: {
      const int h = HexValue(b);
      if (h < 0) return false;
      hex_value_ = static_cast<uint16_t>(hex_value_ << 4 | h);
      --hex_left_;
      // Surrogates are decided by the first two digits: D8-DB high, DC-DF low.
      if (hex_left_ == 3 && low_surrogate_ && h != 0xD) return false;
      if (hex_left_ == 2 && hex_value_ >= 0xD8 && hex_value_ <= 0xDF) {
        const bool low = hex_value_ >= 0xDC;
        if (low != low_surrogate_) return false;  // a lone low half, or a high half after a high half
      } else if (hex_left_ == 2 && low_surrogate_) {
        return false;
      }
      if (hex_left_ > 0) return true;
      if (hex_value_ >= 0xD800 && hex_value_ <= 0xDBFF) {
        low_surrogate_ = true;
        mode_ = Mode::kLowBackslash;
      } else {
        low_surrogate_ = false;
        mode_ = Mode::kString;
      }
      return true;
    }
    case Mode::kLiteral: {
      const std::string_view lit = kLiterals[literal_];
      if (b != static_cast<uint8_t>(lit[literal_pos_])) return false;
      if (++literal_pos_ == lit.size()) EndValue();
      return true;
    }
    case Mode::kNumMinus:
      if (b == '0') {
        mode_ = Mode::kNumZero;
        return true;
      }
      if (b >= '1' && b <= '9') {
        mode_ = Mode::kNumInt;
        return true;
      }
      return false;
    case Mode::kNumDot:
      if (!IsDigit(b)) return false;
      mode_ = Mode::kNumFrac;
      return true;
    case Mode::kNumExp:
      if (b == '+' || b == '-') {
        mode_ = Mode::kNumExpSign;
        return true;
      }
      [[fallthrough]];
    case Mode::kNumExpSign:
      if (!IsDigit(b)) return false;
      mode_ = Mode::kNumExpDigits;
      return true;
    case Mode::kNumZero:
    case Mode::kNumInt:
    case Mode::kNumFrac:
    case Mode::kNumExpDigits:
      if (IsDigit(b) && mode_ != Mode::kNumZero) return true;
      if (b == '.' && (mode_ == Mode::kNumZero || mode_ == Mode::kNumInt)) {
        mode_ = Mode::kNumDot;
        return true;
      }
      if ((b == 'e' || b == 'E') && mode_ != Mode::kNumExpDigits) {
        mode_ = Mode::kNumExp;
        return true;
      }
      // The number ended; the byte belongs to what follows it.
      EndValue();
      return PushByte(b);
    case Mode::kDone:
      return ws && Whitespace();
  }
  return false;
}

}  // namespace slimkv::engine
