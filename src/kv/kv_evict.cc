// Eviction: applying the policy to a sequence's streams. Token level while the
// prompt is read (staging blocks: tokens move losslessly), block level after it
// (blocks dropped or shortened by reference: a sealed token's bytes are never
// written again). (KvCache's methods are split over kv_cache.cc, kv_attend.cc,
// kv_evict.cc and kv_invariants.cc by concern.)
#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>
#include <numeric>

#include "base/check.h"
#include "base/int_math.h"
#include "kv/codec.h"
#include "kv/kv_cache.h"
#include "kv/policies/merge.h"

namespace slimkv::kv {

void KvCache::DecodeSlot(const BlockTable& t, int slot, float* k, float* v) const {
  const int bt = config_.block_tokens, hd = spec_.head_dim, b = slot / bt;
  const BlockKind& kind = store_.kind(t.sealed[b]);
  const uint8_t* block = BlockData(t, b);
  if (k) DecodeK(kind.k, bt, hd, slot % bt, block, k);
  if (v) DecodeV(kind.v, bt, hd, slot % bt, block + kind.v_offset, v);
}

void KvCache::RescoreMerged(int st, const ViewData& d, int first, std::span<const int> rows,
                            std::span<const float> values, TokenStats& ts) const {
  if (!evictor_->scores_value()) return;
  const size_t hd = spec_.head_dim;
  DCHECK(d.keys.size() == d.slots.size() * hd);  // Evict reads them for such a policy
  std::vector<float> v(hd);
  for (int r : rows) {
    std::copy_n(values.begin() + r * hd, hd, v.begin());
    if (config_.v.rotate) v_rot_[st].Inverse(v.data());  // OnAppend sees values unrotated
    ts.score[d.slots[first + r]] = evictor_->OnAppend(&d.keys[(first + r) * hd], v.data(), static_cast<int>(hd));
  }
}

void KvCache::AttentionKeys(const BlockTable& t, int st, std::span<const int> slots, float* keys) const {
  const int hd = spec_.head_dim, layer = st / spec_.n_kv_heads;
  std::vector<float> cs(std::max(1, spec_.rope_dim / 2)), sn(cs.size());
  for (size_t i = 0; i < slots.size(); ++i) {
    float* k = keys + i * hd;
    DecodeSlot(t, slots[i], k, nullptr);
    if (config_.k.rotate) k_rot_[st].Inverse(k);  // the domain queries live in
    if (config_.k.pre_rope) {                     // rotated by slot, as the kernel does
      ops::RopeAngles(slots[i], spec_.layer_inv_freq[layer], cs.data(), sn.data());
      ops::RopeApply(k, 1, hd, spec_.rope_dim, cs.data(), sn.data(), spec_.rope_style);
    }
  }
}

void KvCache::MakeView(const Sequence& s, int st, bool with_keys, ViewData* d) const {
  const int bt = config_.block_tokens, hd = spec_.head_dim;
  const BlockTable& t = s.tables[st];
  const TokenStats& ts = s.stats[st];
  d->slots.clear();
  d->block_of.clear();
  d->blocks.clear();
  for (int b = std::max(t.first_live, t.pinned); b < t.n_blocks(); ++b) {
    d->block_of.push_back(b);
    d->blocks.push_back({static_cast<int>(d->slots.size()), t.fill[b], b + 1 < t.n_blocks()});
    for (int i = 0; i < t.fill[b]; ++i) d->slots.push_back(b * bt + i);
  }
  const size_t n = d->slots.size();
  d->pos.resize(n);
  d->mass.resize(n);
  d->last_mass.resize(n);
  d->score.resize(n);
  for (size_t i = 0; i < n; ++i) {
    const int slot = d->slots[i];
    d->pos[i] = ts.pos[slot];
    d->mass[i] = ts.mass[slot];
    d->last_mass[i] = ts.last_mass[slot];
    d->score[i] = ts.score[slot];
  }
  d->keys.clear();
  if (with_keys) {
    d->keys.resize(n * hd);
    AttentionKeys(t, st, d->slots, d->keys.data());
  }
  StreamView& v = d->view;
  v = StreamView{};
  v.positions = d->pos;
  v.mass = d->mass;
  v.last_mass = d->last_mass;
  v.score = d->score;
  v.keys = d->keys;
  v.stats = &ts;
  v.head_dim = hd;
  v.protect_tail = 1;
}

void KvCache::Evict(Sequence& s, bool at_prompt_end) {
  const int bt = config_.block_tokens, H = spec_.n_kv_heads, L = spec_.n_layers;
  const bool token_level = s.prompt_open || at_prompt_end;
  // Keys as attention sees them: for the policy, for merging's similarity at block level, and
  // to score a merge receiver again under a policy that scores values (RescoreMerged).
  const bool keys = evictor_->wants_keys() || (policy_.merge && (!token_level || evictor_->scores_value()));
  std::vector<int> sts(H);
  std::vector<ViewData> views(H);
  std::vector<std::vector<int>> keeps;
  std::vector<BlockCut> cuts;
  for (int l = 0; l < L; ++l) {
    if (!PolicyLayer(l)) continue;
    const int budget = policy_.LayerBudget(l, L);
    // Own tokens a stream may hold before the policy acts.
    int64_t limit = budget + bt;
    if (token_level)
      limit = at_prompt_end ? budget : (policy_.kind == PolicyKind::kSnapKv ? INT_MAX : 2LL * budget);
    std::vector<int> over;
    int64_t total = 0;
    for (int h = 0; h < H; ++h) {
      const BlockTable& t = s.tables[l * H + h];
      const int own = t.HeldFrom(t.pinned);
      total += own;
      if (own > limit) over.push_back(l * H + h);
    }
    if (policy_.head_adaptive) {
      if (total <= limit * H) continue;
      over.resize(H);
      std::iota(over.begin(), over.end(), l * H);
    }
    for (size_t i = 0; i < over.size(); ++i) MakeView(s, over[i], keys, &views[i]);
    const std::span<ViewData> vd(views.data(), over.size());
    std::vector<StreamView> sv;
    for (const ViewData& d : vd) sv.push_back(d.view);
    if (token_level) {
      if (policy_.head_adaptive) {
        SelectTokensAcrossHeads(*evictor_, sv, budget, &keeps);
      } else {
        keeps.assign(over.size(), {});
        for (size_t i = 0; i < over.size(); ++i) SelectTokens(*evictor_, sv[i], budget, &keeps[i]);
      }
      CompactTokens(s, over, vd, keeps);
    } else {
      std::vector<std::vector<ViewBlock>> blocks;
      for (const ViewData& d : vd) blocks.push_back(d.blocks);
      SelectBlocks(*evictor_, sv, blocks, budget, policy_.head_adaptive, &cuts);
      CutBlocks(s, over, vd, cuts);
    }
  }
}

bool KvCache::MakePrivate(BlockTable& t, int b) {
  if (store_.RefCount(t.sealed[b], t.ids[b]) == 1) return true;
  std::vector<BlockId> fresh;
  if (!AllocateEvicting(t.sealed[b], 1, &fresh).ok()) return false;
  std::memcpy(store_.Data(t.sealed[b], fresh[0]), store_.Data(t.sealed[b], t.ids[b]),
              store_.pool(t.sealed[b]).block_bytes());
  store_.Release(t.sealed[b], t.ids[b]);
  t.ids[b] = fresh[0];
  return true;
}

void KvCache::CompactTokens(Sequence& s, std::span<const int> sts, std::span<ViewData> views,
                            const std::vector<std::vector<int>>& keeps) {
  const int bt = config_.block_tokens, hd = spec_.head_dim;
  const BlockKind& kind = store_.kind(false);
  for (size_t i = 0; i < sts.size(); ++i) {
    const int st = sts[i];
    BlockTable& t = s.tables[st];
    TokenStats& ts = s.stats[st];
    const ViewData& d = views[i];
    const int n = static_cast<int>(d.slots.size());
    if (static_cast<int>(keeps[i].size()) == n) continue;
    std::vector<uint8_t> kept(n, 0);
    for (int k : keeps[i]) kept[k] = 1;
    // Blocks before the first evicted token stay as they are (merging rewrites
    // every value).
    int first = 0;
    while (!policy_.merge && first < n && kept[first]) ++first;
    const int rb = d.slots[first] / bt;
    int r0 = first;
    while (r0 > 0 && d.slots[r0 - 1] >= rb * bt) --r0;
    // The region's tokens, decoded (staging formats: exact), merged when the
    // policy says so.
    const int rn = n - r0;
    std::vector<float> k(static_cast<size_t>(rn) * hd), v(k.size()), mass(rn);
    std::vector<uint8_t> rkept(kept.begin() + r0, kept.end());
    for (int j = 0; j < rn; ++j) {
      CHECK(!t.sealed[d.slots[r0 + j] / bt], "token-level eviction of a sealed block");
      DecodeSlot(t, d.slots[r0 + j], &k[static_cast<size_t>(j) * hd], &v[static_cast<size_t>(j) * hd]);
      mass[j] = ts.mass[d.slots[r0 + j]];
    }
    int merged = 0;
    if (policy_.merge) {
      merged = static_cast<int>(std::count(rkept.begin(), rkept.end(), 0));
      const std::vector<int> changed = MergeEvicted(hd, k, v, mass, rkept, rkept);
      RescoreMerged(st, d, r0, changed, v, ts);
    }
    // Kept tokens go densely, in their order.
    std::vector<int> dst(rn, -1);
    int m = 0, next = rb * bt;
    for (int r = 0; r < rn; ++r) {
      if (rkept[r]) dst[r] = next++, ++m;
    }
    const int nb = CeilDiv(next, bt) - rb;
    // Room for the rewritten blocks: free blocks, or the region's blocks nobody
    // else holds.
    bool released = false;
    auto release_region = [&] {
      for (int b = rb; b < t.n_blocks(); ++b) store_.Release(false, t.ids[b]);
      released = true;
    };
    if (!store_.Fits(false, nb)) {
      int sole = 0;
      for (int b = rb; b < t.n_blocks(); ++b) sole += store_.RefCount(false, t.ids[b]) == 1;
      if (store_.Fits(false, std::max(0, nb - sole))) release_region();
    }
    std::vector<BlockId> fresh;
    if (!AllocateEvicting(false, nb, &fresh).ok()) {
      CHECK(!released, "compaction freed less than it needs");
      ++s.deferred;  // the stream stays over its bound until room appears
      continue;
    }
    if (!released) release_region();
    // Statistics follow the tokens.
    std::vector<int32_t> rpos(rn);
    std::vector<float> rlast(rn), rscore(rn);
    for (int r = 0; r < rn; ++r) {
      const int src = d.slots[r0 + r];
      rpos[r] = ts.pos[src], rlast[r] = ts.last_mass[src], rscore[r] = ts.score[src];
    }
    if (policy_.recall) {  // the evicted tokens go to host memory, whole blocks of them
      std::vector<int> gone;
      for (int r = 0; r < rn; ++r)
        if (!rkept[r]) gone.push_back(r);
      OffloadTokens(s, st, gone, k.data(), v.data(), rpos, mass, rlast, rscore);
    }
    ts.Truncate(rb * bt);
    ts.Grow(next);
    t.ids.resize(rb);
    t.sealed.resize(rb);
    t.fill.resize(rb);
    if (!s.recall.empty()) {  // the digests of the rewritten blocks are stale
      RecallStream& rs = s.recall[st];
      rs.state.resize(std::min<size_t>(rs.state.size(), rb));
      rs.digest.resize(rs.state.size() * 2 * hd);
    }
    for (int b = 0; b < nb; ++b) t.Push(fresh[b], false);
    for (int r = 0; r < rn; ++r) {
      if (dst[r] < 0) continue;
      const int b = dst[r] / bt;
      uint8_t* block = store_.Data(false, t.ids[b]);
      EncodeKToken(kind.k, bt, hd, dst[r] % bt, &k[static_cast<size_t>(r) * hd], block);
      EncodeVToken(kind.v, bt, hd, dst[r] % bt, &v[static_cast<size_t>(r) * hd], block + kind.v_offset);
      ++t.fill[b];
      ts.pos[dst[r]] = rpos[r];
      ts.mass[dst[r]] = mass[r];
      ts.last_mass[dst[r]] = rlast[r];
      ts.score[dst[r]] = rscore[r];
    }
    t.slots = next;
    s.plain = std::min(s.plain, rb * bt);
    ++evict_stats_.compactions;
    evict_stats_.tokens_moved += m;
    evict_stats_.tokens_evicted += n - static_cast<int>(keeps[i].size());
    evict_stats_.merged += merged;
  }
}

void KvCache::CutBlocks(Sequence& s, std::span<const int> sts, std::span<ViewData> views,
                        const std::vector<BlockCut>& cuts) {
  const int bt = config_.block_tokens, hd = spec_.head_dim;
  for (size_t i = 0; i < sts.size(); ++i) {
    const int st = sts[i];
    BlockTable& t = s.tables[st];
    TokenStats& ts = s.stats[st];
    ViewData& d = views[i];
    std::vector<BlockCut> mine;
    for (const BlockCut& c : cuts)
      if (c.view == static_cast<int>(i)) mine.push_back(c);
    if (mine.empty()) continue;
    const int n = static_cast<int>(d.slots.size());
    std::vector<uint8_t> kept(n, 1);
    for (const BlockCut& c : mine) {
      const ViewBlock& vb = d.blocks[c.block];
      for (int j = c.keep; j < vb.n; ++j) kept[vb.first + j] = 0;
    }
    if (policy_.merge) {
      // Evicted values fold into kept ones; only the receivers' values are
      // written again.
      std::vector<float> v(static_cast<size_t>(n) * hd);
      for (int j = 0; j < n; ++j) DecodeSlot(t, d.slots[j], nullptr, &v[static_cast<size_t>(j) * hd]);
      const std::vector<int> changed = MergeEvicted(hd, d.keys, v, d.mass, kept, kept);
      evict_stats_.merged += std::count(kept.begin(), kept.end(), 0);
      std::vector<float> part(static_cast<size_t>(bt) * hd);
      std::vector<int> written;  // receivers whose new value is stored
      for (int r : changed) {
        const int slot = d.slots[r], b = slot / bt;
        ts.mass[slot] = d.mass[r];
        if (!MakePrivate(t, b)) continue;  // no room to copy a shared block: the value stays
        written.push_back(r);
        const BlockKind& kind = store_.kind(t.sealed[b]);
        uint8_t* vpart = store_.Data(t.sealed[b], t.ids[b]) + kind.v_offset;
        if (CanEncodeByToken(kind.v)) {
          EncodeVToken(kind.v, bt, hd, slot % bt, &v[static_cast<size_t>(r) * hd], vpart);
        } else {  // a value format with a per-block scale: the block's values
                  // are encoded again
          for (int j = 0; j < t.fill[b]; ++j)
            DecodeV(kind.v, bt, hd, j, vpart, &part[static_cast<size_t>(j) * hd]);
          std::copy_n(&v[static_cast<size_t>(r) * hd], hd, &part[static_cast<size_t>(slot % bt) * hd]);
          EncodeVPart(kind.v, bt, hd, part.data(), t.fill[b], vpart);
          if (t.sealed[b]) evict_stats_.sealed_reencoded += t.fill[b];
        }
      }
      RescoreMerged(st, d, 0, written, v, ts);
    }
    // Later blocks first, so erasing one does not move the others.
    for (auto c = mine.rbegin(); c != mine.rend(); ++c) {
      const int b = d.block_of[c->block];
      s.plain = std::min(s.plain, b * bt);
      if (c->keep == 0) {
        evict_stats_.tokens_evicted += t.fill[b];
        if (policy_.recall) OffloadBlock(s, st, b);
        store_.Release(t.sealed[b], t.ids[b]);
        EraseBlock(s, st, b);
        ++evict_stats_.blocks_dropped;
      } else {
        evict_stats_.tokens_evicted += t.fill[b] - c->keep;
        for (int j = c->keep; j < t.fill[b]; ++j) ts.pos[b * bt + j] = -1;
        t.fill[b] = static_cast<int16_t>(c->keep);
        ++evict_stats_.blocks_shortened;
      }
    }
    ++evict_stats_.block_passes;
  }
}

}  // namespace slimkv::kv
