// KvCache::CheckInvariants: pools, tables and reference counts agree; streams
// without a policy hold what the footprint rule says; streams with one stay
// within its bounds. (KvCache's methods are split over kv_cache.cc,
// kv_attend.cc, kv_evict.cc and kv_invariants.cc by concern.)
#include <algorithm>

#include "base/check.h"
#include "base/int_math.h"
#include "kv/kv_cache.h"

namespace slimkv::kv {

void KvCache::CheckInvariants() const {
  store_.CheckInvariants();
  const int bt = config_.block_tokens, H = spec_.n_kv_heads;
  std::vector<int> refs[2] = {std::vector<int>(store_.pool(false).capacity(), 0),
                              std::vector<int>(staged_only() ? 0 : store_.pool(true).capacity(), 0)};
  for (size_t i = 0; i < seqs_.size(); ++i) {
    const Sequence& s = seqs_[i];
    if (!s.live) continue;
    CHECK(static_cast<int>(s.tables.size()) == streams());
    CHECK(s.plain <= s.length && s.attached <= s.length, "sequence {}: plain {} attached {} of {} tokens", i,
          s.plain, s.attached, s.length);
    bool at_rule = true, any_policy = false;
    for (int st = 0; st < streams(); ++st) {
      const BlockTable& t = s.tables[st];
      const int n = t.n_blocks();
      CHECK(static_cast<int>(t.sealed.size()) == n && static_cast<int>(t.fill.size()) == n);
      CHECK(n == CeilDiv(t.slots + s.pending, bt), "stream {}: {} blocks for {} slots + {} in flight", st, n,
            t.slots, s.pending);
      CHECK(t.Held() <= s.length, "stream {} holds {} tokens of {}", st, t.Held(), s.length);
      const int committed = CeilDiv(t.slots, bt);
      for (int b = 0; b < n; ++b) {
        CHECK((b < t.first_live) == (t.ids[b] == kNoBlock), "stream {} block {}: freed/live mismatch", st, b);
        CHECK(t.fill[b] >= 0 && t.fill[b] <= bt, "stream {} block {}: fill {}", st, b, t.fill[b]);
        if (b + 1 < committed)
          CHECK(t.fill[b] == bt || PolicyStream(st), "stream {} block {} not full", st, b);
        if (t.ids[b] == kNoBlock) continue;
        CHECK(!t.sealed[b] || (!staged_only() && t.fill[b] > 0), "stream {} block {}: bad sealed block", st,
              b);
        ++refs[t.sealed[b] && !staged_only()][t.ids[b]];
      }
      if (committed > 0) {
        CHECK(t.slots == (committed - 1) * bt + t.fill[committed - 1],
              "stream {}: {} slots, last block holds {}", st, t.slots, t.fill[committed - 1]);
      }
      if (PolicyStream(st)) {
        any_policy = true;
        const TokenStats& ts = s.stats[st];
        CHECK(static_cast<int>(ts.pos.size()) >= t.slots, "stream {}: statistics of {} slots for {}", st,
              ts.pos.size(), t.slots);
        CHECK(t.pinned <= n && t.pinned * bt <= s.attached, "stream {}: {} pinned blocks, {} tokens attached",
              st, t.pinned, s.attached);
        // Kept tokens keep their order and original positions (with recall, within each block:
        // a fetched block's may interleave with a held one's); pinned ones sit at their slots.
        int32_t last = -1;
        for (int b = t.first_live; b < committed; ++b) {
          if (policy_.recall && b >= t.pinned) last = -1;
          CHECK(b >= t.pinned || t.fill[b] == bt, "stream {}: pinned block {} not full", st, b);
          CHECK(!(s.prompt_open && t.sealed[b] && b >= t.pinned), "stream {}: block {} sealed in the prompt",
                st, b);
          for (int j = 0; j < t.fill[b]; ++j) {
            const int32_t p = ts.pos[b * bt + j];
            CHECK(p > last && p < s.length, "stream {} slot {}: position {} after {}", st, b * bt + j, p,
                  last);
            CHECK(b >= t.pinned || p == b * bt + j, "stream {}: pinned slot {} at position {}", st,
                  b * bt + j, p);
            last = p;
          }
        }
        continue;
      }
      // The footprint rule.
      const StreamBlocks r = RuleBlocks(config_, spec_.window(st / H), t.slots + s.pending, s.pending);
      CHECK(n == r.n_blocks && t.first_live == r.first_live && t.Dense(bt),
            "sequence {} stream {}: blocks [{}, {}), the footprint rule says [{}, {})", i, st, t.first_live,
            n, r.first_live, r.n_blocks);
      if (staged_only()) continue;
      const int n_sealed = t.first_live + t.SealedBlocks();
      CHECK(s.attached > 0 || n_sealed <= r.n_sealed,
            "sequence {} stream {}: {} blocks sealed, the rule seals {}", i, st, n_sealed, r.n_sealed);
      at_rule = at_rule && n_sealed == r.n_sealed;
    }
    // A policy's bounds, per layer, after a step (an eviction skipped for want
    // of room aside).
    if (any_policy && s.pending == 0 && s.deferred == 0 && !s.prompt_open) {
      for (int l = 0; l < spec_.n_layers; ++l) {
        if (!PolicyLayer(l)) continue;
        const int budget = policy_.LayerBudget(l, spec_.n_layers);
        const int64_t limit = budget + bt;
        int64_t total = 0;
        for (int h = 0; h < H; ++h) {
          const BlockTable& t = s.tables[l * H + h];
          const int own = t.HeldFrom(t.pinned);
          total += own;
          CHECK(policy_.head_adaptive || own <= limit,
                "sequence {} layer {} head {}: {} tokens over the bound {}", i, l, h, own, limit);
        }
        CHECK(!policy_.head_adaptive || total <= limit * H,
              "sequence {} layer {}: {} tokens over the bound {}", i, l, total, limit * H);
      }
    }
    // Recall's host-block groups: a group digest that claims to be current bounds its members'.
    const int hd = spec_.head_dim;
    for (int st = 0; st < static_cast<int>(s.recall.size()); ++st) {
      const RecallStream& r = s.recall[st];
      int spilled = 0, reading = 0;
      for (const ColdBlock& c : r.cold) {
        // In memory, a block's bytes; spilled, a key and no bytes.
        CHECK(c.spill ? c.bytes.empty() : c.bytes.size() == sealed_block_bytes() && c.read == 0,
              "sequence {} stream {}: a host block of {} bytes, spilled under key {}", i, st, c.bytes.size(), c.spill);
        spilled += c.spill != 0, reading += c.read != 0;
      }
      CHECK(spilled == r.spilled && reading == r.reading,
            "sequence {} stream {}: {} spilled host blocks ({} being read) counted as {} ({})", i, st, spilled,
            reading, r.spilled, r.reading);
      CHECK(policy_.host <= 0 || static_cast<int>(r.cold.size()) - spilled <= policy_.host,
            "sequence {} stream {}: {} host blocks in memory over the bound host={}", i, st,
            r.cold.size() - spilled, policy_.host);
      const size_t groups = (r.cold.size() + kColdGroup - 1) / kColdGroup;
      CHECK(r.group_valid.size() == groups && r.group_digest.size() == groups * 2 * hd,
            "sequence {} stream {}: {} host-block groups for {} host blocks", i, st, r.group_valid.size(),
            r.cold.size());
      for (size_t j = 0; j < r.cold.size(); ++j) {
        if (!r.group_valid[j / kColdGroup]) continue;
        const float* g = &r.group_digest[j / kColdGroup * 2 * hd];
        const float* x = r.cold[j].digest.data();
        for (int c = 0; c < hd; ++c)
          CHECK(g[c] <= x[c] && g[hd + c] >= x[hd + c],
                "sequence {} stream {}: host block {} outside its group's digest at channel {}", i, st, j, c);
      }
    }
    if (!at_rule || any_policy) continue;
    const KvUsage got = SequenceUsage(static_cast<SeqId>(i));
    const KvUsage want = SequenceFootprint(spec_, config_, s.length + s.pending, s.pending);
    CHECK(got.bytes_allocated == want.bytes_allocated && got.blocks == want.blocks,
          "sequence {}: {} blocks, {} bytes; the footprint rule says {} blocks, {} bytes", i, got.blocks,
          got.bytes_allocated, want.blocks, want.bytes_allocated);
    CHECK(s.pending > 0 || (got.bytes_data == want.bytes_data && got.bytes_meta == want.bytes_meta &&
                            got.bytes_residual == want.bytes_residual),
          "sequence {}: data/meta/residual {}/{}/{} bytes, the footprint rule says {}/{}/{}", i,
          got.bytes_data, got.bytes_meta, got.bytes_residual, want.bytes_data, want.bytes_meta,
          want.bytes_residual);
  }
  prefix_.ForEachBlock([&](bool sealed, BlockId b) { ++refs[sealed && !staged_only()][b]; });
  for (int kind = 0; kind < 2; ++kind) {
    for (size_t b = 0; b < refs[kind].size(); ++b) {
      CHECK(refs[kind][b] == store_.RefCount(kind, static_cast<BlockId>(b)),
            "{} block {}: {} references, refcount {}", kind ? "sealed" : "staging", b, refs[kind][b],
            store_.RefCount(kind, static_cast<BlockId>(b)));
    }
  }
}

}  // namespace slimkv::kv
