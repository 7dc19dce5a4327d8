// The attention driver (included once per Highway target by attention.cc): one task's
// online softmax over the blocks of its key range, in chunks of consecutive blocks of one
// kind. Per chunk the kind's key kernel scores every token, the driver masks the scores,
// updates each row's running maximum and sum and turns scores into weights, and the kind's
// value kernel accumulates the weighted values. The kernels of each kind are chosen once per
// task (codecs/registry-inl.h); the softmax runs in base 2 (log2(e) is folded into the query
// scale), one maximum per row and chunk.
#if defined(SLIMKV_KV_ATTENTION_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef SLIMKV_KV_ATTENTION_INL_H_
#undef SLIMKV_KV_ATTENTION_INL_H_
#else
#define SLIMKV_KV_ATTENTION_INL_H_
#endif

#include <algorithm>
#include <cmath>
#include <limits>

#include "hwy/highway.h"
#include "kv/attention.h"
#include "kv/attention_scratch.h"
#include "kv/codecs/registry-inl.h"

HWY_BEFORE_NAMESPACE();
namespace slimkv::kv::HWY_NAMESPACE {

inline constexpr float kLog2e = 1.4426950408889634f;
inline constexpr float kLn2 = 0.6931471805599453f;

// 2^x for x <= 0 (scores minus their running maximum); -inf gives exactly 0. A degree-5
// minimax polynomial on [-1/2, 1/2] (relative error 7.5e-8, 2.4e-7 evaluated in fp32).
HWY_INLINE VF Exp2(DF d, VF x) {
#if HWY_TARGET <= HWY_AVX3
  // vscalefps multiplies by 2^n in one instruction; p * 2^-160 underflows to exactly 0.
  x = hn::Max(x, hn::Set(d, -160.0f));
#else
  x = hn::Max(x, hn::Set(d, -127.0f));  // 2^-127 has a zero exponent field: exactly 0
#endif
  const VF n = hn::Round(x);
  const VF f = hn::Sub(x, n);
  VF p = hn::Set(d, 1.327647199e-03f);
  p = hn::MulAdd(p, f, hn::Set(d, 9.675541334e-03f));
  p = hn::MulAdd(p, f, hn::Set(d, 5.550713273e-02f));
  p = hn::MulAdd(p, f, hn::Set(d, 2.402211972e-01f));
  p = hn::MulAdd(p, f, hn::Set(d, 6.931469671e-01f));
  p = hn::MulAdd(p, f, hn::Set(d, 1.000000072e+00f));
#if HWY_TARGET <= HWY_AVX3
  return VF{_mm512_scalef_ps(p.raw, n.raw)};
#else
  const auto e = hn::ShiftLeft<23>(hn::Add(hn::ConvertTo(DI(), n), hn::Set(DI(), 127)));
  return hn::Mul(p, hn::BitCast(d, e));
#endif
}

// A chunk holds as many blocks of its kind as fit in kChunkBytes (at least one) when its
// blocks take at most kSmallBlockBytes, else kChunkTokens tokens. Blocks are scattered in
// the pool and the hardware prefetchers stop at page boundaries, so the driver prefetches
// the next chunk's blocks into L1 before it scores this one, and for chunks of up to
// kL2StepBytes the chunk after next into L2. With chunks of 256 tokens of small blocks
// (13-64 KB on SmolLM2's 64-wide heads) each prefetch came as a burst the arithmetic waited
// behind; a block or two at a time, the fetch overlaps it: cold, SmolLM2's quantized
// formats 14-27 % faster, fp16 9-11 %, Gemma-3's tq3 and tq4 2-19 %. Gemma-3's int8 and
// int4 blocks (16 KB) measured 0-13 % slower in one-block chunks, so large blocks keep long
// chunks (docs/BENCHMARKS.md, "Smaller chunks, prefetched two ahead").
inline constexpr size_t kChunkBytes = 4 << 10;
inline constexpr size_t kSmallBlockBytes = 12 << 10;
inline constexpr size_t kL2StepBytes = 48 << 10;
// Every line of n blocks; kLocality 3 fills L1 (prefetcht0 on x86), 2 stops at L2 (prefetcht1).
template <int kLocality>
HWY_INLINE void PrefetchBlocks(const uint8_t* const* blocks, int n, size_t bytes) {
  for (int i = 0; i < n; ++i)
    for (size_t o = 0; o < bytes; o += 64) __builtin_prefetch(blocks[i] + o, 0, kLocality);
}

// The kernels of one kind of block (sealed or staged) in a task.
struct KindKernels {
  KeyKernel key;
  ValueKernel value;
  KernelArgs args;
  size_t block_bytes = 0;
  int chunk_blocks = 1;  // blocks per chunk
};

SLIMKV_KV_ATTR inline void AttnTaskImpl(const AttnTask& t, AttnPartial out, BlockScratch& s) {
  const DF d;
  const DI di;
  const int N = static_cast<int>(hn::Lanes(d));
  const int G = t.group;
  const int rows = t.n_q_tokens * G;
  const int bt = t.block_tokens;
  const int hd = t.head_dim;
  const float kNegInf = -std::numeric_limits<float>::infinity();
  constexpr int lds = kChunkTokens;
  float* scores = s.scores;
  // Queries once: contiguous rows, softmax scale and log2(e) folded in, rotated with the keys.
  const VF qscale = hn::Set(d, t.scale * kLog2e);
  for (int i = 0; i < t.n_q_tokens; ++i) {
    for (int h = 0; h < G; ++h) {
      const int r = i * G + h;
      const float* src = t.q + i * t.ldq + h * hd;
      for (int j = 0; j < hd; j += N) hn::Store(hn::Mul(hn::LoadU(d, src + j), qscale), d, s.qp + r * hd + j);
      if (t.k_rotation) t.k_rotation->Apply(s.qp + r * hd);
    }
  }
  const int first_block = t.key_begin / bt, last_block = t.key_end > t.key_begin ? (t.key_end - 1) / bt : -1;
  // The kernels of each kind of block the range holds: [0] sealed, [1] staged.
  KindKernels kinds[2];
  for (int k = 0; k < 2; ++k) {
    const bool used = k == 0 ? first_block < t.n_sealed : last_block >= t.n_sealed;
    if (!used || last_block < first_block) continue;
    const BlockKind& kind = k == 0 ? *t.sealed : *t.staged;
    KindKernels& kk = kinds[k];
    SelectKernels(kind, bt, hd, t.rope != nullptr, &kk.key, &kk.value);
    kk.args = KernelArgs{.kind = &kind,
                         .bt = bt,
                         .hd = hd,
                         .rows = rows,
                         .q = s.qp,
                         .key_state = s.key_state[k],
                         .call = s.call,
                         .rope = t.rope,
                         .decode_tile = kk.key.decode_tile};
    kk.block_bytes = kind.v_offset + kind.v_layout.total();
    const int long_chunk = std::max(1, kChunkTokens / bt);
    kk.chunk_blocks = kk.block_bytes <= kSmallBlockBytes
                          ? std::clamp(static_cast<int>(kChunkBytes / kk.block_bytes), 1, long_chunk)
                          : long_chunk;
    if (kk.key.prepare) kk.key.prepare(kk.args);
  }
  if (t.scores_out) {
    std::fill(t.scores_out,
              t.scores_out +
                  static_cast<int64_t>(t.n_q_tokens - t.mass_first_token) * G * (t.key_end - t.key_begin),
              kNegInf);
  }
  float m[kMaxRows];  // running maximum of each row, base 2
  for (int r = 0; r < rows; ++r) {
    m[r] = kNegInf;
    hn::Store(hn::Zero(d), d, s.lsum + r * 16);
    std::fill(out.acc + r * hd, out.acc + (r + 1) * hd, 0.0f);
  }
  // Visible key range of query token i: [lo(i), hi(i)).
  auto lo_of = [&](int i) {
    const int sl = t.first_q_slot + i;
    return std::max(t.key_begin, t.window > 0 ? sl - t.window + 1 : 0);
  };
  auto hi_of = [&](int i) { return std::min(t.key_end, t.first_q_slot + i + 1); };
  auto kind_of = [&](int b) -> const KindKernels& { return kinds[b < t.n_sealed ? 0 : 1]; };
  // The chunk starting at block b ends at the next kind boundary, the range end, or the chunk
  // size; past the range, at b.
  auto chunk_end = [&](int b) {
    if (b > last_block) return b;
    const int kind_end = b < t.n_sealed ? t.n_sealed : last_block + 1;
    return std::min({kind_end, last_block + 1, b + kind_of(b).chunk_blocks});
  };
  // Chunks [b, end) scored now, [end, next) prefetched into L1, [next, after) into L2; each
  // boundary is found once and carried on.
  int end = chunk_end(first_block), next = chunk_end(end), after = 0;
  for (int b = first_block; b <= last_block; b = end, end = next, next = after) {
    after = chunk_end(next);
    const KindKernels& kk = kind_of(b);
    const int b0 = b * bt;
    // Tokens are sorted by slot, so the union of the rows' visible ranges in this chunk is
    // [lo(0), hi(last)) clipped to it.
    const int tok_lo = std::max(lo_of(0), b0) - b0;
    const int n_valid = std::min(hi_of(t.n_q_tokens - 1), end * bt) - b0;
    if (end < next) PrefetchBlocks<3>(t.blocks + end, next - end, kind_of(end).block_bytes);
    if (next < after && static_cast<size_t>(after - next) * kind_of(next).block_bytes <= kL2StepBytes)
      PrefetchBlocks<2>(t.blocks + next, after - next, kind_of(next).block_bytes);
    if (n_valid <= tok_lo) continue;
    const ChunkView c{.blocks = t.blocks + b,
                      .n_blocks = end - b,
                      .n_valid = n_valid,
                      .n_tok = (n_valid + 15) / 16 * 16,
                      .first_slot = b0};
    kk.key.score(kk.args, c, scores, lds);
    // Mask, then update the running softmax of each row; scores become weights.
    for (int i = 0; i < t.n_q_tokens; ++i) {
      const int lo = std::max(lo_of(i), b0) - b0, hi = std::min(hi_of(i), b0 + n_valid) - b0;
      const bool masked = lo > 0 || hi < c.n_tok;
      for (int h = 0; h < G; ++h) {
        const int r = i * G + h;
        float* sr = scores + r * lds;
        if (hi <= lo) {
          for (int x = 0; x < c.n_tok; x += N) hn::StoreU(hn::Zero(d), d, sr + x);
          s.pmax[r] = 0.0f;
          continue;
        }
        VF vmax = hn::Set(d, kNegInf);
        if (masked) {
          for (int x = 0; x < c.n_tok; x += N) {
            const auto idx = hn::Iota(di, x);
            const auto keep =
                hn::RebindMask(d, hn::And(hn::Gt(idx, hn::Set(di, lo - 1)), hn::Lt(idx, hn::Set(di, hi))));
            const VF v = hn::IfThenElse(keep, hn::LoadU(d, sr + x), hn::Set(d, kNegInf));
            hn::StoreU(v, d, sr + x);
            vmax = hn::Max(vmax, v);
          }
        } else {
          for (int x = 0; x < c.n_tok; x += N) vmax = hn::Max(vmax, hn::LoadU(d, sr + x));
        }
        const float cmax = ReduceMax(d, vmax);
        if (t.scores_out && i >= t.mass_first_token) {
          // The masked scores, for the eviction policies' attention mass (natural-log units).
          const int range = t.key_end - t.key_begin;
          float* so = t.scores_out + static_cast<int64_t>((i - t.mass_first_token) * G + h) * range +
                      (b0 - t.key_begin);
          for (int x = std::max(0, t.key_begin - b0); x < std::min(c.n_blocks * bt, t.key_end - b0); ++x)
            so[x] = x < c.n_tok ? sr[x] * kLn2 : kNegInf;
        }
        if (cmax > m[r]) {
          if (m[r] != kNegInf) {  // rescale what was accumulated under the old maximum
            const VF corr = Exp2(d, hn::Set(d, m[r] - cmax));
            hn::Store(hn::Mul(hn::Load(d, s.lsum + r * 16), corr), d, s.lsum + r * 16);
            float* a = out.acc + r * hd;
            for (int j = 0; j < hd; j += N) hn::StoreU(hn::Mul(hn::LoadU(d, a + j), corr), d, a + j);
          }
          m[r] = cmax;
        }
        s.pmax[r] = hn::GetLane(Exp2(d, hn::Set(d, cmax - m[r])));
        const VF vm = hn::Set(d, m[r]);
        VF sum = hn::Load(d, s.lsum + r * 16);
        for (int x = 0; x < c.n_tok; x += N) {
          const VF p = Exp2(d, hn::Sub(hn::LoadU(d, sr + x), vm));  // masked: exp2(-inf) = 0
          hn::StoreU(p, d, sr + x);
          sum = hn::Add(sum, p);
        }
        hn::Store(sum, d, s.lsum + r * 16);
      }
    }
    kk.value.accumulate(kk.args, c, scores, lds, s.pmax, out.acc);
  }
  for (int r = 0; r < rows; ++r) {
    out.m[r] = m[r] == kNegInf ? kNegInf : m[r] * kLn2;
    out.l[r] = ReduceSum(d, hn::Load(d, s.lsum + r * 16));
  }
}

}  // namespace slimkv::kv::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // per-target include guard
