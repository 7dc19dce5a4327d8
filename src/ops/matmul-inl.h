// SIMD bodies of the matmul kernels (included once per Highway target by matmul.cc).
//
// Weights are in 16-row tiles (ops/weights.h); every kernel keeps a tile's rows
// in vector lanes, so outputs are stored as vectors and no kernel sums horizontally.
//  * Few tokens (kMatMulIntegerMaxTokens for quantized weights on VNNI, else
//    kMatMulStreamMaxTokens): gemv-inl.h, weights used straight from their
//    codes, 4 tokens per pass.
//  * More tokens: a tile is dequantized to an fp32 panel [cols][16] once per
//  block of up to
//    kMaxTokenBlock tokens, and an outer-product micro-kernel multiplies panels
//    with x broadcast one value at a time: 12 tokens x 2 tiles (24
//    accumulators) on AVX-512, 6 tokens x 2 vectors on AVX2; x is read in place
//    (no packing).
#if defined(SLIMKV_OPS_MATMUL_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef SLIMKV_OPS_MATMUL_INL_H_
#undef SLIMKV_OPS_MATMUL_INL_H_
#else
#define SLIMKV_OPS_MATMUL_INL_H_
#endif

#include <algorithm>
#include <cstring>

#include "hwy/highway.h"
#include "ops/gemv-inl.h"
#include "ops/matmul.h"
#include "ops/weights.h"

HWY_BEFORE_NAMESPACE();
namespace slimkv::ops::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// ---------------------------------------------------------------- panel kernel
// Tokens per block of the fp32 kernel: at most kMaxTokenBlock (x of a block
// stays in L2), in blocks of equal size (every block dequantizes every tile
// once, so a 70-token prompt is one block, not 64 + 6).
inline constexpr int64_t kMaxTokenBlock = 128;
// Tiles and tokens per micro-kernel call: 12 tokens x 2 tiles of one vector
// each on AVX-512 (24 accumulators of 32 registers: 14 loads per 24 FMAs), 12
// accumulators elsewhere (16 registers on AVX2).
inline constexpr int kPanelTiles = kTileVecs == 1 ? 2 : 1;
inline constexpr int kPanelTokens = std::max(1, 12 / kTileVecs);

// Floats of per-thread scratch for a matrix of `cols` columns (kPanelTiles dequantized tiles).
inline size_t PanelScratchFloats(int64_t cols) {
  return static_cast<size_t>(kPanelTiles * cols * kWeightTileRows);
}

// Code byte kB of each row's 4 bytes in `v` (with the high bits of `planes`)
// to fp32 weights (scale s, minimum m), stored to the panel columns it holds.
template <WeightFormat kFormat, int kGroup, int kB>
HWY_INLINE void DequantByte(hn::Vec<DU> v, const ChunkPlanes<kFormat>& planes, hn::Vec<DI> offset, VF s, VF m,
                            float* col /* panel + column * 16 */) {
  const DF d;
  if constexpr (kFormat != WeightFormat::kQ8) {
    VF codes[kParts<kFormat>];
    PartCodes<kFormat, kB>(v, planes, offset, codes);
    for (int p = 0; p < kParts<kFormat>; ++p) {
      hn::StoreU(hn::MulAdd(codes[p], s, m), d, col + (p * (kGroup / kParts<kFormat>) + kB) * kWeightTileRows);
    }
  } else {
    hn::StoreU(hn::MulAdd(SignedByteOf<kB>(v), s, m), d, col + kB * kWeightTileRows);
  }
}

// The tile's weights as fp32 [cols][16]: the tile itself for kF32, else `scratch`.
template <WeightFormat kFormat, int kGroup>
HWY_INLINE const float* DequantTile(const WeightMatrix& w, int64_t tile, float* HWY_RESTRICT scratch) {
  const DF d;
  const DU du;
  constexpr size_t N = kLanes;
  const uint8_t* codes = w.tile_codes(tile);
  if constexpr (kFormat == WeightFormat::kF32) {
    return reinterpret_cast<const float*>(codes);
  } else if constexpr (kFormat == WeightFormat::kF16) {
    const hn::Rebind<hwy::float16_t, DF> dh;
    const auto* h = reinterpret_cast<const hwy::float16_t*>(codes);
    for (int64_t i = 0; i < w.cols * kWeightTileRows; i += N)
      hn::StoreU(hn::PromoteTo(d, hn::LoadU(dh, h + i)), d, scratch + i);
    return scratch;
  } else {
    constexpr int kChunks = kGroupChunks<kFormat, kGroup>;
    const int64_t ng = w.cols / kGroup;
    const TileScales ts(w, tile);
    const auto offset = hn::Set(DI(), w.code_offset);
    for (int64_t g = 0; g < ng; ++g) {
      const uint8_t* cg = codes + g * kGroupTileBytes<kFormat, kGroup>;
      for (int h = 0; h < kTileVecs; ++h) {
        const VF s = ts.Scale(g, h);
        const VF m = ts.mins ? ts.Min(g, h) : hn::Zero(d);
        for (int k = 0; k < kChunks; ++k) {
          const auto v = hn::LoadU(du, reinterpret_cast<const uint32_t*>(cg + k * 64) + h * N);
          const ChunkPlanes<kFormat> planes(cg + kChunks * 64 + 8 * kParts<kFormat> * k * kPlanes<kFormat>, h);
          float* col = scratch + (g * kGroup + 4 * k) * kWeightTileRows + h * N;
          DequantByte<kFormat, kGroup, 0>(v, planes, offset, s, m, col);
          DequantByte<kFormat, kGroup, 1>(v, planes, offset, s, m, col);
          DequantByte<kFormat, kGroup, 2>(v, planes, offset, s, m, col);
          DequantByte<kFormat, kGroup, 3>(v, planes, offset, s, m, col);
        }
      }
    }
    return scratch;
  }
}

// y[t][rows of kTiles consecutive tiles] for tokens x[0..kT) ([kT, ldx]) times their panels
// ([cols][16] each); the last tile has n_rows rows.
template <int kT, int kTiles>
HWY_NOINLINE void PanelMicro(const float* const* panels, int64_t cols, const float* x, int64_t ldx, float* y,
                             int64_t ldy, int64_t n_rows) {
  const DF d;
  constexpr size_t N = kLanes;
  constexpr int kV = kTiles * kTileVecs;  // vectors of rows
  const float* p[kTiles];
  for (int i = 0; i < kTiles; ++i) p[i] = panels[i];
  VF acc[kT][kV];
  for (int t = 0; t < kT; ++t)
    for (int v = 0; v < kV; ++v) acc[t][v] = hn::Zero(d);
  for (int64_t c = 0; c < cols; ++c) {
    VF wv[kV];
    for (int v = 0; v < kV; ++v)
      wv[v] = hn::LoadU(d, p[v / kTileVecs] + c * kWeightTileRows + (v % kTileVecs) * N);
    for (int t = 0; t < kT; ++t) {
      const VF xv = hn::Set(d, x[t * ldx + c]);
      for (int v = 0; v < kV; ++v) acc[t][v] = hn::MulAdd(wv[v], xv, acc[t][v]);
    }
  }
  constexpr int kFull = (kTiles - 1) * kTileVecs;  // vectors of the tiles before the last
  for (int t = 0; t < kT; ++t) {
    for (int v = 0; v < kFull; ++v) hn::StoreU(acc[t][v], d, y + t * ldy + v * N);
  }
  if (n_rows == kWeightTileRows) {
    for (int t = 0; t < kT; ++t)
      for (int v = kFull; v < kV; ++v) hn::StoreU(acc[t][v], d, y + t * ldy + v * N);
    return;
  }
  HWY_ALIGN float out[kWeightTileRows];
  for (int t = 0; t < kT; ++t) {
    for (int v = kFull; v < kV; ++v) hn::Store(acc[t][v], d, out + (v - kFull) * N);
    std::memcpy(y + t * ldy + kFull * N, out, n_rows * sizeof(float));
  }
}

template <int kTiles, int kT = kPanelTokens>
HWY_INLINE void PanelTokens(int64_t nt, const float* const* panels, int64_t cols, const float* x, int64_t ldx,
                            float* y, int64_t ldy, int64_t n_rows) {
  if constexpr (kT > 1) {
    if (nt < kT) return PanelTokens<kTiles, kT - 1>(nt, panels, cols, x, ldx, y, ldy, n_rows);
  }
  PanelMicro<kT, kTiles>(panels, cols, x, ldx, y, ldy, n_rows);
}

// The fp32 panels of a tile-layout matrix (DequantTile), for PanelAll.
template <WeightFormat kFormat, int kGroup>
struct TileDequant {
  const WeightMatrix& w;
  const float* operator()(int64_t tile, float* scratch) const {
    return DequantTile<kFormat, kGroup>(w, tile, scratch);
  }
};

// Tiles [tile_begin, tile_end) of a matrix [rows, cols] times x. `dequant(tile,
// scratch)` returns the tile's weights as fp32 [cols][16] (in scratch, [cols * 16] floats, or elsewhere).
template <class Dequant>
void PanelAll(const Dequant& dequant, int64_t rows, int64_t cols, int64_t tile_begin, int64_t tile_end,
              const float* x, int64_t ldx, int64_t n_tokens, float* y, int64_t ldy, float* scratch) {
  const int64_t blocks = (n_tokens + kMaxTokenBlock - 1) / kMaxTokenBlock;
  const int64_t block = ((n_tokens + blocks - 1) / blocks + kPanelTokens - 1) / kPanelTokens * kPanelTokens;
  for (int64_t t0 = 0; t0 < n_tokens; t0 += block) {
    const int64_t t1 = std::min(n_tokens, t0 + block);
    for (int64_t tile = tile_begin; tile < tile_end; tile += kPanelTiles) {
      const int tiles = static_cast<int>(std::min<int64_t>(kPanelTiles, tile_end - tile));
      const float* panels[kPanelTiles];
      for (int i = 0; i < tiles; ++i) panels[i] = dequant(tile + i, scratch + i * cols * kWeightTileRows);
      const int64_t r0 = tile * kWeightTileRows;
      const int64_t n_rows = std::min(kWeightTileRows, rows - (tile + tiles - 1) * kWeightTileRows);
      for (int64_t t = t0; t < t1; t += kPanelTokens) {
        const int64_t nt = std::min<int64_t>(kPanelTokens, t1 - t);
        if (tiles == kPanelTiles) {
          PanelTokens<kPanelTiles>(nt, panels, cols, x + t * ldx, ldx, y + t * ldy + r0, ldy, n_rows);
        } else {
          PanelTokens<1>(nt, panels, cols, x + t * ldx, ldx, y + t * ldy + r0, ldy, n_rows);
        }
      }
    }
  }
}

// ---------------------------------------------------------------- entry
template <WeightFormat kFormat, int kGroup>
void MatMulTilesT(const WeightMatrix& w, int64_t tile_begin, int64_t tile_end, const float* x, int64_t ldx,
                  const QuantizedX* q, int64_t n_tokens, float* y, int64_t ldy, float* scratch) {
  constexpr bool kInteger = kIntegerGemv && kFormat != WeightFormat::kF32 && kFormat != WeightFormat::kF16;
  if (n_tokens <= (kInteger ? kMatMulIntegerMaxTokens : kMatMulStreamMaxTokens)) {
    // Formats without group sums (f32, f16) are called with no prepared x; bind a reference to an
    // empty one rather than to null.
    static const QuantizedX kNoX;
    GemvAll<kFormat, kGroup>(w, tile_begin, tile_end, x, ldx, q != nullptr ? *q : kNoX, n_tokens, y,
                                    ldy);
  } else {
    PanelAll(TileDequant<kFormat, kGroup>{w}, w.rows, w.cols, tile_begin, tile_end, x, ldx, n_tokens,
             y, ldy, scratch);
  }
}

// The tile kernel of w's format (MatMulTilesT), or null for kGgml (GGUF's own blocks:
// blocks::MatMulTiles, matmul_blocks-inl.h).
using TileKernel = void (*)(const WeightMatrix&, int64_t, int64_t, const float*, int64_t, const QuantizedX*,
                            int64_t, float*, int64_t, float*);
inline TileKernel TileKernelOf(const WeightMatrix& w) {
  switch (w.format) {
    case WeightFormat::kF32:
      return &MatMulTilesT<WeightFormat::kF32, 16>;
    case WeightFormat::kF16:
      return &MatMulTilesT<WeightFormat::kF16, 16>;
    case WeightFormat::kQ3:
      return &MatMulTilesT<WeightFormat::kQ3, 16>;
    case WeightFormat::kQ4:
      return &MatMulTilesT<WeightFormat::kQ4, 32>;
    case WeightFormat::kQ5:
      return &MatMulTilesT<WeightFormat::kQ5, 32>;
    case WeightFormat::kQ6:
      return &MatMulTilesT<WeightFormat::kQ6, 16>;
    case WeightFormat::kIQ4:
      return &MatMulTilesT<WeightFormat::kIQ4, 32>;
    case WeightFormat::kQ8:
      return w.group == 16 ? &MatMulTilesT<WeightFormat::kQ8, 16> : &MatMulTilesT<WeightFormat::kQ8, 32>;
    case WeightFormat::kGgml:
      break;
  }
  return nullptr;
}

// Tiles [tile_begin, tile_end) of w times x ([n_tokens, ldx]) into y. `q`: x
// prepared by QuantizeX with w's group when w is quantized and n_tokens <= kMatMulIntegerMaxTokens.
inline void MatMulTiles(const WeightMatrix& w, int64_t tile_begin, int64_t tile_end, const float* x,
                        int64_t ldx, const QuantizedX* q, int64_t n_tokens, float* y, int64_t ldy,
                        float* scratch) {
  if (const TileKernel k = TileKernelOf(w)) k(w, tile_begin, tile_end, x, ldx, q, n_tokens, y, ldy, scratch);
}

}  // namespace slimkv::ops::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // per-target include guard
