// Matmul kernels over GGUF's own quantized blocks (WeightFormat::kGgml),
// included once per Highway target by matmul.cc after matmul-inl.h, whose panel
// kernel they share. Two shapes:
//  * Stream (decode, <= kMatMulStreamMaxTokens tokens): each block's sub-block
//  scales are
//    computed once per row and its codes decoded in registers and multiplied
//    with the tokens of x; the matrix is read exactly once, at the file's bits
//    per weight.
//  * Panel (prefill): a 16-row tile is decoded to an fp32 panel per block of
//  tokens and
//    multiplied by the register-tiled kernel of matmul-inl.h (PanelAll), as the
//    tiled formats.
#if defined(SLIMKV_OPS_MATMUL_BLOCKS_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef SLIMKV_OPS_MATMUL_BLOCKS_INL_H_
#undef SLIMKV_OPS_MATMUL_BLOCKS_INL_H_
#else
#define SLIMKV_OPS_MATMUL_BLOCKS_INL_H_
#endif

#include <algorithm>
#include <cstring>

#include "base/aligned_buffer.h"
#include "hwy/cache_control.h"
#include "hwy/highway.h"
#include "ops/block_decode-inl.h"
#include "ops/matmul-inl.h"
#include "ops/weights.h"

HWY_BEFORE_NAMESPACE();
namespace slimkv::ops::HWY_NAMESPACE {
namespace blocks {

// ---------------------------------------------------------------- stream
// kernel kRows rows x kTokens tokens. Per sub-block j, the raw codes are
// multiplied with x first and the sub-block's scale applied once, and the min
// term (StreamScales: the type's min plus its folded code offset) is subtracted
// lane-wise against xsum_j, x summed over the sub-block's vectors but not
// across lanes (computed once per call):
//   acc += s_j * (raw_j . x_j) - m_j * xsum_j,   y = sum of acc's lanes.

// Blocks whose scales are computed together (StreamScales): 512 elements.
template <class B>
inline constexpr int kChunkBlocks = 512 / B::kElems;

template <class B, int kRows, int kTokens>
HWY_INLINE void StreamTile(const WeightMatrix& w, int64_t r0, const float* x, int64_t ldx, const float* xsum,
                           int64_t ldxsum, float* y, int64_t ldy) {
  constexpr int kSubs = B::kElems / B::kSub;
  constexpr int kChunk = kChunkBlocks<B>;
  const DF d;
  const size_t N = hn::Lanes(d);
  const size_t row_bytes = w.code_bytes_per_row();
  const int64_t n_blocks = w.cols / B::kElems;
  const uint8_t* codes = w.codes.data() + r0 * row_bytes;
  {  // the rows a few tiles ahead, as the group kernel does (matmul-inl.h)
    const int64_t ahead = r0 + std::max<int64_t>(kRows, kPrefetchBytes / static_cast<int64_t>(row_bytes));
    if (ahead + kRows <= w.rows) {
      const uint8_t* p = w.codes.data() + ahead * row_bytes;
      for (size_t off = 0; off < kRows * row_bytes; off += 64) hwy::Prefetch(p + off);
    }
  }
  VF acc[kRows][kTokens];
  for (int i = 0; i < kRows; ++i)
    for (int t = 0; t < kTokens; ++t) acc[i][t] = hn::Zero(d);
  float s[kRows][kChunk * kSubs], m[kRows][kChunk * kSubs];
  for (int64_t b0 = 0; b0 < n_blocks; b0 += kChunk) {
    const int n = static_cast<int>(std::min<int64_t>(kChunk, n_blocks - b0));
    for (int i = 0; i < kRows; ++i) StreamScales<B>(codes + i * row_bytes + b0 * B::kBytes, n, s[i], m[i]);
    for (int bb = 0; bb < n; ++bb) {
      for (int i = 0; i < kRows; ++i) {
        const uint8_t* block = codes + i * row_bytes + (b0 + bb) * B::kBytes;
        for (int j = 0; j < kSubs; ++j) {
          const int64_t sub = (b0 + bb) * kSubs + j;
          const float* xc = x + sub * B::kSub;
          VF part[kTokens];
          for (int t = 0; t < kTokens; ++t) part[t] = hn::Zero(d);
          for (size_t e = 0; e < static_cast<size_t>(B::kSub); e += N) {
            const VF q = B::Raw(d, block, j, e);
            for (int t = 0; t < kTokens; ++t)
              part[t] = hn::MulAdd(q, hn::LoadU(d, xc + t * ldx + e), part[t]);
          }
          if constexpr (IsPlain<B>::value) {
            for (int t = 0; t < kTokens; ++t) acc[i][t] = hn::Add(acc[i][t], part[t]);
          } else {
            const VF vs = hn::Set(d, s[i][bb * kSubs + j]);
            for (int t = 0; t < kTokens; ++t) acc[i][t] = hn::MulAdd(part[t], vs, acc[i][t]);
            if constexpr (kStreamMin<B>) {
              const VF vm = hn::Set(d, m[i][bb * kSubs + j]);
              for (int t = 0; t < kTokens; ++t)
                acc[i][t] = hn::NegMulAdd(vm, hn::Load(d, xsum + t * ldxsum + sub * N), acc[i][t]);
            }
          }
        }
      }
    }
  }
  for (int i = 0; i < kRows; ++i)
    for (int t = 0; t < kTokens; ++t) y[t * ldy + r0 + i] = hn::GetLane(hn::SumOfLanes(d, acc[i][t]));
}

template <class B, int kTokens>
HWY_NOINLINE void StreamRows(const WeightMatrix& w, int64_t r_begin, int64_t r_end, const float* x,
                             int64_t ldx, const float* xsum, int64_t ldxsum, float* y, int64_t ldy) {
  constexpr int kRows = kTokens == 1 ? 4 : (kTokens == 2 ? 2 : 1);
  int64_t r = r_begin;
  for (; r + kRows <= r_end; r += kRows) StreamTile<B, kRows, kTokens>(w, r, x, ldx, xsum, ldxsum, y, ldy);
  for (; r < r_end; ++r) StreamTile<B, 1, kTokens>(w, r, x, ldx, xsum, ldxsum, y, ldy);
}

// Floats of scratch StreamAll needs: the lane-wise sub-block sums of x,
// [n_tokens][cols / kSub][N] (at most n_tokens * cols, as N <= kSub).
template <class B>
inline size_t StreamScratchFloats(int64_t cols, int64_t n_tokens) {
  return static_cast<size_t>(n_tokens * (cols / B::kSub) * hn::Lanes(DF()));
}

// scratch: StreamScratchFloats<B>(cols, n_tokens) floats, vector-aligned
// (MatMul's per-thread scratch holds PanelScratchFloats(cols) > 8 * cols, and
// n_tokens <= kMatMulStreamMaxTokens).
template <class B>
void StreamAll(const WeightMatrix& w, int64_t r_begin, int64_t r_end, const float* x, int64_t ldx,
               int64_t n_tokens, float* y, int64_t ldy, float* scratch) {
  const DF d;
  const size_t N = hn::Lanes(d);
  const int64_t n_subs = w.cols / B::kSub;
  const int64_t ldxsum = n_subs * static_cast<int64_t>(N);
  float* xsum = scratch;  // [n_tokens][n_subs][N]
  if constexpr (kStreamMin<B>) {
    for (int64_t t = 0; t < n_tokens; ++t)
      for (int64_t g = 0; g < n_subs; ++g) {
        const float* xg = x + t * ldx + g * B::kSub;
        VF sum = hn::LoadU(d, xg);
        for (size_t e = N; e < static_cast<size_t>(B::kSub); e += N) sum = hn::Add(sum, hn::LoadU(d, xg + e));
        hn::Store(sum, d, xsum + t * ldxsum + g * N);
      }
  }
  for (int64_t t = 0; t < n_tokens; t += 4) {
    const float* xt = x + t * ldx;
    const float* st = xsum + t * ldxsum;
    float* yt = y + t * ldy;
    switch (std::min<int64_t>(4, n_tokens - t)) {
      case 4:
        StreamRows<B, 4>(w, r_begin, r_end, xt, ldx, st, ldxsum, yt, ldy);
        break;
      case 3:
        StreamRows<B, 3>(w, r_begin, r_end, xt, ldx, st, ldxsum, yt, ldy);
        break;
      case 2:
        StreamRows<B, 2>(w, r_begin, r_end, xt, ldx, st, ldxsum, yt, ldy);
        break;
      default:
        StreamRows<B, 1>(w, r_begin, r_end, xt, ldx, st, ldxsum, yt, ldy);
        break;
    }
  }
}

// ---------------------------------------------------------------- panel kernel
// One 16-row tile of a kGgml matrix as the fp32 panel [cols][16] of PanelAll
// (matmul-inl.h): each row decoded by DequantRow (bit-exact with
// gguf::Dequantize), then written down its lane; rows past the matrix's end are zero.
template <class B>
struct TileDequant {
  const WeightMatrix& w;
  const float* operator()(int64_t tile, float* panel) const {
    thread_local AlignedBuffer<float> row;
    if (row.size() < static_cast<size_t>(w.cols)) row.Resize(w.cols);
    const int64_t r0 = tile * kWeightTileRows;
    const int64_t n = std::min(kWeightTileRows, w.rows - r0);
    for (int64_t i = 0; i < n; ++i) {
      DequantRow<B>(w.codes.data() + (r0 + i) * w.code_bytes_per_row(), w.cols, row.data());
      for (int64_t c = 0; c < w.cols; ++c) panel[c * kWeightTileRows + i] = row[c];
    }
    for (int64_t i = n; i < kWeightTileRows; ++i)
      for (int64_t c = 0; c < w.cols; ++c) panel[c * kWeightTileRows + i] = 0.0f;
    return panel;
  }
};

// ---------------------------------------------------------------- entry
// Tiles [tile_begin, tile_end) (16 rows each) of a kGgml matrix of block type
// B, with the contract of MatMulTiles (matmul-inl.h); scratch:
// PanelScratchFloats(cols) floats.
template <class B>
struct MatMulTilesOp {
  static void Run(const WeightMatrix& w, int64_t tile_begin, int64_t tile_end, const float* x, int64_t ldx,
                  int64_t n_tokens, float* y, int64_t ldy, float* scratch) {
    if (n_tokens <= kMatMulStreamMaxTokens) {
      const int64_t r_end = std::min(w.rows, tile_end * kWeightTileRows);
      StreamAll<B>(w, tile_begin * kWeightTileRows, r_end, x, ldx, n_tokens, y, ldy, scratch);
    } else {
      PanelAll(TileDequant<B>{w}, w.rows, w.cols, tile_begin, tile_end, x, ldx, n_tokens, y, ldy, scratch);
    }
  }
};

inline void MatMulTiles(const WeightMatrix& w, int64_t tile_begin, int64_t tile_end, const float* x,
                        int64_t ldx, int64_t n_tokens, float* y, int64_t ldy, float* scratch) {
  ForBlockType<MatMulTilesOp>(w.ggml_type, w, tile_begin, tile_end, x, ldx, n_tokens, y, ldy, scratch);
}

}  // namespace blocks
}  // namespace slimkv::ops::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // per-target include guard
