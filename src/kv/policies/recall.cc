#include "kv/policies/recall.h"

#include <algorithm>
#include <limits>

namespace slimkv::kv {

void KeyDigest(const float* keys, int n, int head_dim, float* lohi) {
  float* lo = lohi;
  float* hi = lohi + head_dim;
  std::copy_n(keys, head_dim, lo);
  std::copy_n(keys, head_dim, hi);
  for (int i = 1; i < n; ++i) {
    const float* k = keys + static_cast<size_t>(i) * head_dim;
    for (int c = 0; c < head_dim; ++c) {
      lo[c] = std::min(lo[c], k[c]);
      hi[c] = std::max(hi[c], k[c]);
    }
  }
}

float DigestBound(const float* q, int group, int head_dim, const float* lohi) {
  // Eight running sums (two SSE registers, one AVX register), so the compiler vectorizes the
  // channel loop: a single sum is a chain of dependent adds, and the cache ranks ~100 blocks
  // per stream and step with it.
  constexpr int kLanes = 8;
  const float* lo = lohi;
  const float* hi = lohi + head_dim;
  float best = -std::numeric_limits<float>::infinity();
  for (int g = 0; g < group; ++g) {
    const float* qg = q + static_cast<size_t>(g) * head_dim;
    float acc[kLanes] = {};
    int c = 0;
    for (; c + kLanes <= head_dim; c += kLanes) {
      for (int j = 0; j < kLanes; ++j) {
        const float a = qg[c + j] * lo[c + j], b = qg[c + j] * hi[c + j];
        acc[j] += a > b ? a : b;
      }
    }
    float sum = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (; c < head_dim; ++c) sum += std::max(qg[c] * lo[c], qg[c] * hi[c]);
    best = std::max(best, sum);
  }
  return best;
}

float DigestBoundReference(const float* q, int group, int head_dim, const float* lohi) {
  double best = -std::numeric_limits<double>::infinity();
  for (int g = 0; g < group; ++g) {
    double sum = 0;
    for (int c = 0; c < head_dim; ++c) {
      const double qc = q[static_cast<size_t>(g) * head_dim + c];
      sum += std::max(qc * lohi[c], qc * lohi[head_dim + c]);
    }
    best = std::max(best, sum);
  }
  return static_cast<float>(best);
}

}  // namespace slimkv::kv
