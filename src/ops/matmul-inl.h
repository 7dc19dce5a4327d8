// SIMD bodies of the matmul kernels (included once per Highway target by matmul.cc).
//
// Two kernels:
//  * Stream (few tokens, i.e. decode): weights are decoded in registers group by group and
//    used once. For quantized formats the raw codes are multiplied with x first and the
//    group's scale is applied once per group: y = sum_g s_g * (q_g . x_g) + sum_g m_g * xsum_g,
//    with xsum_g = sum of x over the group computed once per call.
//  * Panel (many tokens, i.e. prefill): kPanelRows rows are dequantized to fp32 once per
//    block of kTokenBlock tokens; x of the block is packed transposed ([cols][tokens]) so the
//    micro-kernel broadcasts one weight and multiplies it with 2 vectors of tokens
//    (outer-product form: no horizontal sums, 12 FMAs per 8 loads).
#if defined(SLIMKV_OPS_MATMUL_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef SLIMKV_OPS_MATMUL_INL_H_
#undef SLIMKV_OPS_MATMUL_INL_H_
#else
#define SLIMKV_OPS_MATMUL_INL_H_
#endif

#include <algorithm>
#include <cstring>

#include "hwy/cache_control.h"
#include "hwy/highway.h"
#include "ops/weights.h"

HWY_BEFORE_NAMESPACE();
namespace slimkv::ops::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using DF = hn::ScalableTag<float>;
using VF = hn::Vec<DF>;

// Columns per decode step of a format: the scale group for quantized formats, 16 columns
// for plain floats (every matrix has cols % 16 == 0).
template <WeightFormat kFormat, int kGroup>
struct Codes {
  static constexpr bool kQuant = kFormat == WeightFormat::kQ4 || kFormat == WeightFormat::kQ8;
  static constexpr int kCols = kQuant ? kGroup : 16;
  // Byte offset of group g within a row.
  static constexpr size_t GroupOffset(int64_t g) {
    if constexpr (kFormat == WeightFormat::kQ4) return g * (kCols / 2);
    if constexpr (kFormat == WeightFormat::kQ8) return g * kCols;
    if constexpr (kFormat == WeightFormat::kF16) return g * kCols * 2;
    return g * kCols * 4;
  }
  // Decodes the kCols columns of one group into kCols/N vectors of raw values (codes as
  // float for quantized formats, the weights themselves for float formats).
  static HWY_INLINE void Decode(DF d, const uint8_t* p, VF* out) {
    const size_t N = hn::Lanes(d);
    if constexpr (kFormat == WeightFormat::kF32) {
      for (size_t v = 0; v * N < kCols; ++v) out[v] = hn::LoadU(d, reinterpret_cast<const float*>(p) + v * N);
    } else if constexpr (kFormat == WeightFormat::kF16) {
      const hn::Rebind<hwy::float16_t, DF> dh;
      for (size_t v = 0; v * N < kCols; ++v)
        out[v] = hn::PromoteTo(d, hn::LoadU(dh, reinterpret_cast<const hwy::float16_t*>(p) + v * N));
    } else if constexpr (kFormat == WeightFormat::kQ4) {
      // 16 bytes: byte j = column j (low nibble) | column j+16 (high nibble).
      const hn::Rebind<uint8_t, DF> d8;
      const hn::Rebind<uint32_t, DF> du;
      const hn::Rebind<int32_t, DF> di;
      const size_t half = 16 / N;  // vectors per 16 columns
      for (size_t v = 0; v < half; ++v) {
        const auto b = hn::PromoteTo(du, hn::LoadU(d8, p + v * N));
        out[v] = hn::ConvertTo(d, hn::BitCast(di, hn::And(b, hn::Set(du, 15u))));
        out[v + half] = hn::ConvertTo(d, hn::BitCast(di, hn::ShiftRight<4>(b)));
      }
    } else {
      const hn::Rebind<int8_t, DF> d8;
      const hn::Rebind<int32_t, DF> di;
      for (size_t v = 0; v * N < kCols; ++v)
        out[v] = hn::ConvertTo(d, hn::PromoteTo(di, hn::LoadU(d8, reinterpret_cast<const int8_t*>(p) + v * N)));
    }
  }
};

// Upper bound of vectors per group (group 32 / 1 lane on the scalar target).
inline constexpr int kMaxVecPerGroup = 32;
// How far ahead (in bytes of codes) the stream kernel prefetches weights.
inline constexpr int64_t kPrefetchBytes = 4096;

// ---------------------------------------------------------------- stream kernel
template <WeightFormat kFormat, int kGroup, int kRows, int kTokens>
HWY_INLINE void StreamTile(const WeightMatrix& w, int64_t r0, const float* x, int64_t ldx,
                           const float* xsum, float* y, int64_t ldy) {
  using C = Codes<kFormat, kGroup>;
  const DF d;
  const size_t N = hn::Lanes(d);
  const size_t vpg = C::kCols / N;  // vectors per group
  const int64_t ng = w.cols / C::kCols;
  const size_t row_bytes = w.code_bytes_per_row();
  const uint8_t* codes = w.codes.data() + r0 * row_bytes;
  // Decode streams the whole matrix from memory once; ask for the rows a few tiles ahead
  // so the loads below find them in cache (the hardware prefetcher alone lags behind
  // these many short interleaved streams).
  {
    const int64_t ahead = r0 + std::max<int64_t>(kRows, kPrefetchBytes / static_cast<int64_t>(row_bytes));
    if (ahead + kRows <= w.rows) {
      const uint8_t* p = w.codes.data() + ahead * row_bytes;
      for (size_t off = 0; off < kRows * row_bytes; off += 64) hwy::Prefetch(p + off);
      if constexpr (C::kQuant) {
        const float* sp = w.scales.data() + ahead * ng;
        for (int64_t off = 0; off < kRows * ng; off += 16) hwy::Prefetch(sp + off);
        if (w.has_min) {
          const float* mp = w.mins.data() + ahead * ng;
          for (int64_t off = 0; off < kRows * ng; off += 16) hwy::Prefetch(mp + off);
        }
      }
    }
  }
  VF acc[kRows][kTokens];
  for (int i = 0; i < kRows; ++i)
    for (int t = 0; t < kTokens; ++t) acc[i][t] = hn::Zero(d);
  for (int64_t g = 0; g < ng; ++g) {
    const int64_t c0 = g * C::kCols;
    for (int i = 0; i < kRows; ++i) {
      VF q[kMaxVecPerGroup];
      C::Decode(d, codes + i * row_bytes + C::GroupOffset(g), q);
      if constexpr (C::kQuant) {
        const VF s = hn::Set(d, w.scales[(r0 + i) * ng + g]);
        for (int t = 0; t < kTokens; ++t) {
          VF part = hn::Mul(q[0], hn::LoadU(d, x + t * ldx + c0));
          for (size_t v = 1; v < vpg; ++v) part = hn::MulAdd(q[v], hn::LoadU(d, x + t * ldx + c0 + v * N), part);
          acc[i][t] = hn::MulAdd(part, s, acc[i][t]);
        }
      } else {
        for (int t = 0; t < kTokens; ++t)
          for (size_t v = 0; v < vpg; ++v) acc[i][t] = hn::MulAdd(q[v], hn::LoadU(d, x + t * ldx + c0 + v * N), acc[i][t]);
      }
    }
  }
  for (int i = 0; i < kRows; ++i) {
    for (int t = 0; t < kTokens; ++t) {
      VF total = acc[i][t];
      float tail = 0;
      if (C::kQuant && w.has_min) {  // + sum_g m_g * xsum_g, vectorised over groups
        const float* m = w.mins.data() + (r0 + i) * ng;
        const float* xs = xsum + t * ng;
        int64_t g = 0;
        for (; g + static_cast<int64_t>(N) <= ng; g += N) total = hn::MulAdd(hn::LoadU(d, m + g), hn::LoadU(d, xs + g), total);
        for (; g < ng; ++g) tail += m[g] * xs[g];
      }
      y[t * ldy + r0 + i] = hn::GetLane(hn::SumOfLanes(d, total)) + tail;
    }
  }
}

template <WeightFormat kFormat, int kGroup, int kTokens>
HWY_NOINLINE void StreamRows(const WeightMatrix& w, int64_t r_begin, int64_t r_end,
                             const float* x, int64_t ldx, const float* xsum, float* y, int64_t ldy) {
  constexpr int kRows = kTokens == 1 ? 4 : (kTokens == 2 ? 2 : 1);
  int64_t r = r_begin;
  for (; r + kRows <= r_end; r += kRows)
    StreamTile<kFormat, kGroup, kRows, kTokens>(w, r, x, ldx, xsum, y, ldy);
  for (; r < r_end; ++r) StreamTile<kFormat, kGroup, 1, kTokens>(w, r, x, ldx, xsum, y, ldy);
}

template <WeightFormat kFormat, int kGroup>
void StreamAll(const WeightMatrix& w, int64_t r_begin, int64_t r_end, const float* x,
               int64_t ldx, int64_t n_tokens, float* y, int64_t ldy, float* scratch) {
  using C = Codes<kFormat, kGroup>;
  const int64_t ng = w.cols / C::kCols;
  float* xsum = scratch;  // [n_tokens, ng]
  if (C::kQuant && w.has_min) {
    for (int64_t t = 0; t < n_tokens; ++t)
      for (int64_t g = 0; g < ng; ++g) {
        float s = 0;
        for (int j = 0; j < C::kCols; ++j) s += x[t * ldx + g * C::kCols + j];
        xsum[t * ng + g] = s;
      }
  }
  for (int64_t t = 0; t < n_tokens; t += 4) {
    const float* xt = x + t * ldx;
    const float* st = xsum + t * ng;
    float* yt = y + t * ldy;
    switch (std::min<int64_t>(4, n_tokens - t)) {
      case 4: StreamRows<kFormat, kGroup, 4>(w, r_begin, r_end, xt, ldx, st, yt, ldy); break;
      case 3: StreamRows<kFormat, kGroup, 3>(w, r_begin, r_end, xt, ldx, st, yt, ldy); break;
      case 2: StreamRows<kFormat, kGroup, 2>(w, r_begin, r_end, xt, ldx, st, yt, ldy); break;
      default: StreamRows<kFormat, kGroup, 1>(w, r_begin, r_end, xt, ldx, st, yt, ldy); break;
    }
  }
}

// ---------------------------------------------------------------- panel kernel
inline constexpr int kPanelRows = 12;
inline constexpr int64_t kTokenBlock = 64;

// Floats of scratch the kernels need per thread for a matrix of `cols` columns: the
// dequantized panel (or the stream kernel's per-group sums of x, which are smaller).
inline size_t PanelScratchFloats(int64_t cols) {
  return static_cast<size_t>(kPanelRows) * cols + 64;
}

// Tokens per micro-kernel call for a block of nt tokens: one vector when the block fits
// in one (a decode batch), else two.
inline int64_t PanelTile(int64_t nt) {
  const int64_t N = static_cast<int64_t>(hn::Lanes(DF()));
  return nt <= N ? N : 2 * N;
}

// x packed for the panel kernel: per block of kTokenBlock tokens, [cols][ldt] (ldt = the
// block's tokens rounded up to its tile, padding zero), blocks kTokenBlock * cols apart.
// Packed once per MatMul call and shared by all threads and outputs.
inline size_t PackedXFloats(int64_t cols, int64_t n_tokens) {
  const int64_t blocks = (n_tokens + kTokenBlock - 1) / kTokenBlock;
  return static_cast<size_t>(blocks * kTokenBlock * cols);
}

// Where the block of tokens starting at t0 (a multiple of kTokenBlock) lies in the packed x.
struct PackedBlock {
  int64_t nt;      // tokens in the block
  int64_t tile;    // tokens per micro-kernel call
  int64_t ldt;     // nt rounded up to the tile
  int64_t offset;  // of the block's [cols][ldt] in floats
};
inline PackedBlock PackedBlockAt(int64_t t0, int64_t n_tokens, int64_t cols) {
  const int64_t nt = std::min(kTokenBlock, n_tokens - t0);
  const int64_t tile = PanelTile(nt);
  return {nt, tile, (nt + tile - 1) / tile * tile, (t0 / kTokenBlock) * kTokenBlock * cols};
}

inline void PackX(const float* x, int64_t ldx, int64_t n_tokens, int64_t cols, float* xpack) {
  for (int64_t t0 = 0; t0 < n_tokens; t0 += kTokenBlock) {
    const auto [nt, tile, ldt, offset] = PackedBlockAt(t0, n_tokens, cols);
    float* xt = xpack + offset;
    for (int64_t t = 0; t < nt; ++t) {  // rows of x read in order
      const float* src = x + (t0 + t) * ldx;
      for (int64_t c = 0; c < cols; ++c) xt[c * ldt + t] = src[c];
    }
    for (int64_t c = 0; c < cols; ++c)
      for (int64_t t = nt; t < ldt; ++t) xt[c * ldt + t] = 0.0f;
  }
}

// acc[kRowsM rows][kVecs token vectors] over all columns; panel is [kRowsM][cols] row-major,
// xt is x of the block packed as [cols][ldt] (ldt = tokens in block rounded up to kVecs*N).
// 6 rows x 2 vectors or 12 rows x 1 vector: 12 accumulators either way, so a block of at
// most N tokens (a decode batch) does not multiply a vector of zero padding.
template <int kRowsM, int kVecs>
HWY_INLINE void PanelMicro(const float* panel, int64_t cols, const float* xt, int64_t ldt,
                           float* out /* [kRowsM][kVecs * N] */) {
  const DF d;
  const size_t N = hn::Lanes(d);
  VF acc[kRowsM][kVecs];
  for (int i = 0; i < kRowsM; ++i)
    for (int v = 0; v < kVecs; ++v) acc[i][v] = hn::Zero(d);
  for (int64_t c = 0; c < cols; ++c) {
    VF xv[kVecs];
    for (int v = 0; v < kVecs; ++v) xv[v] = hn::Load(d, xt + c * ldt + v * N);
    for (int i = 0; i < kRowsM; ++i) {
      const VF wv = hn::Set(d, panel[i * cols + c]);
      for (int v = 0; v < kVecs; ++v) acc[i][v] = hn::MulAdd(wv, xv[v], acc[i][v]);
    }
  }
  for (int i = 0; i < kRowsM; ++i)
    for (int v = 0; v < kVecs; ++v) hn::Store(acc[i][v], d, out + (i * kVecs + v) * N);
}

// The panel kernel for rows [r_begin, r_end) of a matrix of `cols` columns: `dequant(row,
// out)` writes one row as fp32 (a functor, not a lambda: clang compiles lambdas without the
// target's attributes). Shared by the group layouts and GGUF's blocks (matmul_blocks-inl.h).
template <class DequantRow>
void PanelLoop(const DequantRow& dequant, int64_t cols, int64_t r_begin, int64_t r_end, const float* xpack,
               int64_t n_tokens, float* y, int64_t ldy, float* scratch) {
  const DF d;
  const size_t N = hn::Lanes(d);
  float* panel = scratch;                                   // [kPanelRows][cols]
  HWY_ALIGN float out[kPanelRows * 2 * hn::MaxLanes(d)];    // [kPanelRows][tile]
  for (int64_t t0 = 0; t0 < n_tokens; t0 += kTokenBlock) {
    const auto [nt, tile, ldt, offset] = PackedBlockAt(t0, n_tokens, cols);
    const float* xt = xpack + offset;  // [cols][ldt]
    for (int64_t r = r_begin; r < r_end; r += kPanelRows) {
      const int rows = static_cast<int>(std::min<int64_t>(kPanelRows, r_end - r));
      for (int i = 0; i < kPanelRows; ++i) {
        if (i < rows) {
          dequant(r + i, panel + i * cols);
        } else {
          std::memset(panel + i * cols, 0, cols * sizeof(float));
        }
      }
      for (int64_t tt = 0; tt < nt; tt += tile) {
        if (tile == static_cast<int64_t>(N)) {
          PanelMicro<kPanelRows, 1>(panel, cols, xt + tt, ldt, out);
        } else {
          PanelMicro<kPanelRows / 2, 2>(panel, cols, xt + tt, ldt, out);
          PanelMicro<kPanelRows / 2, 2>(panel + kPanelRows / 2 * cols, cols, xt + tt, ldt,
                                        out + kPanelRows / 2 * 2 * N);
        }
        const int64_t ntt = std::min<int64_t>(tile, nt - tt);
        for (int i = 0; i < rows; ++i)
          for (int64_t t = 0; t < ntt; ++t) y[(t0 + tt + t) * ldy + r + i] = out[i * tile + t];
      }
    }
  }
}

// One row of a group-layout matrix as fp32, for PanelLoop.
template <WeightFormat kFormat, int kGroup>
struct GroupRowDequant {
  const WeightMatrix& w;
  void operator()(int64_t row, float* prow) const {
    using C = Codes<kFormat, kGroup>;
    const DF d;
    const size_t N = hn::Lanes(d);
    const int64_t ng = w.cols / C::kCols;
    const size_t vpg = C::kCols / N;
    const uint8_t* codes = w.codes.data() + row * w.code_bytes_per_row();
    for (int64_t g = 0; g < ng; ++g) {
      VF q[kMaxVecPerGroup];
      C::Decode(d, codes + C::GroupOffset(g), q);
      if constexpr (C::kQuant) {
        const VF s = hn::Set(d, w.scales[row * ng + g]);
        const VF m = hn::Set(d, w.has_min ? w.mins[row * ng + g] : 0.0f);
        for (size_t v = 0; v < vpg; ++v) hn::StoreU(hn::MulAdd(q[v], s, m), d, prow + g * C::kCols + v * N);
      } else {
        for (size_t v = 0; v < vpg; ++v) hn::StoreU(q[v], d, prow + g * C::kCols + v * N);
      }
    }
  }
};

template <WeightFormat kFormat, int kGroup>
void PanelAll(const WeightMatrix& w, int64_t r_begin, int64_t r_end, const float* xpack, int64_t n_tokens,
              float* y, int64_t ldy, float* scratch) {
  PanelLoop(GroupRowDequant<kFormat, kGroup>{w}, w.cols, r_begin, r_end, xpack, n_tokens, y, ldy, scratch);
}

// ---------------------------------------------------------------- entry
template <WeightFormat kFormat, int kGroup>
void MatMulRowsT(const WeightMatrix& w, int64_t r_begin, int64_t r_end, const float* x,
                 int64_t ldx, const float* xpack, int64_t n_tokens, float* y, int64_t ldy,
                 float* scratch) {
  if (n_tokens <= kMatMulStreamMaxTokens) {
    StreamAll<kFormat, kGroup>(w, r_begin, r_end, x, ldx, n_tokens, y, ldy, scratch);
  } else {
    PanelAll<kFormat, kGroup>(w, r_begin, r_end, xpack, n_tokens, y, ldy, scratch);
  }
}

// x: [n_tokens, ldx]; xpack: x packed by PackX when n_tokens > kMatMulStreamMaxTokens.
inline void MatMulRows(const WeightMatrix& w, int64_t r_begin, int64_t r_end, const float* x,
                       int64_t ldx, const float* xpack, int64_t n_tokens, float* y, int64_t ldy,
                       float* scratch) {
  switch (w.format) {
    case WeightFormat::kF32:
      return MatMulRowsT<WeightFormat::kF32, 16>(w, r_begin, r_end, x, ldx, xpack, n_tokens, y, ldy, scratch);
    case WeightFormat::kF16:
      return MatMulRowsT<WeightFormat::kF16, 16>(w, r_begin, r_end, x, ldx, xpack, n_tokens, y, ldy, scratch);
    case WeightFormat::kQ4:
      return MatMulRowsT<WeightFormat::kQ4, 32>(w, r_begin, r_end, x, ldx, xpack, n_tokens, y, ldy, scratch);
    case WeightFormat::kQ8:
      if (w.group == 16)
        return MatMulRowsT<WeightFormat::kQ8, 16>(w, r_begin, r_end, x, ldx, xpack, n_tokens, y, ldy, scratch);
      return MatMulRowsT<WeightFormat::kQ8, 32>(w, r_begin, r_end, x, ldx, xpack, n_tokens, y, ldy, scratch);
    case WeightFormat::kGgml:  // GGUF's own blocks: blocks::MatMulRows (matmul_blocks-inl.h)
      break;
  }
}

}  // namespace slimkv::ops::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // per-target include guard
