// TurboQuant: calibration-free vector quantization of K/V vectors (Zandieh et al., 2025).
//
// Per vector (one token of one stream), after the stream's randomized Hadamard rotation
// (rotation.h; the cache applies it when a token arrives): the norm n is kept apart (fp16)
// and every coordinate of x * sqrt(d) / n, which is close to N(0, 1) whatever the vector
// was, is quantized with the Lloyd-Max (MSE-optimal) codebook of N(0, 1). Nothing is
// learned and nothing depends on other tokens, so a vector is compressed the moment it
// arrives. Expected squared error per vector: D(b) * |x|^2, D = 0.3634, 0.1175, 0.03455,
// 0.009501 for b = 1..4 bits.
//
// TurboQuant's inner-product variant (b - 1 bits of the above plus a 1-bit QJL sign sketch
// of the residual, unbiased inner products) was measured and lost (docs/DECISIONS.md); it
// was removed after commit a44fe76, which has it as `:qjl`.
//
// `:mean` (keys): the block's mean key m (fp16 [d], rotated domain) is stored apart and the
// codes hold k - m, so keys that share a large offset (RoPE'd channel biases) spend their
// bits on what differs between tokens; the score kernel adds q . m back per block.
//
// Layout of a part of `bt` tokens, `hd` channels (TurboLayout): channels [0, hi) are coded
// with hi_bits = bits + 1, channels [hi, hd) with bits (hi = a quarter, half or three
// quarters of hd for the fractional budgets, else 0); each code array is tiled as packing.h
// says for its own width and bits (K tiles 16 tokens x 4 channels, V tiles 16 channels x 4
// tokens):
//   K: codes_hi (hi channels), codes_lo (hd - hi channels), then norm [bt] (fp16), (:mean) mean [hd] (fp16)
//   V: codes_hi (hi channels), codes_lo (hd - hi channels), then norm [bt] (fp16)
//   each part padded to a multiple of 64 bytes.
// Invariants: hd a power of two; hi % 16 == 0 (tq_plus > 0 needs hd % 64 == 0); data_bytes
// == bt * (hi * hi_bits + (hd - hi) * bits) / 8. Codes are sign-magnitude: code = (x < 0)
// << (b - 1) | m, value = +-level[m].
//
// Stored levels sit on one grid of step 1 / kTurboGrid for every bit width: level[m] =
// round(magnitude[m] * kTurboGrid) / kTurboGrid, so a code's value is a signed byte over
// kTurboGrid and the integer attention kernels (AVX-512 VNNI) multiply codes exactly as the
// float kernels and the decoder do. The grid moves a level by at most 0.0108 and adds
// 1e-5 to 4e-5 to D(b) (Codebook::grid_distortion: under 0.4 %).
#pragma once

#include <array>
#include <cstdint>

#include "kv/codecs/codec_family.h"
#include "kv/format.h"

namespace slimkv::kv {

extern const CodecFamily kTurboFamily;

// Where the arrays of a tq part live (bytes from the part's start).
struct TurboLayout {
  int hi_channels = 0;
  int hi_bits = 0, lo_bits = 0;         // bits of the codebook codes
  size_t hi_offset = 0, lo_offset = 0;  // codes
  bool mean = false;
  size_t norm_offset = 0;  // fp16 per token
  size_t mean_offset = 0;  // fp16 per channel (mean keys)
  size_t data_bytes = 0, meta_bytes = 0;
};
TurboLayout MakeTurboLayout(const KvFormat& f, int block_tokens, int head_dim);

inline constexpr int kMaxTurboBits = 4;
// Levels are multiples of 1 / kTurboGrid: the largest, 4 bits' 2.7326, becomes 127.
inline constexpr float kTurboGrid = 127.0f / 2.7326f;

// Lloyd-Max quantizer of N(0, 1) with 2^bits levels, symmetric around 0.
struct Codebook {
  int bits = 0;
  std::array<float, 8> magnitude{};    // [2^(bits-1)] ascending positive levels (exact)
  std::array<int8_t, 8> level_code{};  // [2^(bits-1)] round(magnitude * kTurboGrid)
  std::array<float, 8> level{};        // [2^(bits-1)] level_code / kTurboGrid: what is stored
  std::array<float, 7> bound{};        // [2^(bits-1) - 1] decision thresholds between levels
  double distortion = 0;               // E[(X - Q(X))^2], X ~ N(0, 1), exact levels
  double grid_distortion = 0;          // the same with the stored levels and their bounds
};
// Iterates the centroid condition (each level the conditional mean of N(0, 1) between its
// thresholds, thresholds the midpoints) in double until the levels move less than 1e-13.
Codebook ComputeLloydMax(int bits);
// The codebooks for 1..4 bits, computed once.
const Codebook& LloydMaxGaussian(int bits);
// Value of a sign-magnitude code (a stored level), and the same times kTurboGrid (an
// integer in [-127, 127]).
float CodebookValue(const Codebook& cb, uint32_t code);
int CodebookGridValue(const Codebook& cb, uint32_t code);
// Code of u (in N(0, 1) units): the nearest level.
uint32_t CodebookCode(const Codebook& cb, float u);

}  // namespace slimkv::kv
