// KV storage formats and the byte layout of a block.
//
// A block holds `block_tokens` consecutive token slots of ONE stream (one layer, one KV
// head): first the K part, then the V part, each laid out by its side's format. Whatever the
// element type, K codes are channel-major and V codes token-major:
//
//   K part: codes [head_dim][block_tokens], then metadata
//   V part: codes [block_tokens][head_dim], then metadata
//
// so the score kernel multiplies one channel of 16 tokens (one vector) by a broadcast query
// element and the accumulate kernel adds p_t * v_t row by row, with no horizontal sums.
//
// Codes of a side are `bits` wide and packed in units of 16 bytes that hold 16 consecutive
// elements per (8 / bits) sub-vectors: element e of the flattened code array lives in unit
// e / (16 * 8/bits), byte e % 16, bits [(e / 16) % (8/bits) * bits, +bits). int3 uses bit
// planes instead: per 16 elements, 3 x 2 bytes (bit k of element j in byte 2k + j/8, bit j%8).
//
// Metadata (all fp16, counted in the bytes):
//   float types (f32, f16, bf16): none
//   fp8 (e4m3, e5m2):           one scale per part (per block)
//   int, per channel (K):       scale[head_dim], zero[head_dim] over the block's tokens
//   int, per token / group:     scale[tokens][groups], zero[tokens][groups] (group channels)
//   symmetric ints store no zero. x = scale * (code - offset) + zero, offset = 2^(bits-1)
//   for symmetric (codes are stored unsigned), 0 for asymmetric.
//
// TurboQuant (`tq`, ElemType::kTurbo, Granularity::kVector; turbo.h): per vector (one token
// of one stream), already rotated by the stream's randomized Hadamard rotation, the norm n
// and one code per coordinate from the Lloyd-Max codebook C of N(0, 1):
//   x[d] ~= n / sqrt(head_dim) * C[code[d]]
// Channels [0, hi) are coded with hi_bits = bits + 1, channels [hi, head_dim) with bits
// (hi = a quarter, half or three quarters of head_dim for fractional budgets, else 0).
// Codes are sign-magnitude: bit (b - 1) is the sign, the low bits index the magnitudes in
// ascending order. Part layouts (the code arrays use the packing above for their own
// width, each a whole number of 16-byte units):
//   K: codes_hi [hi][bt], codes_lo [hd - hi][bt], then norm [bt] (fp16), (mean) mean [hd] (fp16)
//   V: codes_hi [bt][hi], codes_lo [bt][hd - hi], then norm [bt] (fp16)
//
// Invariants: block_tokens % 16 == 0; head_dim % 16 == 0; group divides head_dim and is a
// multiple of 16; every part is a multiple of 64 bytes (parts start on cache lines).
// docs/KV_FORMATS.md mirrors this.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace slimkv::kv {

enum class ElemType { kF32, kF16, kBF16, kFp8E4M3, kFp8E5M2, kInt8, kInt4, kInt3, kInt2, kTurbo };

enum class Granularity {
  kNone,     // float types: no scale
  kBlock,    // fp8: one scale per part
  kChannel,  // int: per channel over the block's tokens (K in KIVI)
  kToken,    // int: per token, channel groups of `group` (group == head_dim: whole vector)
  kVector,   // turbo: per token, a norm and codes of the rotated vector from one fixed codebook
};

struct KvFormat {
  ElemType type = ElemType::kF16;
  Granularity granularity = Granularity::kNone;
  int group = 0;           // channels per scale group for kToken; 0 = the whole head
  bool symmetric = false;  // ints: scale only, no zero point
  bool ggml_rounding = false;  // llama.cpp's q8_0/q4_0 quantizer rules (symmetric, group 32)
  bool rotate = false;     // randomized Hadamard rotation of the side's vectors (and of q / the output)
  bool pre_rope = false;   // K only: keys stored before RoPE, rotated inside the score kernel
  // kTurbo: `tq_bits` bits per coordinate, `tq_plus` quarters of the channels one bit more
  // (tq2.5: tq_bits 2, tq_plus 2).
  int tq_bits = 0;
  int tq_plus = 0;
  // kTurbo keys (`:mean`): the mean of the block's keys is stored apart (fp16 [head_dim]) and
  // the codes hold k - mean; needs the whole block, so tokens are staged and sealed.
  bool tq_mean = false;

  bool operator==(const KvFormat&) const = default;
  int bits() const;          // bits per element (kTurbo: tq_bits, the nominal whole bits)
  double nominal_bits() const;  // bits per element before metadata (tq2.5: 2.5)
  bool is_float() const { return granularity == Granularity::kNone; }
  // Quantized formats need every token of a block (or its scale) before they can encode:
  // tokens are staged in high-precision blocks and sealed later.
  bool needs_staging() const { return !is_float(); }
  int group_size(int head_dim) const { return group > 0 ? group : head_dim; }
};

// "int4:channel", "int4:g32:sym:rot", "f16", "q4_0", "tq2.5", ...
std::string FormatName(const KvFormat& f);
// Parses one side's spec: TYPE[:OPTION...]. Types: f32, f16, bf16, fp8 (= fp8e4m3),
// fp8e4m3, fp8e5m2, int8, int4, int3, int2, q8_0, q4_0, tqB[.F] (B = 1..4 bits, F = 25, 5,
// 75: that fraction of the channels one bit more, B + 1 <= 4). Options: channel, token, g32,
// g64, g128, sym, asym, rot, pre (K only), mean (tq keys only). Errors list the valid choices.
Result<KvFormat> ParseFormat(std::string_view spec, bool is_key);

struct KvConfig {
  KvFormat k, v;
  int block_tokens = 32;
  // Most recent tokens kept in the staging (high-precision) format before sealing; a
  // multiple of block_tokens. Only formats that need staging use it.
  int residual = 0;

  // Tokens go through staging blocks unless both sides can be encoded token by token and no
  // residual window is asked for (then the cache writes the final format directly, and even
  // the step's own tokens are attended to in that format, as llama.cpp does).
  bool needs_staging() const;
  // The staging format: f32 when both sides are f32, f16 otherwise.
  KvFormat StagingK() const;
  KvFormat StagingV() const;
};

// A named combination of K and V formats; the error lists the presets.
Result<KvConfig> ParsePreset(std::string_view name);
std::string PresetList();
std::vector<std::string> PresetNames();
// Preset, then optional free-form sides and residual (`--kv-k`, `--kv-v`, `--kv-residual`);
// checks the combination (head_dim is checked when the cache is created).
Result<KvConfig> MakeConfig(std::string_view preset, std::string_view k_spec,
                            std::string_view v_spec, int residual);
std::string ConfigName(const KvConfig& c);  // "K int4:channel, V int4:token, residual 128"

// Bytes of one side of a block.
struct PartLayout {
  size_t data_bytes = 0;  // the codes
  size_t meta_bytes = 0;  // scales, zero points
  size_t code_offset = 0; // 0: codes first
  size_t meta_offset = 0; // where the metadata starts
  size_t total() const;   // rounded up to 64
};
PartLayout KLayout(const KvFormat& f, int block_tokens, int head_dim);
PartLayout VLayout(const KvFormat& f, int block_tokens, int head_dim);
// InvalidArgument if the format cannot hold vectors of head_dim (group, rotation).
Status CheckFormat(const KvFormat& f, int head_dim, bool is_key);

// Where the arrays of a kTurbo part live (bytes from the part's start); see the top of
// this file. Channels [0, hi_channels) have hi_bits, the others lo_bits.
struct TurboLayout {
  int hi_channels = 0;
  int hi_bits = 0, lo_bits = 0;  // bits of the codebook codes
  size_t hi_offset = 0, lo_offset = 0;  // codes
  bool mean = false;
  size_t norm_offset = 0;  // fp16 per token
  size_t mean_offset = 0;  // fp16 per channel (mean keys)
  size_t data_bytes = 0, meta_bytes = 0;
};
TurboLayout MakeTurboLayout(const KvFormat& f, int block_tokens, int head_dim);

// True bits per element of a configuration, metadata included (bytes of a full block of
// K and V, padding excluded, x 8 / (2 x block_tokens x head_dim)).
double BitsPerElement(const KvConfig& c, int head_dim);

}  // namespace slimkv::kv
