// KV storage formats: one side's format (KvFormat), a K/V pair with its block size and
// residual window (KvConfig), the named presets, and the bytes of a block.
//
// A block holds `block_tokens` consecutive token slots of ONE stream (one layer, one KV
// head): first the K part, then the V part, each laid out by its side's format and padded
// to 64 bytes (parts start on cache lines). A format belongs to one codec family
// (codecs/codec_family.h: float, int, tq), whose header gives the byte layout of its parts;
// docs/KV_FORMATS.md mirrors them. Invariants for every format: block_tokens % 16 == 0,
// head_dim % 16 == 0, every part a multiple of 64 bytes.
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
  int group = 0;               // channels per scale group for kToken; 0 = the whole head
  bool symmetric = false;      // ints: scale only, no zero point
  bool ggml_rounding = false;  // llama.cpp's q8_0/q4_0 quantizer rules (symmetric, group 32)
  bool rotate = false;         // randomized Hadamard rotation of the side's vectors (and of q / the output)
  bool pre_rope = false;       // K only: keys stored before RoPE, rotated inside the score kernel
  // kTurbo: `tq_bits` bits per coordinate, `tq_plus` quarters of the channels one bit more
  // (tq2.5: tq_bits 2, tq_plus 2).
  int tq_bits = 0;
  int tq_plus = 0;
  // kTurbo keys (`:mean`): the mean of the block's keys is stored apart (fp16 [head_dim]) and
  // the codes hold k - mean; needs the whole block, so tokens are staged and sealed.
  bool tq_mean = false;

  bool operator==(const KvFormat&) const = default;
  int bits() const;             // bits per element of the codes (kTurbo: tq_bits, the lower width)
  double nominal_bits() const;  // bits per element before metadata (tq2.5: 2.5)
  bool is_float() const { return granularity == Granularity::kNone; }
  // Quantized formats need every token of a block (or its scale) before they can encode:
  // tokens are staged in high-precision blocks and sealed later.
  bool needs_staging() const { return !is_float(); }
  int group_size(int head_dim) const { return group > 0 ? group : head_dim; }
};

// "int4:channel", "int4:g32:sym:rot", "f16", "q4_0", "tq2.5", ...
std::string FormatName(const KvFormat& f);
// Parses one side's spec: TYPE[:OPTION...]. Types (by family): f32, f16, bf16, fp8 (=
// fp8e4m3), fp8e4m3, fp8e5m2; int8, int4, int3, int2, q8_0, q4_0; tqB[.F] (B = 1..4 bits,
// F = 25, 5, 75: that fraction of the channels one bit more, B + 1 <= 4). Options of every
// format: rot, pre (K only); of the int family: channel, token, g32, g64, g128, sym, asym;
// of tq: mean (keys only). Errors list the valid choices.
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
Result<KvConfig> MakeConfig(std::string_view preset, std::string_view k_spec, std::string_view v_spec,
                            int residual);
std::string ConfigName(const KvConfig& c);  // "K int4:channel, V int4:token, residual 128"

// Bytes of one side of a block: codes first, then metadata.
struct PartLayout {
  size_t data_bytes = 0;   // the codes
  size_t meta_bytes = 0;   // scales, zero points, norms
  size_t meta_offset = 0;  // where the metadata starts (bytes from the part's start)
  size_t total() const;    // rounded up to 64
};
PartLayout KLayout(const KvFormat& f, int block_tokens, int head_dim);
PartLayout VLayout(const KvFormat& f, int block_tokens, int head_dim);
// InvalidArgument if the format cannot hold vectors of head_dim (group, rotation).
Status CheckFormat(const KvFormat& f, int head_dim, bool is_key);

// True bits per element of a configuration, metadata included (bytes of a full block of
// K and V, padding excluded, x 8 / (2 x block_tokens x head_dim)).
double BitsPerElement(const KvConfig& c, int head_dim);

}  // namespace slimkv::kv
