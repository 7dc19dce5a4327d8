// Packed codes (packing.h) as vector lanes, for the float-FMA paths of the int and tq
// families on every target (AVX3_DL's integer paths read whole units: vnni-inl.h).
// Included once per Highway target.
#if defined(SLIMKV_KV_CODECS_PACKING_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef SLIMKV_KV_CODECS_PACKING_INL_H_
#undef SLIMKV_KV_CODECS_PACKING_INL_H_
#else
#define SLIMKV_KV_CODECS_PACKING_INL_H_
#endif

#include <cstring>

#include "kv/codecs/kernels-inl.h"
#include "kv/codecs/packing.h"

HWY_BEFORE_NAMESPACE();
namespace slimkv::kv::HWY_NAMESPACE {

// N codes as u32 lanes of one array of `width` channels: K (is_key): channel c, tokens
// [t, t + N); V: token t, channels [c, c + N). The N elements are lanes of one tile
// (N <= 16 and t or c a multiple of N), so they are N consecutive dwords of its unit.
template <int kBits>
HWY_INLINE hn::Vec<DU> TileCodes(const uint8_t* codes, int width, bool is_key, int t, int c) {
  const DU du;
  constexpr int kS = SlicesPerUnit(kBits), kUnit = UnitBytes(kBits);
  const int tile = is_key ? (t / 16) * (width / 4) + c / 4 : (t / 4) * (width / 16) + c / 16;
  const int lane0 = is_key ? t % 16 : c % 16, depth = is_key ? c % 4 : t % 4, slice = tile % kS;
  const uint8_t* unit = codes + static_cast<size_t>(tile / kS) * kUnit;
  const auto words = hn::LoadU(du, reinterpret_cast<const uint32_t*>(unit) + lane0);
  auto v = hn::And(hn::ShiftRightSame(words, 8 * depth + SliceBits(kBits) * slice),
                   hn::Set(du, (1u << SliceBits(kBits)) - 1));
  if constexpr (kBits == 3) {  // the high bit: bit 4 lane + depth of the slice's 64-bit plane
    uint32_t plane[2];
    std::memcpy(plane, unit + 64 + 8 * slice, 8);
    const auto lane = hn::Iota(du, lane0);
    const auto word =
        hn::IfThenElse(hn::Lt(lane, hn::Set(du, 8u)), hn::Set(du, plane[0]), hn::Set(du, plane[1]));
    const auto shift =
        hn::Add(hn::ShiftLeft<2>(hn::And(lane, hn::Set(du, 7u))), hn::Set(du, static_cast<uint32_t>(depth)));
    v = hn::Or(v, hn::ShiftLeft<2>(hn::And(hn::Shr(word, shift), hn::Set(du, 1u))));
  }
  return v;
}

}  // namespace slimkv::kv::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // per-target include guard
