#include "kv/policies/select.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace slimkv::kv {
namespace {

// Scores divided by their mean magnitude, so heads compare on one scale
// (Ada-KV).
void Normalise(std::vector<float>* score) {
  double sum = 0;
  for (float x : *score) sum += std::abs(x);
  if (!(sum > 0)) return;
  const float f = static_cast<float>(score->size() / sum);
  for (float& x : *score) x *= f;
}

// Tokens of a view in the order they are kept: the step's own tokens, the
// sinks, the recent window from the newest back; `rest` gets the others.
void Fixed(const EvictionPolicy& p, const StreamView& v, int budget, std::vector<int>* fixed,
           std::vector<int>* rest) {
  const int n = v.size();
  std::vector<uint8_t> seen(n, 0);
  fixed->clear();
  auto take = [&](int i) {
    if (i >= 0 && i < n && !seen[i]) seen[i] = 1, fixed->push_back(i);
  };
  for (int i = n - 1; i >= std::max(0, n - v.protect_tail); --i) take(i);
  for (int i = 0; i < std::min(n, p.sinks()); ++i) take(i);
  for (int i = n - 1; i >= std::max(0, n - p.recent(budget)); --i) take(i);
  rest->clear();
  for (int i = 0; i < n; ++i)
    if (!seen[i]) rest->push_back(i);
}

}  // namespace

void SelectTokens(const EvictionPolicy& p, const StreamView& v, int budget, std::vector<int>* keep) {
  const int n = v.size();
  keep->clear();
  if (n <= budget) {
    keep->resize(n);
    std::iota(keep->begin(), keep->end(), 0);
    return;
  }
  std::vector<int> fixed, rest;
  Fixed(p, v, budget, &fixed, &rest);
  if (static_cast<int>(fixed.size()) > budget) fixed.resize(budget);
  if (static_cast<int>(fixed.size()) < budget) {
    std::vector<float> score;
    p.Score(v, &score);
    std::stable_sort(rest.begin(), rest.end(), [&](int a, int b) { return score[a] > score[b]; });
    rest.resize(std::min<size_t>(rest.size(), budget - fixed.size()));
    fixed.insert(fixed.end(), rest.begin(), rest.end());
  }
  *keep = std::move(fixed);
  std::sort(keep->begin(), keep->end());
}

void SelectTokensAcrossHeads(const EvictionPolicy& p, std::span<const StreamView> views, int budget,
                             std::vector<std::vector<int>>* keeps) {
  const int H = static_cast<int>(views.size());
  keeps->assign(H, {});
  struct Cand {
    float score;
    int head, token;
  };
  std::vector<Cand> cand;
  int taken = 0;
  for (int h = 0; h < H; ++h) {
    std::vector<int> fixed, rest;
    Fixed(p, views[h], budget, &fixed, &rest);
    if (static_cast<int>(fixed.size()) > budget) fixed.resize(budget);
    (*keeps)[h] = fixed;
    taken += static_cast<int>(fixed.size());
    std::vector<float> score;
    p.Score(views[h], &score);
    Normalise(&score);
    for (int t : rest) cand.push_back({score[t], h, t});
  }
  std::stable_sort(cand.begin(), cand.end(), [](const Cand& a, const Cand& b) { return a.score > b.score; });
  for (const Cand& c : cand) {
    if (taken >= budget * H) break;
    (*keeps)[c.head].push_back(c.token);
    ++taken;
  }
  for (auto& k : *keeps) std::sort(k.begin(), k.end());
}

void SelectBlocks(const EvictionPolicy& p, std::span<const StreamView> views,
                  std::span<const std::vector<ViewBlock>> blocks, int budget, bool across_heads,
                  std::vector<BlockCut>* cuts) {
  struct Unit {
    float score;
    int view, block, keep, size;
  };
  std::vector<Unit> units;
  std::vector<int> held(views.size(), 0);
  for (size_t vi = 0; vi < views.size(); ++vi) {
    const StreamView& v = views[vi];
    held[vi] = v.size();
    std::vector<uint8_t> must;
    p.MustKeep(v, budget, &must);
    std::vector<float> score;
    p.Score(v, &score);
    if (across_heads) Normalise(&score);
    for (size_t b = 0; b < blocks[vi].size(); ++b) {
      const ViewBlock& vb = blocks[vi][b];
      if (!vb.closed || vb.n == 0) continue;
      // The tokens the policy must keep have to be the block's first ones
      // (sinks); the rest may leave.
      int keep = 0;
      while (keep < vb.n && must[vb.first + keep]) ++keep;
      bool ok = keep < vb.n;
      for (int i = keep; ok && i < vb.n; ++i) ok = !must[vb.first + i];
      if (!ok) continue;
      double s = 0;
      for (int i = keep; i < vb.n; ++i) s += score[vb.first + i];
      units.push_back({static_cast<float>(s / (vb.n - keep)), static_cast<int>(vi), static_cast<int>(b), keep,
                       vb.n - keep});
    }
  }
  std::stable_sort(units.begin(), units.end(),
                   [](const Unit& a, const Unit& b) { return a.score < b.score; });
  cuts->clear();
  int total = std::accumulate(held.begin(), held.end(), 0);
  const int total_budget = budget * static_cast<int>(views.size());
  for (const Unit& u : units) {
    if (across_heads) {
      if (total - u.size < total_budget) continue;
      total -= u.size;
    } else {
      if (held[u.view] - u.size < budget) continue;
    }
    held[u.view] -= u.size;
    cuts->push_back({u.view, u.block, u.keep});
  }
  std::sort(cuts->begin(), cuts->end(), [](const BlockCut& a, const BlockCut& b) {
    return a.view != b.view ? a.view < b.view : a.block < b.block;
  });
}

}  // namespace slimkv::kv
