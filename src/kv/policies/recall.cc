#include "kv/policies/recall.h"

#include <algorithm>
#include <cstdlib>
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
  float best = -std::numeric_limits<float>::infinity();
  for (int g = 0; g < group; ++g) {
    const float* qg = q + static_cast<size_t>(g) * head_dim;
    float sum = 0;
    static const float w = getenv("RW") ? atof(getenv("RW")) : 1.0f;
    for (int c = 0; c < head_dim; ++c) {
      const float mid = 0.5f * qg[c] * (lohi[c] + lohi[head_dim + c]);
      sum += mid + w * (std::max(qg[c] * lohi[c], qg[c] * lohi[head_dim + c]) - mid);
    }
    best = std::max(best, sum);
  }
  return best;
}

}  // namespace slimkv::kv
