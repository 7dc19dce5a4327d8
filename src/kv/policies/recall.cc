#include "kv/policies/recall.h"

#include <algorithm>
#include <limits>
#include <numeric>

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

// Compiled for AVX-512, AVX2 and the baseline, chosen at load time (as bandwidth.cc's probe).
__attribute__((target_clones("avx512f", "avx2", "default"))) float DigestBound(const float* q, int group,
                                                                               int head_dim,
                                                                               const float* lohi) {
  // Sixteen running sums (one AVX-512 register), so the compiler vectorizes the channel loop:
  // a single sum is a chain of dependent adds, and the cache ranks ~100 blocks per stream and
  // step with it.
  constexpr int kLanes = 16;
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
    float sum = 0;
    for (int j = 0; j < kLanes; ++j) sum += acc[j];
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

std::vector<int> ChooseVictims(std::span<const float> bound, std::span<const float> value, int fetch,
                               int n_wanted) {
  const int nh = static_cast<int>(value.size());
  std::vector<int> least(nh);
  std::iota(least.begin(), least.end(), 0);
  std::stable_sort(least.begin(), least.end(), [&](int a, int b) { return value[a] < value[b]; });
  std::vector<int> victims;
  // Wanted blocks come best first, so a held block skipped for one is skipped for the rest.
  for (int i = 0, c = 0; i < std::min(fetch, n_wanted); ++i) {
    while (c < nh && bound[least[c]] >= bound[nh + i]) ++c;
    if (c == nh) break;
    victims.push_back(least[c++]);
  }
  return victims;
}

}  // namespace slimkv::kv
