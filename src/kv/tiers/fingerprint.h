// The fingerprint of a stored KV block: everything its bytes depend on besides
// the tokens.
//
// A block's bytes mean something only to a cache with the same model weights,
// the same K/V formats (final and staging), the same block size and head shape,
// the same byte layout of the codecs, and (for isolation, not meaning) the same
// tenant. The fingerprint hashes all of them (XXH3-128 of a canonical text);
// lower tiers namespace their keys by it and every stored record carries it, so
// a block written by another model, format or tenant is never found, and one
// that is found anyway (a renamed file) is rejected when read.
#pragma once

#include <cstdint>
#include <string>

#include "kv/format.h"
#include "kv/spec.h"

namespace slimkv::kv::tiers {

// Bumped whenever a codec's byte layout or the record format changes: stored
// blocks of an older layout are then simply never found.
inline constexpr int kLayoutVersion = 1;

struct Fingerprint {
  uint64_t lo = 0, hi = 0;
  bool operator==(const Fingerprint &) const = default;
  std::string Hex() const;  // 32 lowercase hex digits, hi first
};

struct FingerprintInputs {
  uint64_t model_id = 0;  // ModelIdentity (model/identity.h) of the weights file
  const KvSpec *spec = nullptr;
  const KvConfig *config = nullptr;
  uint64_t salt = 0;  // the tenant's cache salt (0: the shared, unsalted tenant)
};

// The canonical text the fingerprint hashes ("slimkv-kv v1; model ...; k
// int4:channel; ...").
std::string FingerprintText(const FingerprintInputs &in);
Fingerprint MakeFingerprint(const FingerprintInputs &in);

}  // namespace slimkv::kv::tiers
