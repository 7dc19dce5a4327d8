// Randomized Hadamard rotation of head vectors: x -> H (s . x) / sqrt(d), with s a fixed
// random sign vector per (layer, KV head) and H the d x d Walsh-Hadamard matrix (d a power
// of two). Orthogonal, so rotating both a key and the query leaves their dot product
// unchanged; it spreads outlier channels over all coordinates before quantization.
// Applied in O(d log d) by the fast Walsh-Hadamard transform.
#pragma once

#include <cstdint>
#include <vector>

namespace slimkv::kv {

class Rotation {
 public:
  Rotation() = default;
  // Signs from a fixed seed mixed with (layer, head): the same stream always gets the same
  // rotation, in every process.
  Rotation(int dim, uint64_t seed, int layer, int head);

  int dim() const { return static_cast<int>(signs_.size()); }
  void Apply(float* x) const;    // x <- R x
  void Inverse(float* x) const;  // x <- R^T x

 private:
  std::vector<float> signs_;  // +-1 / sqrt(d) folded in on the way out
};

// In-place unnormalised fast Walsh-Hadamard transform of n (a power of two) values.
void FastWalshHadamard(float* x, int n);

}  // namespace slimkv::kv
