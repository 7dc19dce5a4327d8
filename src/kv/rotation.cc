#include "kv/rotation.h"

#include <cmath>

#include "base/check.h"

namespace slimkv::kv {
namespace {
// SplitMix64: a small, well-mixed generator that is the same on every platform.
uint64_t SplitMix(uint64_t& s) {
  uint64_t z = (s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
}  // namespace

void FastWalshHadamard(float* x, int n) {
  for (int len = 1; len < n; len <<= 1) {
    for (int i = 0; i < n; i += 2 * len) {
      for (int j = i; j < i + len; ++j) {
        const float a = x[j], b = x[j + len];
        x[j] = a + b;
        x[j + len] = a - b;
      }
    }
  }
}

Rotation::Rotation(int dim, uint64_t seed, int layer, int head) : signs_(dim) {
  CHECK(dim > 0 && (dim & (dim - 1)) == 0, "rotation dim {} is not a power of two", dim);
  uint64_t s = seed ^ (static_cast<uint64_t>(layer) << 32) ^ static_cast<uint64_t>(head) * 0x100000001B3ull;
  const float norm = 1.0f / std::sqrt(static_cast<float>(dim));
  for (int i = 0; i < dim; ++i) signs_[i] = (SplitMix(s) & 1) ? norm : -norm;
}

void Rotation::Apply(float* x) const {
  const int n = dim();
  for (int i = 0; i < n; ++i) x[i] *= signs_[i];
  FastWalshHadamard(x, n);
}

void Rotation::Inverse(float* x) const {
  const int n = dim();
  FastWalshHadamard(x, n);
  for (int i = 0; i < n; ++i) x[i] *= signs_[i];
}

}  // namespace slimkv::kv
