// Eviction: applying the policy to a sequence's streams and compacting them.
// (KvCache's methods are split over kv_cache.cc, kv_prefix.cc and kv_evict.cc by concern.)
#include <algorithm>
#include <cmath>
#include <limits>

#include "base/check.h"
#include "base/int_math.h"
#include "kv/codec.h"
#include "kv/kv_cache.h"

namespace slimkv::kv {

void KvCache::UpdateQueryStats(Sequence& s, int layer, const float* q, int64_t ldq, int n_tokens) {
  // Exponential moving moments of the recent queries of each KV head's group (post-RoPE),
  // for the Expected Attention score: a short memory, since future queries resemble recent ones.
  const int H = spec_.n_kv_heads, G = spec_.group_size(), hd = spec_.head_dim;
  for (int i = 0; i < n_tokens; ++i) {
    const double a = std::max(1.0 / static_cast<double>(s.q_count + 1 + i), 1.0 / 64.0);
    for (int h = 0; h < H; ++h) {
      auto& mean = s.q_mean[layer * H + h];
      auto& sq = s.q_sq[layer * H + h];
      for (int g = 0; g < G; ++g) {
        const float* x = q + i * ldq + (h * G + g) * hd;
        const double w = a / G;
        for (int d = 0; d < hd; ++d) {
          mean[d] = static_cast<float>((1 - w) * mean[d] + w * x[d]);
          sq[d] = static_cast<float>((1 - w) * sq[d] + w * x[d] * x[d]);
        }
      }
    }
  }
  if (layer == spec_.n_layers - 1) s.q_count += n_tokens;
}

void KvCache::Compress(SeqId id) {
  if (!policy_.active()) return;
  Sequence& s = Seq(id);
  Evict(s, 0);
  if (!staged_only()) Seal(s);
}

void KvCache::Evict(Sequence& s, int slack) {
  const int bt = config_.block_tokens, H = spec_.n_kv_heads, hd = spec_.head_dim;
  std::vector<int> keep;
  std::vector<float> k, v;
  for (int l = 0; l < spec_.n_layers; ++l) {
    const int budget = policy_.LayerBudget(l, spec_.n_layers);
    bool over = false;
    for (int h = 0; h < H; ++h) {
      const int st = l * H + h;
      over |= s.slots[st] - s.first_live[st] * bt > budget + slack;
    }
    if (!over) continue;
    // Per-slot views of each head's live tokens [first_live * bt, slots).
    auto view = [&](int st, std::vector<float>* expected) {
      const int first = s.first_live[st] * bt, n = s.slots[st] - first;
      StreamView v;
      v.positions = std::span<const int32_t>(s.pos[st]).subspan(first, n);
      v.mass = std::span<const float>(s.mass[st]).subspan(first, n);
      v.last_mass = std::span<const float>(s.last_mass[st]).subspan(first, n);
      v.score = std::span<const float>(s.score[st]).subspan(first, n);
      v.protect_tail = 1;
      if (policy_.kind == PolicyKind::kExpected) {
        // log E[exp(q.k * c)] for q ~ N(mean, diag(var)): c mean.k + c^2/2 sum var_d k_d^2.
        const float c = 1.0f / std::sqrt(static_cast<float>(hd));
        k.resize(static_cast<size_t>(n) * hd);
        v.score = {};
        std::vector<float> vv(static_cast<size_t>(n) * hd);
        const Status st_read = ReadTokensOf(s, st, first, n, k.data(), vv.data());
        CHECK(st_read.ok(), "{}", st_read.message());
        expected->assign(n, 0.0f);
        for (int t = 0; t < n; ++t) {
          double e = 0;
          for (int d = 0; d < hd; ++d) {
            const double kd = k[static_cast<size_t>(t) * hd + d];
            const double var = std::max(0.0, static_cast<double>(s.q_sq[st][d]) - static_cast<double>(s.q_mean[st][d]) * s.q_mean[st][d]);
            e += c * s.q_mean[st][d] * kd + 0.5 * c * c * var * kd * kd;
          }
          (*expected)[t] = static_cast<float>(e);
        }
        v.score = *expected;
      }
      return v;
    };
    if (policy_.head_adaptive) {
      // Ada-KV: the layer's H * budget slots go to the highest-scoring tokens of any head,
      // after each head keeps what the policy always keeps (its recent tokens).
      std::vector<std::vector<float>> expected(H), scores(H);
      std::vector<std::vector<int>> keeps(H);
      struct Cand { float score; int head, slot; };
      std::vector<Cand> cand;
      int taken = 0;
      for (int h = 0; h < H; ++h) {
        const int st = l * H + h;
        const StreamView v = view(st, &expected[h]);
        const int n = static_cast<int>(v.positions.size());
        const int recent = std::min(n, policy_.recent > 0 ? policy_.recent : std::max(1, budget / 8));
        ScoreTokens(policy_, v, &scores[h]);
        // Normalise per head so heads with larger raw scores do not take everything.
        double sum = 0;
        for (float x : scores[h]) sum += std::abs(x);
        const float norm = sum > 0 ? static_cast<float>(n / sum) : 1.0f;
        for (int t = 0; t < n; ++t) {
          if (t >= n - recent) {
            keeps[h].push_back(t);
            ++taken;
          } else {
            cand.push_back({scores[h][t] * norm, h, t});
          }
        }
      }
      std::sort(cand.begin(), cand.end(), [](const Cand& a, const Cand& b) { return a.score > b.score; });
      for (const Cand& c : cand) {
        if (taken >= budget * H) break;
        keeps[c.head].push_back(c.slot);
        ++taken;
      }
      for (int h = 0; h < H; ++h) {
        std::sort(keeps[h].begin(), keeps[h].end());
        const int st = l * H + h;
        if (static_cast<int>(keeps[h].size()) < s.slots[st] - s.first_live[st] * bt) Compact(s, st, keeps[h]);
      }
      continue;
    }
    for (int h = 0; h < H; ++h) {
      const int st = l * H + h;
      if (s.slots[st] - s.first_live[st] * bt <= budget + slack) continue;
      std::vector<float> expected;
      Select(policy_, view(st, &expected), budget, &keep);
      Compact(s, st, keep);
    }
  }
  s.next_pos = policy_.reindexes() ? s.slots[0] : s.length;
}

void KvCache::Compact(Sequence& s, int st, const std::vector<int>& keep) {
  const int bt = config_.block_tokens, hd = spec_.head_dim;
  const int first = s.first_live[st] * bt, n = s.slots[st] - first, m = static_cast<int>(keep.size());
  std::vector<float> k(static_cast<size_t>(n) * hd), v(static_cast<size_t>(n) * hd);
  const Status st_read = ReadTokensOf(s, st, first, n, k.data(), v.data());
  CHECK(st_read.ok(), "{}", st_read.message());
  std::vector<char> kept(n, 0);
  for (int i : keep) kept[i] = 1;
  auto& pos = s.pos[st];
  auto& mass = s.mass[st];
  if (policy_.merge) {
    // Each evicted token's value joins its most similar kept token (key cosine), weighted by
    // attention mass: what it contributed is folded in, not lost.
    std::vector<float> norm(n);
    for (int t = 0; t < n; ++t) {
      double x = 0;
      for (int d = 0; d < hd; ++d) x += static_cast<double>(k[t * hd + d]) * k[t * hd + d];
      norm[t] = static_cast<float>(std::sqrt(x)) + 1e-12f;
    }
    for (int e = 0; e < n; ++e) {
      if (kept[e]) continue;
      int best = -1;
      double best_cos = -2;
      for (int j : keep) {
        double dot = 0;
        for (int d = 0; d < hd; ++d) dot += static_cast<double>(k[e * hd + d]) * k[j * hd + d];
        const double c = dot / (norm[e] * norm[j]);
        if (c > best_cos) best_cos = c, best = j;
      }
      if (best < 0) continue;
      const float we = std::max(mass[first + e], 1e-6f), wj = std::max(mass[first + best], 1e-6f);
      for (int d = 0; d < hd; ++d) v[best * hd + d] = (wj * v[best * hd + d] + we * v[e * hd + d]) / (wj + we);
      mass[first + best] += mass[first + e];
    }
  }
  // New positions: the slot for re-indexing policies (keys re-rotated by the difference),
  // the original one otherwise.
  std::vector<int32_t> new_pos(m);
  const int layer = st / spec_.n_kv_heads;
  for (int i = 0; i < m; ++i) {
    const int t = keep[i];
    new_pos[i] = policy_.reindexes() ? i : pos[first + t];
    const int delta = new_pos[i] - pos[first + t];
    if (delta != 0 && !config_.k.pre_rope && spec_.rope_dim > 0) {
      float* key = &k[static_cast<size_t>(t) * hd];
      if (config_.k.rotate) k_rot_[st].Inverse(key);  // RoPE acts on the unrotated key
      std::vector<float> cs(spec_.rope_dim / 2), sn(spec_.rope_dim / 2);
      ops::RopeAngles(delta, spec_.layer_inv_freq[layer], cs.data(), sn.data());
      ops::RopeApply(key, 1, hd, spec_.rope_dim, cs.data(), sn.data(), spec_.rope_style);
      if (config_.k.rotate) k_rot_[st].Apply(key);
    }
  }
  // Release the old blocks and write the kept tokens back: full blocks older than the
  // residual window straight into the sealed format, the rest into staging blocks.
  auto& table = s.tables[st];
  for (int b = s.first_live[st]; b < static_cast<int>(table.size()); ++b) {
    if (table[b] == kNoBlock) continue;
    (!staged_only() && b < s.n_sealed[st] ? sealed_pool_ : staged_pool_).Release(table[b]);
  }
  table.clear();
  s.first_live[st] = 0;
  const int n_blocks = CeilDiv(m, bt);
  const int n_sealed = staged_only() ? 0 : std::max(0, m - config_.residual) / bt;
  std::vector<BlockId> ids;
  std::vector<float> kb(static_cast<size_t>(bt) * hd), vb(static_cast<size_t>(bt) * hd);
  for (int b = 0; b < n_blocks; ++b) {
    const bool sealed = b < n_sealed;
    ids.clear();
    const Status st_alloc = AllocateEvicting(sealed ? sealed_pool_ : staged_pool_, 1, &ids);
    CHECK(st_alloc.ok(), "compaction needs no more memory than it frees: {}", st_alloc.message());
    uint8_t* block = (sealed ? sealed_pool_ : staged_pool_).Data(ids[0]);
    const int cnt = std::min(bt, m - b * bt);
    for (int i = 0; i < cnt; ++i) {
      std::copy_n(&k[static_cast<size_t>(keep[b * bt + i]) * hd], hd, &kb[static_cast<size_t>(i) * hd]);
      std::copy_n(&v[static_cast<size_t>(keep[b * bt + i]) * hd], hd, &vb[static_cast<size_t>(i) * hd]);
    }
    const BlockKind& kind = sealed ? sealed_ : staged_;
    if (sealed) {
      EncodeKPart(kind.k, bt, hd, kb.data(), cnt, block);
      EncodeVPart(kind.v, bt, hd, vb.data(), cnt, block + kind.v_offset);
    } else {
      for (int i = 0; i < cnt; ++i) {
        EncodeKToken(kind.k, bt, hd, i, &kb[static_cast<size_t>(i) * hd], block);
        EncodeVToken(kind.v, bt, hd, i, &vb[static_cast<size_t>(i) * hd], block + kind.v_offset);
      }
    }
    table.push_back(ids[0]);
  }
  s.n_sealed[st] = n_sealed;
  // Metadata follows the tokens.
  auto squeeze = [&](auto& arr) {
    std::decay_t<decltype(arr)> out(m);
    for (int i = 0; i < m; ++i) out[i] = arr[first + keep[i]];
    arr = std::move(out);
  };
  squeeze(s.mass[st]);
  squeeze(s.last_mass[st]);
  squeeze(s.score[st]);
  pos = std::move(new_pos);
  s.slots[st] = m;
}

}  // namespace slimkv::kv
