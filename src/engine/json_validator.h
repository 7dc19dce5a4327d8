// An incremental JSON validator: a byte-level pushdown automaton for RFC 8259 text whose
// top-level value is an object (what OpenAI's response_format {"type": "json_object"} asks
// for). It accepts exactly the byte strings that are prefixes of such a text, so a
// constrained decoder that only feeds accepted bytes can always finish the object.
//
// Grammar: objects, arrays, strings (escapes \" \\ \/ \b \f \n \r \t and \uXXXX, UTF-8
// checked byte by byte: no overlong forms, surrogates or code points above U+10FFFF; a
// \uD800-\uDBFF escape must be followed by a \uDC00-\uDFFF one, as strict parsers such as
// nlohmann::json require), numbers (-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?), true,
// false, null, and whitespace (space, \t, \n, \r). Two bounds beyond the RFC keep a model from
// looping: at most kMaxWhitespaceRun consecutive whitespace bytes outside strings, and
// containers nested at most kMaxDepth deep. Neither creates a dead end: a prefix the
// validator accepts can always be completed.
//
// The state is a few bytes, trivially copyable: testing a token is copying the validator and
// pushing the token's bytes into the copy.
#pragma once

#include <cstdint>
#include <string_view>

namespace slimkv::engine {

class JsonValidator {
 public:
  static constexpr int kMaxDepth = 64;          // containers open at once, at most
  static constexpr int kMaxWhitespaceRun = 20;  // consecutive whitespace bytes outside strings

  // Feeds `bytes`. False when some byte would make the text no prefix of a JSON object; the
  // validator is then left as it was (all or nothing).
  bool Push(std::string_view bytes);
  // Feeds one byte. On false the validator is left in an unspecified state: call it on a copy.
  bool PushByte(uint8_t b);
  // Whether Push(bytes) would succeed; changes nothing.
  bool Accepts(std::string_view bytes) const {
    JsonValidator copy = *this;
    return copy.PushAll(bytes);
  }
  // The top-level object is closed (only whitespace may follow).
  bool Complete() const { return mode_ == Mode::kDone; }
  // Containers open now.
  int depth() const { return depth_; }

 private:
  enum class Mode : uint8_t {
    kStart,         // before the top-level '{'
    kObjectFirst,   // after '{': a key or '}'
    kKey,           // after ',' in an object: a key
    kColon,         // after a key
    kValue,         // after ':' or ',' in an array: a value
    kArrayFirst,    // after '[': a value or ']'
    kAfterValue,    // after a value in a container: ',' or the closing bracket
    kString,        // inside a string
    kEscape,        // after '\' in a string
    kHex,           // in the 4 hex digits of \u (hex_left_ of them to go)
    kLowBackslash,  // after a high-surrogate escape: the '\' of its low half
    kLowU,          // the 'u' of the low half
    kUtf8,          // in a multi-byte UTF-8 character (utf8_left_ continuation bytes to go)
    kLiteral,       // in true / false / null
    kNumMinus,      // after '-'
    kNumZero,       // after a leading 0
    kNumInt,        // in the integer digits (not starting with 0)
    kNumDot,        // after '.'
    kNumFrac,       // in the fraction digits
    kNumExp,        // after 'e' / 'E'
    kNumExpSign,    // after the exponent's sign
    kNumExpDigits,  // in the exponent digits
    kDone,          // the top-level object is closed
  };

  bool PushAll(std::string_view bytes);
  bool OpenContainer(bool object);
  bool CloseContainer(bool object);
  void EndValue();  // a value ended: kAfterValue, or kDone at the top level
  bool StartValue(uint8_t b);
  bool Whitespace();  // counts a whitespace byte; false past kMaxWhitespaceRun
  bool InObject() const { return (stack_ >> (depth_ - 1)) & 1; }

  uint64_t stack_ = 0;  // bit d-1: the container at depth d is an object (1) or an array (0)
  uint8_t depth_ = 0;   // containers open, <= kMaxDepth
  Mode mode_ = Mode::kStart;
  uint8_t ws_run_ = 0;                       // consecutive whitespace bytes so far
  bool in_key_ = false;                      // the string being read is an object key
  bool low_surrogate_ = false;               // the \u escape being read must be a low surrogate
  uint8_t hex_left_ = 0;                     // kHex: digits to go (4..1)
  uint16_t hex_value_ = 0;                   // kHex: the digits read so far
  uint8_t utf8_left_ = 0;                    // kUtf8: continuation bytes to go
  uint8_t utf8_lo_ = 0x80, utf8_hi_ = 0xBF;  // kUtf8: range of the next byte
  uint8_t literal_ = 0;                      // kLiteral: 0 true, 1 false, 2 null
  uint8_t literal_pos_ = 0;                  // kLiteral: bytes of it read
};

}  // namespace slimkv::engine
