// The kernels of every codec family (codecs/<family>-inl.h), chosen once per task and kind
// of block. Adding a family: include its -inl.h here and ask its Select below (the scalar
// side is registered in registry.cc). Included once per Highway target by attention.cc.
#if defined(SLIMKV_KV_CODECS_REGISTRY_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef SLIMKV_KV_CODECS_REGISTRY_INL_H_
#undef SLIMKV_KV_CODECS_REGISTRY_INL_H_
#else
#define SLIMKV_KV_CODECS_REGISTRY_INL_H_
#endif

#include "base/check.h"
#include "kv/codecs/float-inl.h"
#include "kv/codecs/int-inl.h"
#include "kv/codecs/kernels-inl.h"
#include "kv/codecs/turbo-inl.h"

HWY_BEFORE_NAMESPACE();
namespace slimkv::kv::HWY_NAMESPACE {

// Keys stored before RoPE (`:pre`): each block's K part is decoded by its family into an
// fp32 tile [hd][bt], rotated there by its positions, and scored with float FMAs (RoPE mixes
// channel pairs, which a per-channel code cannot fold into the query).
struct RopeCall {
  alignas(64) float tile[kMaxHd * kMaxBt];
};
inline void ScoreRopeKeys(const KernelArgs& a, const ChunkView& c, float* scores, int lds) {
  const DF d;
  const int N = static_cast<int>(hn::Lanes(d));
  const RopeTables& rope = *a.rope;
  const int bt = a.bt, half = rope.rope_dim / 2;
  float* tile = CallAs<RopeCall>(a.call).tile;
  for (int i = 0; i < c.n_blocks; ++i) {
    const int n = BlockShare(i, bt, c.n_tok);
    if (n == 0) break;
    a.decode_tile(a, c.blocks[i], tile);
    const int first_pos = c.first_slot + i * bt;
    for (int p = 0; p < half; ++p) {
      const int x = rope.style == ops::RopeStyle::kNormal ? 2 * p : p;
      const int y = rope.style == ops::RopeStyle::kNormal ? 2 * p + 1 : p + half;
      for (int t = 0; t < bt; t += N) {
        const VF cs = hn::LoadU(d, rope.cos + p * rope.stride + first_pos + t);
        const VF sn = hn::LoadU(d, rope.sin + p * rope.stride + first_pos + t);
        const VF x0 = hn::LoadU(d, tile + x * bt + t), x1 = hn::LoadU(d, tile + y * bt + t);
        hn::StoreU(hn::NegMulAdd(x1, sn, hn::Mul(x0, cs)), d, tile + x * bt + t);
        hn::StoreU(hn::MulAdd(x0, sn, hn::Mul(x1, cs)), d, tile + y * bt + t);
      }
    }
    ScoreChannelMajor(F32Loader(), reinterpret_cast<const uint8_t*>(tile), bt, a.hd, a.q, a.hd, a.rows, n,
                      scores + i * bt, lds);
  }
}

// The kernels of a kind of block (one format per side).
inline void SelectKernels(const BlockKind& kind, int bt, int hd, bool pre_rope, KeyKernel* k,
                          ValueKernel* v) {
  const bool key = float_codec::Select(kind.k, k, nullptr) || int_codec::Select(kind.k, bt, hd, k, nullptr) ||
                   turbo::Select(kind.k, bt, hd, k, nullptr);
  const bool value = float_codec::Select(kind.v, nullptr, v) ||
                     int_codec::Select(kind.v, bt, hd, nullptr, v) ||
                     turbo::Select(kind.v, bt, hd, nullptr, v);
  CHECK(key && value, "no attention kernels for K {} / V {}", FormatName(kind.k), FormatName(kind.v));
  if (pre_rope) {
    CHECK(k->decode_tile, "K format {} cannot be kept before RoPE", FormatName(kind.k));
    k->prepare = nullptr;
    k->score = ScoreRopeKeys;
  }
}

}  // namespace slimkv::kv::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // per-target include guard
