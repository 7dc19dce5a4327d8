#include "kv/tiers/fingerprint.h"

#include <fmt/format.h>
#include <xxhash.h>

#include "base/check.h"
#include "kv/footprint.h"

namespace slimkv::kv::tiers {
namespace {

// Every field of a format, not only its name: two formats that print alike must
// still fingerprint apart if any field differs.
std::string FormatText(const KvFormat &f) {
  return fmt::format(
      "{} [type {} gran {} group {} sym {} ggml {} rot {} pre "
      "{} tq {}+{} mean {}]",
      FormatName(f), static_cast<int>(f.type), static_cast<int>(f.granularity), f.group, f.symmetric,
      f.ggml_rounding, f.rotate, f.pre_rope, f.tq_bits, f.tq_plus, f.tq_mean);
}

}  // namespace

std::string Fingerprint::Hex() const { return fmt::format("{:016x}{:016x}", hi, lo); }

std::string FingerprintText(const FingerprintInputs &in) {
  CHECK(in.spec && in.config, "fingerprint without a spec or a config");
  const KvSpec &s = *in.spec;
  const KvConfig &c = *in.config;
  std::string t = fmt::format("slimkv-kv v{}; model {:016x}; layers {} kv_heads {} head_dim {}",
                              kLayoutVersion, in.model_id, s.n_layers, s.n_kv_heads, s.head_dim);
  t += "; windows";
  for (int l = 0; l < s.n_layers; ++l) t += fmt::format(" {}", s.window(l));
  t += fmt::format("; rope {} style {}", s.rope_dim, static_cast<int>(s.rope_style));
  for (const auto &layer : s.layer_inv_freq) {
    t += ";";
    for (float f : layer) t += fmt::format(" {:a}", f);  // exact: hexadecimal floats
  }
  t += fmt::format("; k {}; v {}; staged {}", FormatText(c.k), FormatText(c.v), c.needs_staging());
  if (c.needs_staging())
    t += fmt::format("; staging k {}; staging v {}", FormatText(c.StagingK()), FormatText(c.StagingV()));
  t += fmt::format("; block_tokens {}; block bytes {} / {}", c.block_tokens, SealedBlockBytes(c, s.head_dim),
                   StagedBlockBytes(c, s.head_dim));
  t += fmt::format("; salt {:016x}", in.salt);
  return t;
}

Fingerprint MakeFingerprint(const FingerprintInputs &in) {
  const std::string t = FingerprintText(in);
  const XXH128_hash_t h = XXH3_128bits(t.data(), t.size());
  return Fingerprint{.lo = h.low64, .hi = h.high64};
}

}  // namespace slimkv::kv::tiers
