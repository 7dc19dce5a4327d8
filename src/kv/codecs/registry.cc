// The codec families (codec_family.h). Adding one: its files in this folder, its ElemType
// values in format.h, and one entry here and one in registry-inl.h.
#include <array>
#include <cstring>

#include "base/check.h"
#include "base/half.h"
#include "kv/codecs/codec_family.h"
#include "kv/codecs/float_codec.h"
#include "kv/codecs/int_codec.h"
#include "kv/codecs/turbo_codec.h"

namespace slimkv::kv {
namespace {
constexpr std::array<const CodecFamily*, 3> kFamilies = {&kFloatFamily, &kIntFamily, &kTurboFamily};
}  // namespace

std::span<const CodecFamily* const> CodecFamilies() { return kFamilies; }

const CodecFamily& FamilyOf(ElemType type) {
  for (const CodecFamily* f : kFamilies)
    if (f->owns(type)) return *f;
  CHECK(false, "element type {} has no codec family", static_cast<int>(type));
  return *kFamilies[0];
}

float GetHalf(const uint8_t* p, size_t i) {
  uint16_t h;
  std::memcpy(&h, p + 2 * i, 2);
  return HalfToFloat(h);
}
void PutHalf(uint8_t* p, size_t i, float x) {
  const uint16_t h = FloatToHalf(x);
  std::memcpy(p + 2 * i, &h, 2);
}

}  // namespace slimkv::kv
