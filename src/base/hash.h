// SipHash-2-4 (Aumasson & Bernstein): a keyed 64-bit hash, the same in every process and on
// every machine for the same key. Used where hashes must be stable across processes and
// must not be steerable by request contents (prefix-cache block keys), never std::hash.
#pragma once

#include <cstddef>
#include <cstdint>

namespace slimkv {

struct SipKey {
  uint64_t k0 = 0x736c696d6b763031ull;  // "slimkv01"
  uint64_t k1 = 0x7072656669786b65ull;  // "prefixke"
};

uint64_t SipHash24(const void* data, size_t bytes, const SipKey& key = SipKey());

}  // namespace slimkv
