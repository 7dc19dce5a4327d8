// SIMD bodies of attention over stored blocks (included once per Highway target by
// attention.cc). The codec kernels work on the block bytes directly:
//   ScoreBlock:      scores[r][t] = q_r . k_t          (K part is channel-major)
//   AccumulateBlock: acc[r][:]   += sum_t p[r][t] v_t  (V part is token-major)
// and the driver runs the online softmax over the blocks of a key range.
#if defined(SLIMKV_KV_ATTENTION_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef SLIMKV_KV_ATTENTION_INL_H_
#undef SLIMKV_KV_ATTENTION_INL_H_
#else
#define SLIMKV_KV_ATTENTION_INL_H_
#endif

#include <algorithm>
#include <cmath>
#include <limits>

#include "hwy/contrib/math/math-inl.h"
#include "hwy/highway.h"
#include "kv/attention.h"

HWY_BEFORE_NAMESPACE();
namespace slimkv::kv::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using DF = hn::ScalableTag<float>;
using VF = hn::Vec<DF>;

// Keys are scored in chunks of this many tokens (block_tokens is a multiple of it).
inline constexpr int kChunk = 16;
// Upper bounds of a task's tile: rows (query tokens x group) and block size.
inline constexpr int kMaxTaskRows = kMaxAttnTaskRows;
inline constexpr int kMaxBlockTokens = kMaxAttnBlockTokens;
inline constexpr int kMaxHeadDim = kMaxAttnHeadDim;

template <ElemType T>
HWY_INLINE VF LoadElems(DF d, const uint8_t* part, size_t i) {
  if constexpr (T == ElemType::kF32) {
    return hn::LoadU(d, reinterpret_cast<const float*>(part) + i);
  } else {
    const hn::Rebind<hwy::float16_t, DF> dh;
    return hn::PromoteTo(d, hn::LoadU(dh, reinterpret_cast<const hwy::float16_t*>(part) + i));
  }
}

// ------------------------------------------------------------------ score
// scores[r * lds + t] for rows [0, kRows), tokens [0, n_chunks * kChunk).
template <ElemType KT, int kRows>
HWY_INLINE void ScoreRows(const uint8_t* kpart, int block_tokens, int head_dim, const float* q,
                          int64_t ldq_row, int n_chunks, float* scores, int lds) {
  const DF d;
  const size_t N = hn::Lanes(d);
  constexpr size_t kMaxVec = kChunk / hn::MaxLanes(DF());  // vectors per chunk
  const size_t nv = kMaxVec;
  (void)N;
  for (int c = 0; c < n_chunks; ++c) {
    VF acc[kRows][kMaxVec];
    for (int r = 0; r < kRows; ++r)
      for (size_t v = 0; v < nv; ++v) acc[r][v] = hn::Zero(d);
    for (int dim = 0; dim < head_dim; ++dim) {
      VF kv[kMaxVec];
      for (size_t v = 0; v < nv; ++v)
        kv[v] = LoadElems<KT>(d, kpart, static_cast<size_t>(dim) * block_tokens + c * kChunk + v * N);
      for (int r = 0; r < kRows; ++r) {
        const VF qb = hn::Set(d, q[r * ldq_row + dim]);
        for (size_t v = 0; v < nv; ++v) acc[r][v] = hn::MulAdd(qb, kv[v], acc[r][v]);
      }
    }
    for (int r = 0; r < kRows; ++r)
      for (size_t v = 0; v < nv; ++v) hn::StoreU(acc[r][v], d, scores + r * lds + c * kChunk + v * N);
  }
}

template <ElemType KT>
void ScoreBlock(const uint8_t* kpart, int block_tokens, int head_dim, const float* q,
                int64_t ldq_row, int rows, int n_chunks, float* scores, int lds) {
  constexpr int kTile = 8;
  int r = 0;
  for (; r + kTile <= rows; r += kTile)
    ScoreRows<KT, kTile>(kpart, block_tokens, head_dim, q + r * ldq_row, ldq_row, n_chunks, scores + r * lds, lds);
  const float* qr = q + r * ldq_row;
  float* sr = scores + r * lds;
  switch (rows - r) {
    case 7: ScoreRows<KT, 7>(kpart, block_tokens, head_dim, qr, ldq_row, n_chunks, sr, lds); break;
    case 6: ScoreRows<KT, 6>(kpart, block_tokens, head_dim, qr, ldq_row, n_chunks, sr, lds); break;
    case 5: ScoreRows<KT, 5>(kpart, block_tokens, head_dim, qr, ldq_row, n_chunks, sr, lds); break;
    case 4: ScoreRows<KT, 4>(kpart, block_tokens, head_dim, qr, ldq_row, n_chunks, sr, lds); break;
    case 3: ScoreRows<KT, 3>(kpart, block_tokens, head_dim, qr, ldq_row, n_chunks, sr, lds); break;
    case 2: ScoreRows<KT, 2>(kpart, block_tokens, head_dim, qr, ldq_row, n_chunks, sr, lds); break;
    case 1: ScoreRows<KT, 1>(kpart, block_tokens, head_dim, qr, ldq_row, n_chunks, sr, lds); break;
    default: break;
  }
}

// ------------------------------------------------------------------ accumulate
// acc[r][dim0 .. dim0 + kVecs*N) += sum_{t < n_tok} p[r][t] * v_t[...]
template <ElemType VT, int kRows, int kVecs>
HWY_INLINE void AccumRows(const uint8_t* vpart, int head_dim, int dim0, const float* p, int ldp,
                          int n_tok, float* acc, int64_t lda) {
  const DF d;
  const size_t N = hn::Lanes(d);
  VF a[kRows][kVecs];
  for (int r = 0; r < kRows; ++r)
    for (int j = 0; j < kVecs; ++j) a[r][j] = hn::LoadU(d, acc + r * lda + dim0 + j * N);
  for (int t = 0; t < n_tok; ++t) {
    VF vv[kVecs];
    for (int j = 0; j < kVecs; ++j) vv[j] = LoadElems<VT>(d, vpart, static_cast<size_t>(t) * head_dim + dim0 + j * N);
    for (int r = 0; r < kRows; ++r) {
      const VF pb = hn::Set(d, p[r * ldp + t]);
      for (int j = 0; j < kVecs; ++j) a[r][j] = hn::MulAdd(pb, vv[j], a[r][j]);
    }
  }
  for (int r = 0; r < kRows; ++r)
    for (int j = 0; j < kVecs; ++j) hn::StoreU(a[r][j], d, acc + r * lda + dim0 + j * N);
}

template <ElemType VT, int kRows>
HWY_INLINE void AccumRowsAllDims(const uint8_t* vpart, int head_dim, const float* p, int ldp,
                                 int n_tok, float* acc, int64_t lda) {
  const size_t N = hn::Lanes(DF());
  const int vecs = static_cast<int>(head_dim / N);
  int j = 0;
  for (; j + 4 <= vecs; j += 4) AccumRows<VT, kRows, 4>(vpart, head_dim, j * N, p, ldp, n_tok, acc, lda);
  switch (vecs - j) {
    case 3: AccumRows<VT, kRows, 3>(vpart, head_dim, j * N, p, ldp, n_tok, acc, lda); break;
    case 2: AccumRows<VT, kRows, 2>(vpart, head_dim, j * N, p, ldp, n_tok, acc, lda); break;
    case 1: AccumRows<VT, kRows, 1>(vpart, head_dim, j * N, p, ldp, n_tok, acc, lda); break;
    default: break;
  }
}

template <ElemType VT>
void AccumulateBlock(const uint8_t* vpart, int head_dim, const float* p, int ldp, int rows,
                     int n_tok, float* acc, int64_t lda) {
  int r = 0;
  for (; r + 4 <= rows; r += 4) AccumRowsAllDims<VT, 4>(vpart, head_dim, p + r * ldp, ldp, n_tok, acc + r * lda, lda);
  switch (rows - r) {
    case 3: AccumRowsAllDims<VT, 3>(vpart, head_dim, p + r * ldp, ldp, n_tok, acc + r * lda, lda); break;
    case 2: AccumRowsAllDims<VT, 2>(vpart, head_dim, p + r * ldp, ldp, n_tok, acc + r * lda, lda); break;
    case 1: AccumRowsAllDims<VT, 1>(vpart, head_dim, p + r * ldp, ldp, n_tok, acc + r * lda, lda); break;
    default: break;
  }
}

using ScoreFn = void (*)(const uint8_t*, int, int, const float*, int64_t, int, int, float*, int);
using AccumFn = void (*)(const uint8_t*, int, const float*, int, int, int, float*, int64_t);

inline ScoreFn GetScoreFn(ElemType t) {
  return t == ElemType::kF32 ? &ScoreBlock<ElemType::kF32> : &ScoreBlock<ElemType::kF16>;
}
inline AccumFn GetAccumFn(ElemType t) {
  return t == ElemType::kF32 ? &AccumulateBlock<ElemType::kF32> : &AccumulateBlock<ElemType::kF16>;
}

// ------------------------------------------------------------------ driver
// Online softmax of one task over the blocks of its key range.
inline void AttnTaskImpl(const AttnTask& t, AttnPartial out) {
  const DF d;
  const size_t N = hn::Lanes(d);
  const hn::RebindToSigned<DF> di;
  const int rows = t.n_q_tokens * t.group;
  const int bt = t.block_tokens;
  const int hd = t.head_dim;
  const ScoreFn score = GetScoreFn(t.k_type);
  const AccumFn accum = GetAccumFn(t.v_type);
  HWY_ALIGN float scores[kMaxTaskRows * kMaxBlockTokens];
  const int lds = bt;
  // Prepare the queries once: contiguous rows, softmax scale folded in.
  HWY_ALIGN float qp[kMaxTaskRows * kMaxHeadDim];
  for (int r = 0; r < rows; ++r) {
    const float* src = t.q + (r / t.group) * t.ldq + (r % t.group) * hd;
    for (int j = 0; j < hd; ++j) qp[r * hd + j] = src[j] * t.scale;
  }
  const float kNegInf = -std::numeric_limits<float>::infinity();
  for (int r = 0; r < rows; ++r) {
    out.m[r] = kNegInf;
    out.l[r] = 0.0f;
    std::fill(out.acc + r * hd, out.acc + (r + 1) * hd, 0.0f);
  }
  if (t.key_end <= t.key_begin) return;
  // Visible key range of query token i: [lo(i), hi(i)).
  auto lo_of = [&](int i) {
    const int s = t.first_q_slot + i;
    return std::max(t.key_begin, t.window > 0 ? s - t.window + 1 : 0);
  };
  auto hi_of = [&](int i) { return std::min(t.key_end, t.first_q_slot + i + 1); };
  const int first_block = t.key_begin / bt, last_block = (t.key_end - 1) / bt;
  for (int b = first_block; b <= last_block; ++b) {
    const int b0 = b * bt;
    // Tokens are sorted by slot, so the union of visible ranges in this block is
    // [lo(0), hi(last)) clipped to the block.
    const int tok_lo = std::max(lo_of(0), b0) - b0;
    const int tok_hi = std::min(hi_of(t.n_q_tokens - 1), b0 + bt) - b0;
    if (tok_hi <= tok_lo) continue;
    const int n_chunks = (tok_hi + kChunk - 1) / kChunk;
    const uint8_t* block = t.blocks[b];
    score(block, bt, hd, qp, hd, rows, n_chunks, scores, lds);
    // Mask, then update the running softmax of each row; scores become probabilities.
    for (int r = 0; r < rows; ++r) {
      const int i = r / t.group;
      const int lo = std::max(lo_of(i), b0) - b0, hi = std::min(hi_of(i), b0 + bt) - b0;
      float* s = scores + r * lds;
      if (hi <= lo) {
        std::fill(s, s + n_chunks * kChunk, 0.0f);
        continue;
      }
      VF vmax = hn::Set(d, kNegInf);
      for (int c = 0; c < n_chunks * kChunk; c += N) {
        const auto idx = hn::Iota(di, c);
        const auto keep = hn::RebindMask(d, hn::And(hn::Gt(idx, hn::Set(di, lo - 1)), hn::Lt(idx, hn::Set(di, hi))));
        const VF v = hn::IfThenElse(keep, hn::LoadU(d, s + c), hn::Set(d, kNegInf));
        hn::StoreU(v, d, s + c);
        vmax = hn::Max(vmax, v);
      }
      const float bmax = hn::GetLane(hn::MaxOfLanes(d, vmax));
      const float m_new = std::max(out.m[r], bmax);
      const float corr = std::exp(out.m[r] - m_new);  // 0 when m was -inf
      VF vsum = hn::Zero(d);
      const VF vm = hn::Set(d, m_new);
      for (int c = 0; c < n_chunks * kChunk; c += N) {
        const VF p = hn::Exp(d, hn::Sub(hn::LoadU(d, s + c), vm));  // exp(-inf) = 0
        hn::StoreU(p, d, s + c);
        vsum = hn::Add(vsum, p);
      }
      out.l[r] = out.l[r] * corr + hn::GetLane(hn::SumOfLanes(d, vsum));
      out.m[r] = m_new;
      if (corr != 1.0f) {
        float* a = out.acc + r * hd;
        for (int j = 0; j < hd; ++j) a[j] *= corr;
      }
    }
    accum(block + t.v_offset, hd, scores, lds, rows, tok_hi, out.acc, hd);
  }
}

}  // namespace slimkv::kv::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // per-target include guard
