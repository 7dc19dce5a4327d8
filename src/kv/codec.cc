#include "kv/codec.h"

#include <cstring>

#include "base/check.h"
#include "kv/codecs/codec_family.h"

namespace slimkv::kv {
namespace {

void EncodeToken(const KvFormat& f, bool is_key, int bt, int hd, int slot, const float* x, uint8_t* part) {
  CHECK(CanEncodeByToken(f), "token-by-token encoding needs a float or per-token format, not {}",
        FormatName(f));
  FamilyOf(f).encode_token(f, is_key, bt, hd, slot, x, part);
}

void EncodePart(const KvFormat& f, bool is_key, int bt, int hd, const float* x, int n, uint8_t* part) {
  const CodecFamily& fam = FamilyOf(f);
  std::memset(part, 0, fam.layout(f, bt, hd, is_key).total());
  fam.encode_part(f, is_key, bt, hd, x, n, part);
}

}  // namespace

bool CanEncodeByToken(const KvFormat& f) { return FamilyOf(f).by_token(f); }

void EncodeKToken(const KvFormat& f, int bt, int hd, int slot, const float* x, uint8_t* k_part) {
  EncodeToken(f, true, bt, hd, slot, x, k_part);
}
void EncodeVToken(const KvFormat& f, int bt, int hd, int slot, const float* x, uint8_t* v_part) {
  EncodeToken(f, false, bt, hd, slot, x, v_part);
}
void EncodeKPart(const KvFormat& f, int bt, int hd, const float* x, int n, uint8_t* k_part) {
  EncodePart(f, true, bt, hd, x, n, k_part);
}
void EncodeVPart(const KvFormat& f, int bt, int hd, const float* x, int n, uint8_t* v_part) {
  EncodePart(f, false, bt, hd, x, n, v_part);
}
void DecodeK(const KvFormat& f, int bt, int hd, int slot, const uint8_t* k_part, float* out) {
  FamilyOf(f).decode_token(f, true, bt, hd, slot, k_part, out);
}
void DecodeV(const KvFormat& f, int bt, int hd, int slot, const uint8_t* v_part, float* out) {
  FamilyOf(f).decode_token(f, false, bt, hd, slot, v_part, out);
}
float MaxAbsError(const KvFormat& f, float lo, float hi) { return FamilyOf(f).max_abs_error(f, lo, hi); }

}  // namespace slimkv::kv
