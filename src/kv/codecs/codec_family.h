// A codec family: the formats that share one byte layout and one set of kernels (floats,
// scalar integers, TurboQuant), and everything on the scalar side that knows their bytes —
// the names a spec uses, the layout of a block's K and V parts, the reference encoder and
// decoder, the error bound the tests derive tolerances from.
//
// A family lives in src/kv/codecs/<family>_codec.{h,cc} (this side) and <family>-inl.h (its
// SIMD kernels, codecs/kernels-inl.h); codecs/registry.cc lists the families. Nothing else
// in the cache switches on a format's element type: format.cc, codec.cc and the attention
// driver ask the family (docs/KV_FORMATS.md "Adding a KV format").
#pragma once

#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "base/status.h"
#include "kv/format.h"

namespace slimkv::kv {

struct CodecFamily {
  std::string_view id;          // "float", "int", "tq"
  std::string_view types;       // the type names of a spec, for error messages
  std::string_view options;     // the family's own options, for error messages ("" if none)
  bool always_rotated = false;  // the side is always Hadamard-rotated (no ":rot" in the name)

  bool (*owns)(ElemType type);
  // Sets the type and the family's defaults for one side from the first field of a spec
  // (`int4`, `q8_0`, `tq2.5`); false if the name is not one of the family's.
  bool (*parse_type)(std::string_view type, bool is_key, KvFormat* f);
  // Applies an option of the spec (`g32`, `sym`, `mean`, ...): Ok, an InvalidArgument that
  // says why it does not apply, or nullopt when the family has no such option.
  std::optional<Status> (*parse_option)(std::string_view option, std::string_view spec, bool is_key,
                                        KvFormat* f);
  std::string (*name)(const KvFormat& f);  // type and family options; ":rot", ":pre" are added
  int (*bits)(const KvFormat& f);          // bits per element of the codes (tq: the lower width)
  double (*nominal_bits)(const KvFormat& f);
  // The bytes of one side of a block of `bt` tokens (format.h: PartLayout).
  PartLayout (*layout)(const KvFormat& f, int bt, int hd, bool is_key);
  // InvalidArgument if the format cannot hold vectors of `hd` channels.
  Status (*check)(const KvFormat& f, int hd, bool is_key);
  // Whether a token can be encoded alone (no statistics over the block's tokens).
  bool (*by_token)(const KvFormat& f);
  // Reference codec (codec.h): one token into slot `slot` of a part, a whole part from
  // x [n][hd] token-major (the part was zeroed), one token back into out [hd].
  void (*encode_token)(const KvFormat& f, bool is_key, int bt, int hd, int slot, const float* x,
                       uint8_t* part);
  void (*encode_part)(const KvFormat& f, bool is_key, int bt, int hd, const float* x, int n, uint8_t* part);
  void (*decode_token)(const KvFormat& f, bool is_key, int bt, int hd, int slot, const uint8_t* part,
                       float* out);
  // Largest error on one element of a group whose finite values span [lo, hi] (INFINITY:
  // the family bounds vectors, not elements).
  float (*max_abs_error)(const KvFormat& f, float lo, float hi);
};

// The family of an element type (every ElemType has one).
const CodecFamily& FamilyOf(ElemType type);
inline const CodecFamily& FamilyOf(const KvFormat& f) { return FamilyOf(f.type); }
// Every family, in the order specs are tried.
std::span<const CodecFamily* const> CodecFamilies();

// fp16 metadata.
float GetHalf(const uint8_t* p, size_t i);
void PutHalf(uint8_t* p, size_t i, float x);

}  // namespace slimkv::kv
