// UTF-8 helpers shared by the tokenizers: the lenient decoding llama.cpp applies before
// byte-level BPE, the lead-byte length rule SentencePiece symbols are cut by, and GPT-2's
// byte <-> printable-character table.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace slimkv::tokenizer {

inline constexpr uint32_t kReplacementChar = 0xFFFD;

// Bytes of the character a lead byte starts, from its high four bits alone: 1 for ASCII and
// for stray continuation bytes (0x80..0xBF), 2 for 0xC0..0xDF, 3 for 0xE0..0xEF, 4 for
// 0xF0..0xFF. The following bytes are not looked at (llama.cpp's unicode_len_utf8).
inline size_t Utf8LenFromLeadByte(uint8_t lead) {
  constexpr uint8_t kLen[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
  return kLen[lead >> 4];
}

// Appends the UTF-8 form of `cpt` (<= 0x10FFFF). Surrogates (U+D800..U+DFFF) are encoded
// like any other BMP code point (3 bytes), which is what the lenient decoder below needs to
// give back the bytes it read.
void AppendUtf8(uint32_t cpt, std::string* out);

// Decodes `text` the way llama.cpp's unicode_cpts_from_utf8 does before byte-level BPE:
//  - a well-formed 1..4 byte sequence gives its code point; the decoder only checks the
//    lead byte's class and that enough continuation bytes (10xxxxxx) follow, so overlong
//    forms (C0 80 -> U+0000) and surrogates (ED A0 80 -> U+D800) are accepted;
//  - anything else (a stray continuation byte, a lead byte without its continuation bytes,
//    F8..FF) gives U+FFFD for that one byte and decoding resumes at the next byte, so a
//    truncated 3-byte sequence becomes three U+FFFD;
//  - a 4-byte form above U+10FFFF (F4 90.., F5..F7 leads) is where llama.cpp throws and the
//    caller aborts; here it is treated like the invalid case above (U+FFFD per byte).
void DecodeUtf8Lenient(std::string_view text, std::vector<uint32_t>* cpts);

// Decodes one well-formed, minimal-length UTF-8 character at `pos` (no surrogates, nothing
// above U+10FFFF). Returns its length in bytes, or 0 if the bytes there are not one.
size_t DecodeUtf8Strict(std::string_view text, size_t pos, uint32_t* cpt);

// GPT-2's byte-level alphabet: every byte is shown as a printable character (bytes
// 0x21..0x7E, 0xA1..0xAC and 0xAE..0xFF as themselves, the other 68 as U+0100 onwards, in
// byte order). ByteLevelChar(b) is that character in UTF-8.
const std::string& ByteLevelChar(uint8_t b);
// The byte a byte-level character stands for, or -1 if `cpt` is not one.
int ByteLevelByte(uint32_t cpt);

}  // namespace slimkv::tokenizer
