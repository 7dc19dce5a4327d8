// Recall (`:recall`, kv/policy.h): the blocks a policy evicts go to host memory
// in their final format instead of being dropped, and come back when a step's
// queries say the next step will want them.
//
// After every step the cache ranks, per policy stream, the blocks it may swap
// (full blocks in the final format that only this sequence holds, outside the
// policy's sinks and recent tokens, so that a swap frees the block it fills)
// together with the stream's host blocks by the bound their key digests put on
// the step's newest queries (policies/recall.h). The top of that ranking, as
// many blocks as the stream may swap, is what the next step should hold: up to
// `fetch` host blocks of it come back, each in place of the held block that the
// policy values least among those bounded below it (ChooseVictims), which goes
// to host memory. A fetched block is the prediction; the next
// step's ranking is its check: a fetched block it ranks among those to hold was
// fetched ahead (fetch_used), a block it ranks there while still in host memory
// was missed (fetch_missed).
//
// A block keeps its bytes across the moves (a token is quantized once) and its
// tokens' statistics travel with it. It returns to the place its positions
// sort to among the sealed blocks, before the staging ones, so a stream's slot
// order is its tokens' order except where a returned block's positions
// interleave with a held one's (tokens evicted in the prompt are packed into
// blocks in order, so theirs may).
//
// Spill (`host=N` with a local tier, --kv-disk): past N host blocks in memory, the one the
// newest query bounds lowest goes to the tier as a block record (block_record.h: its bytes,
// positions, fingerprint and checksum) and only its digest and statistics stay in memory, so
// it still ranks. A spilled block the ranking wants is read back asynchronously: the step that
// wants it asks the tier (its swap waits), a later step takes the bytes the reader has brought
// into host memory and the ranking fetches them as any host block. A record that is gone or
// fails its checks is dropped (spill_lost); without a tier, or when it does not take the
// record, the block is dropped as before.
#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>

#include "base/check.h"
#include "kv/codec.h"
#include "kv/kv_cache.h"
#include "kv/policies/recall.h"
#include "kv/tiers/block_record.h"

namespace slimkv::kv {
namespace {

// The digest of a final-format block's first `n` tokens, keys unrotated.
void DigestOf(const BlockKind& kind, const Rotation* rot, int bt, int hd, const uint8_t* block, int n,
              float* digest) {
  std::vector<float> keys(static_cast<size_t>(n) * hd);
  for (int i = 0; i < n; ++i) {
    float* k = &keys[static_cast<size_t>(i) * hd];
    DecodeK(kind.k, bt, hd, i, block, k);
    if (rot) rot->Inverse(k);
  }
  KeyDigest(keys.data(), n, hd, digest);
}

}  // namespace

EvictionStats EvictionStats::Since(const EvictionStats& b) const {
  EvictionStats d = *this;
  d.compactions -= b.compactions, d.tokens_moved -= b.tokens_moved, d.block_passes -= b.block_passes;
  d.blocks_dropped -= b.blocks_dropped, d.blocks_shortened -= b.blocks_shortened;
  d.tokens_evicted -= b.tokens_evicted, d.merged -= b.merged, d.sealed_reencoded -= b.sealed_reencoded;
  d.offloaded -= b.offloaded, d.offload_lost -= b.offload_lost, d.fetched -= b.fetched;
  d.fetch_used -= b.fetch_used, d.fetch_missed -= b.fetch_missed, d.host_dropped -= b.host_dropped;
  d.spilled -= b.spilled, d.spill_read -= b.spill_read, d.spill_lost -= b.spill_lost;
  return d;
}

std::string RecallSummary(const EvictionStats& s) {
  return fmt::format(
      "recall: {} blocks offloaded ({} evicted tokens short of a block lost{}{}), {} fetched back; "
      "fetch-ahead hit rate {:.1f}% ({} fetched blocks the next step wanted, {} wanted blocks still in host memory)",
      s.offloaded, s.offload_lost,
      s.host_dropped > 0 ? fmt::format(", {} dropped for the host bound", s.host_dropped) : "",
      s.spilled > 0 ? fmt::format(", {} spilled to disk, {} read back, {} lost there", s.spilled, s.spill_read,
                                  s.spill_lost)
                    : "",
      s.fetched,
      100 * s.fetch_hit_rate(), s.fetch_used, s.fetch_missed);
}

void KvCache::AddCold(Sequence& s, int st, ColdBlock&& c) {
  evict_stats_.host_bytes += static_cast<int64_t>(c.HostBytes());
  ++evict_stats_.offloaded;
  PushCold(s.recall[st], std::move(c));
  BoundHost(s.recall[st]);
}

void KvCache::BoundHost(RecallStream& r) {
  const int hd = spec_.head_dim;
  while (policy_.host > 0 && static_cast<int>(r.cold.size()) - r.spilled > policy_.host) {
    // The host block in memory the stream's newest query bounds lowest leaves (the one the
    // ranking would fetch last). Before any query has run, the last one added goes.
    const int n = static_cast<int>(r.cold.size());
    int drop = -1;
    float lowest = std::numeric_limits<float>::infinity();
    const int G = static_cast<int>(r.query.size()) / hd;
    for (int j = n - 1; j >= 0; --j) {
      if (r.cold[j].bytes.empty()) continue;  // spilled
      if (G == 0) {
        drop = j;
        break;
      }
      const float b = DigestBound(r.query.data(), G, hd, r.cold[j].digest.data());
      if (drop < 0 || b < lowest) lowest = b, drop = j;
    }
    const int64_t bytes = static_cast<int64_t>(r.cold[drop].bytes.size());
    if (SpillCold(r.cold[drop])) {
      evict_stats_.host_bytes -= bytes;
      ++evict_stats_.spilled;
      ++r.spilled;
      continue;
    }
    evict_stats_.host_bytes -= static_cast<int64_t>(r.cold[drop].HostBytes());
    ++evict_stats_.host_dropped;
    RemoveCold(r, drop);
  }
}

const tiers::Fingerprint& KvCache::SpillFingerprint() {
  if (!spill_fp_) {
    // A salt no tenant's cache_salt hashes to in practice, drawn per cache; the keys count on
    // from a random start as well.
    std::random_device rd;
    const uint64_t salt = (static_cast<uint64_t>(rd()) << 32 | rd()) | 1;
    spill_key_ = static_cast<uint64_t>(rd()) << 32 | rd();
    spill_fp_ = tiers()->For(salt);
  }
  return *spill_fp_;
}

bool KvCache::SpillCold(ColdBlock& c) {
  tiers::TierStack* t = tiers();
  if (!t || !t->can_spill()) return false;
  const tiers::StreamKind kind = tiers::StreamKind::kSealed;
  const uint8_t* block = c.bytes.data();
  tiers::RecordSource src;
  src.header.fingerprint = SpillFingerprint();
  src.header.key = ++spill_key_;
  src.header.n_tokens = static_cast<uint32_t>(c.pos.size());
  src.header.n_streams = 1;
  src.header.staged_bytes = static_cast<uint32_t>(staged_block_bytes());
  src.header.sealed_bytes = static_cast<uint32_t>(c.bytes.size());
  src.tokens = c.pos;
  src.kinds = std::span(&kind, 1);
  src.blocks = std::span(&block, 1);
  if (!t->Spill(src.header.fingerprint, src.header.key, tiers::EncodeRecord(src))) return false;
  c.spill = src.header.key;
  c.bytes = std::vector<uint8_t>();
  return true;
}

void KvCache::TakeSpilled(Sequence& s) {
  tiers::TierStack* t = tiers();
  for (RecallStream& r : s.recall) {
    for (int j = static_cast<int>(r.cold.size()) - 1; r.reading > 0 && j >= 0; --j) {
      ColdBlock& c = r.cold[j];
      if (c.read == 0) continue;
      // Done first: the reader files every record of a read before it calls the read done.
      const bool done = t->WaitPrefetch(c.read, 0);
      std::optional<std::vector<uint8_t>> rec = t->TakeRead(*spill_fp_, c.spill);
      if (!rec && !done) continue;  // still being read
      bool ok = false;
      if (rec) {
        // The tier checked fingerprint, key and checksum (a record from the write queue is the one
        // written); what it holds must also be this block: one sealed stream of its size and
        // positions.
        auto view = tiers::ParseRecord(*rec, *spill_fp_, c.spill);
        if (view.ok() && view->header().n_streams == 1 && view->Kind(0) == tiers::StreamKind::kSealed &&
            view->header().sealed_bytes == sealed_block_bytes() && view->header().n_tokens == c.pos.size()) {
          std::vector<int32_t> pos;
          view->CopyTokens(&pos);
          if (pos == c.pos) {
            c.bytes.assign(view->Block(0), view->Block(0) + sealed_block_bytes());
            ok = true;
          }
        }
      }
      t->Unspill(*spill_fp_, c.spill);
      --r.spilled, --r.reading;
      if (ok) {
        c.spill = c.read = 0;
        evict_stats_.host_bytes += static_cast<int64_t>(c.bytes.size());
        ++evict_stats_.spill_read;
      } else {
        evict_stats_.host_bytes -= static_cast<int64_t>(c.HostBytes());
        ++evict_stats_.spill_lost;
        RemoveCold(r, j);
      }
    }
  }
}

void KvCache::ReadSpilled(Sequence& s, std::span<const int> sts, std::span<RecallPlan> plans) {
  std::vector<uint64_t> keys;
  std::vector<std::pair<RecallStream*, ColdBlock*>> reading;
  for (size_t i = 0; i < sts.size(); ++i) {
    RecallStream& r = s.recall[sts[i]];
    if (r.spilled == 0) continue;
    RecallPlan& p = plans[i];
    size_t kept = 0;
    for (size_t k = 0; k < p.victims.size(); ++k) {
      ColdBlock& c = r.cold[p.wanted[k]];
      if (c.bytes.empty()) {  // spilled: read it, and its victim stays for now
        if (c.read == 0) keys.push_back(c.spill), reading.emplace_back(&r, &c);
        continue;
      }
      p.wanted[kept] = p.wanted[k], p.victims[kept] = p.victims[k], ++kept;
    }
    p.victims.resize(kept);
  }
  if (keys.empty()) return;
  const tiers::PrefetchId id = tiers()->ReadSpilled(*spill_fp_, std::move(keys));
  if (id == 0) return;  // the tier is stopping: asked again at the next step
  for (auto [r, c] : reading) c->read = id, ++r->reading;
}

void KvCache::ForgetSpilled(Sequence& s) {
  tiers::TierStack* t = tiers();
  std::vector<uint64_t> reads;
  for (const RecallStream& r : s.recall) {
    if (r.spilled == 0) continue;
    for (const ColdBlock& c : r.cold) {
      if (!c.spill) continue;
      t->Unspill(*spill_fp_, c.spill);
      if (c.read) reads.push_back(c.read);
    }
  }
  std::sort(reads.begin(), reads.end());
  reads.erase(std::unique(reads.begin(), reads.end()), reads.end());
  for (uint64_t id : reads) t->EndPrefetch(id);
}

void KvCache::PushCold(RecallStream& r, ColdBlock&& c) {
  r.cold.push_back(std::move(c));
  ColdChanged(r, static_cast<int>(r.cold.size()) - 1);
}

void KvCache::ColdChanged(RecallStream& r, int j) {
  const size_t groups = (r.cold.size() + kColdGroup - 1) / kColdGroup;
  r.group_valid.resize(groups, 0);
  r.group_digest.resize(groups * 2 * spec_.head_dim);
  if (j / kColdGroup < static_cast<int>(groups)) r.group_valid[j / kColdGroup] = 0;
}

void KvCache::RemoveCold(RecallStream& r, int j) {
  const int last = static_cast<int>(r.cold.size()) - 1;
  if (j != last) r.cold[j] = std::move(r.cold[last]);
  r.cold.pop_back();
  ColdChanged(r, j);
  ColdChanged(r, last);
}

const float* KvCache::GroupDigest(RecallStream& r, int g) {
  const int hd = spec_.head_dim;
  float* d = &r.group_digest[static_cast<size_t>(g) * 2 * hd];
  if (!r.group_valid[g]) {
    const int end = std::min<int>(static_cast<int>(r.cold.size()), (g + 1) * kColdGroup);
    std::copy_n(r.cold[g * kColdGroup].digest.begin(), 2 * hd, d);
    for (int j = g * kColdGroup + 1; j < end; ++j) {
      const float* x = r.cold[j].digest.data();
      for (int c = 0; c < hd; ++c) {
        d[c] = std::min(d[c], x[c]);
        d[hd + c] = std::max(d[hd + c], x[hd + c]);
      }
    }
    r.group_valid[g] = 1;
  }
  return d;
}

void KvCache::OffloadTokens(Sequence& s, int st, std::span<const int> rows, const float* k, const float* v,
                            std::span<const int32_t> pos, std::span<const float> mass,
                            std::span<const float> last, std::span<const float> score) {
  const int bt = config_.block_tokens, hd = spec_.head_dim;
  const BlockKind& kind = store_.kind(true);
  const size_t block_bytes = store_.pool(true).block_bytes();
  // The carry from earlier passes, then this pass's tokens, taken in position order (a later
  // pass may evict tokens older than the carry's): whole blocks of them, the rest carried on.
  RecallStream::Carry& a = s.recall[st].carry;
  for (int r : rows)
    a.Push(k + static_cast<size_t>(r) * hd, v + static_cast<size_t>(r) * hd, hd, pos[r], mass[r], last[r], score[r]);
  const int n = static_cast<int>(a.pos.size()), whole = n / bt * bt;
  std::vector<int> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int x, int y) { return a.pos[x] < a.pos[y]; });
  std::vector<float> kb(static_cast<size_t>(bt) * hd), vb(kb.size());
  for (int first = 0; first < whole; first += bt) {
    ColdBlock c;
    c.bytes.assign(block_bytes, 0);
    c.pos.resize(bt);
    c.mass.resize(bt);
    c.last_mass.resize(bt);
    c.score.resize(bt);
    for (int j = 0; j < bt; ++j) {
      const int r = order[first + j];
      std::copy_n(&a.k[static_cast<size_t>(r) * hd], hd, &kb[static_cast<size_t>(j) * hd]);
      std::copy_n(&a.v[static_cast<size_t>(r) * hd], hd, &vb[static_cast<size_t>(j) * hd]);
      c.pos[j] = a.pos[r], c.mass[j] = a.mass[r], c.last_mass[j] = a.last[r], c.score[j] = a.score[r];
    }
    EncodeFinal(kb.data(), vb.data(), bt, c.bytes.data());
    c.digest.resize(2 * static_cast<size_t>(hd));
    DigestOf(kind, config_.k.rotate ? &k_rot_[st] : nullptr, bt, hd, c.bytes.data(), bt, c.digest.data());
    AddCold(s, st, std::move(c));
  }
  RecallStream::Carry rest;
  for (int i = whole; i < n; ++i) {
    const int r = order[i];
    rest.Push(&a.k[static_cast<size_t>(r) * hd], &a.v[static_cast<size_t>(r) * hd], hd, a.pos[r], a.mass[r],
              a.last[r], a.score[r]);
  }
  a = std::move(rest);
}

void KvCache::DropCarry(Sequence& s) {
  for (RecallStream& r : s.recall) {
    evict_stats_.offload_lost += static_cast<int64_t>(r.carry.pos.size());
    r.carry = RecallStream::Carry{};
  }
}

const float* KvCache::HeldDigest(Sequence& s, int st, int b) {
  RecallStream& r = s.recall[st];
  const int hd = spec_.head_dim;
  const BlockTable& t = s.tables[st];
  float* d = &r.digest[static_cast<size_t>(b) * 2 * hd];
  if (r.state[b] == kNoDigest) {
    DigestOf(store_.kind(t.sealed[b]), config_.k.rotate ? &k_rot_[st] : nullptr, config_.block_tokens, hd,
             BlockData(t, b), t.fill[b], d);
    r.state[b] = kDigest;
  }
  return d;
}

void KvCache::OffloadBlock(Sequence& s, int st, int b) {
  const int bt = config_.block_tokens, hd = spec_.head_dim;
  BlockTable& t = s.tables[st];
  const TokenStats& ts = s.stats[st];
  if (t.fill[b] != bt) return;  // a shortened block's tokens leave for good
  ColdBlock c;
  const size_t block_bytes = store_.pool(true).block_bytes();
  c.bytes.resize(block_bytes);
  if (t.sealed[b] || staged_only()) {
    std::memcpy(c.bytes.data(), BlockData(t, b), block_bytes);
  } else {  // a staging block: sealed on its way out, as Seal would
    std::vector<float> k(static_cast<size_t>(bt) * hd), v(k.size());
    DecodeStaged(BlockData(t, b), bt, k.data(), v.data());
    EncodeFinal(k.data(), v.data(), bt, c.bytes.data());
  }
  c.digest.resize(2 * static_cast<size_t>(hd));
  RecallStream& r = s.recall[st];
  if (t.sealed[b] || staged_only()) {
    if (static_cast<int>(r.state.size()) <= b) {
      r.state.resize(t.n_blocks(), kNoDigest);
      r.digest.resize(r.state.size() * 2 * hd);
    }
    std::copy_n(HeldDigest(s, st, b), 2 * hd, c.digest.begin());
  } else {
    DigestOf(store_.kind(true), config_.k.rotate ? &k_rot_[st] : nullptr, bt, hd, c.bytes.data(), bt,
             c.digest.data());
  }
  c.pos.assign(ts.pos.begin() + b * bt, ts.pos.begin() + (b + 1) * bt);
  c.mass.assign(ts.mass.begin() + b * bt, ts.mass.begin() + (b + 1) * bt);
  c.last_mass.assign(ts.last_mass.begin() + b * bt, ts.last_mass.begin() + (b + 1) * bt);
  c.score.assign(ts.score.begin() + b * bt, ts.score.begin() + (b + 1) * bt);
  AddCold(s, st, std::move(c));
}

void KvCache::EraseBlock(Sequence& s, int st, int b) {
  const int bt = config_.block_tokens;
  BlockTable& t = s.tables[st];
  t.ids.erase(t.ids.begin() + b);
  t.sealed.erase(t.sealed.begin() + b);
  t.fill.erase(t.fill.begin() + b);
  s.stats[st].Erase(b * bt, bt);
  t.slots -= bt;
  s.plain = std::min(s.plain, b * bt);
  if (!s.recall.empty()) {
    RecallStream& r = s.recall[st];
    if (b < static_cast<int>(r.state.size())) {
      const size_t w = 2 * static_cast<size_t>(spec_.head_dim);
      r.state.erase(r.state.begin() + b);
      r.digest.erase(r.digest.begin() + b * w, r.digest.begin() + (b + 1) * w);
    }
  }
}

bool KvCache::InsertCold(Sequence& s, int st, ColdBlock& c) {
  const int bt = config_.block_tokens, hd = spec_.head_dim;
  BlockTable& t = s.tables[st];
  TokenStats& ts = s.stats[st];
  const int lo = std::max(t.first_live, t.pinned), n = t.n_blocks();
  // Before the first block not in the final format (the staging blocks, or the open block when
  // nothing is staged), and before the first block whose tokens are newer.
  int b = lo;
  while (b < n && (t.sealed[b] || (staged_only() && t.fill[b] == bt)) &&
         !(t.fill[b] > 0 && ts.pos[b * bt] > c.pos[0]))
    ++b;
  if (b == n && t.slots != n * bt) return false;  // after a shortened last block: no slot for it
  std::vector<BlockId> fresh;
  if (!AllocateEvicting(true, 1, &fresh).ok()) return false;
  std::memcpy(store_.Data(true, fresh[0]), c.bytes.data(), c.bytes.size());
  t.ids.insert(t.ids.begin() + b, fresh[0]);
  t.sealed.insert(t.sealed.begin() + b, staged_only() ? 0 : 1);
  t.fill.insert(t.fill.begin() + b, static_cast<int16_t>(bt));
  t.slots += bt;
  auto put = [&](auto& a, const auto& from) { a.insert(a.begin() + b * bt, from.begin(), from.end()); };
  ts.Grow(t.slots - bt);  // statistics cover the slots before the insertion
  put(ts.pos, c.pos);
  put(ts.mass, c.mass);
  put(ts.last_mass, c.last_mass);
  put(ts.score, c.score);
  RecallStream& r = s.recall[st];
  const size_t w = 2 * static_cast<size_t>(hd);
  r.state.insert(r.state.begin() + b, kFetched);
  r.digest.insert(r.digest.begin() + b * w, c.digest.begin(), c.digest.end());
  s.plain = std::min(s.plain, b * bt);
  return true;
}

void KvCache::PlanRecall(Sequence& s, int st, RecallPlan* plan) {
  const int bt = config_.block_tokens, hd = spec_.head_dim, H = spec_.n_kv_heads, G = spec_.group_size();
  RecallStream& r = s.recall[st];
  const BlockTable& t = s.tables[st];
  if (r.value_age < std::numeric_limits<int>::max()) ++r.value_age;
  r.state.resize(t.n_blocks(), kNoDigest);
  r.digest.resize(r.state.size() * 2 * hd);
  // The blocks that may swap: full, in the final format, after the sinks and before the recent
  // tokens the policy always keeps.
  const int budget = policy_.LayerBudget(st / H, spec_.n_layers);
  const int keep_first = evictor_->sinks(), keep_last = std::max(1, evictor_->recent(budget));
  const int lo = std::max(t.first_live, t.pinned);
  std::vector<int>& held = plan->held;
  int before = 0, after = t.HeldFrom(lo);
  for (int b = lo; b < t.n_blocks(); ++b) {
    after -= t.fill[b];
    const bool final_kind = t.sealed[b] || (staged_only() && b + 1 < t.n_blocks());
    // A block another owner holds (a published prefix) would free nothing by leaving.
    if (final_kind && t.fill[b] == bt && before >= keep_first && after >= keep_last &&
        store_.RefCount(t.sealed[b], t.ids[b]) == 1)
      held.push_back(b);
    before += t.fill[b];
  }
  // Rank held (index i < held) and host blocks (held + j) by their bound on the step's queries.
  // A host block bounded no higher than every held block ranks after them all (held blocks come
  // first among equals), so a group whose own bound is that low is not looked into.
  const int nh = static_cast<int>(held.size()), nc = static_cast<int>(r.cold.size());
  std::vector<float> bound(nh + nc, -std::numeric_limits<float>::infinity());
  for (int i = 0; i < nh; ++i) bound[i] = DigestBound(r.query.data(), G, hd, HeldDigest(s, st, held[i]));
  const float floor = nh > 0 ? *std::min_element(bound.begin(), bound.begin() + nh) : 0.0f;
  for (int g = 0; nh > 0 && g * kColdGroup < nc; ++g) {
    if (DigestBound(r.query.data(), G, hd, GroupDigest(r, g)) <= floor) continue;
    for (int j = g * kColdGroup; j < std::min(nc, (g + 1) * kColdGroup); ++j)
      bound[nh + j] = DigestBound(r.query.data(), G, hd, r.cold[j].digest.data());
  }
  std::vector<int> order(nh + nc);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return bound[a] > bound[b]; });
  std::vector<int>& wanted = plan->wanted;  // host blocks to fetch, best first
  for (int i = 0; i < nh; ++i) {
    const int x = order[i];
    if (x >= nh)
      wanted.push_back(x - nh);
    else if (r.state[held[x]] == kFetched)
      ++plan->used;
  }
  for (uint8_t& state : r.state)
    if (state == kFetched) state = kDigest;
  if (wanted.empty()) return;
  // The policy's value of each held block (its tokens' scores summed, as when it cuts blocks).
  std::vector<float> value(nh, 0.0f);
  const bool keys = evictor_->wants_keys();
  const std::vector<int32_t>& pos = s.stats[st].pos;
  if (!keys || r.value_age >= bt) {
    ViewData d;
    MakeView(s, st, keys, &d);
    std::vector<float> score;
    evictor_->Score(d.view, &score);
    for (int i = 0, vb = 0; i < nh; ++i) {
      while (d.block_of[vb] != held[i]) ++vb;
      for (int j = 0; j < d.blocks[vb].n; ++j) value[i] += score[d.blocks[vb].first + j];
    }
    if (keys) {
      r.value_at.clear();
      for (int i = 0; i < nh; ++i) r.value_at[pos[static_cast<size_t>(held[i]) * bt]] = value[i];
      r.value_age = 0;
    }
  } else {
    // A block sealed or fetched since has no value yet: it leaves last.
    for (int i = 0; i < nh; ++i) {
      const auto it = r.value_at.find(pos[static_cast<size_t>(held[i]) * bt]);
      value[i] = it == r.value_at.end() ? std::numeric_limits<float>::infinity() : it->second;
    }
  }
  std::vector<float> pairs(bound.begin(), bound.begin() + nh);  // held, then wanted best first
  for (int j : wanted) pairs.push_back(bound[nh + j]);
  plan->victims = ChooseVictims(pairs, value, policy_.fetch, static_cast<int>(wanted.size()));
  for (int& v : plan->victims) v = held[v];
}

void KvCache::Recall(Sequence& s, ThreadPool* pool) {
  if (!policy_.recall || s.prompt_open) return;
  if (spill_fp_) TakeSpilled(s);
  // The plans read only their own stream (and the pool's reference counts), so streams plan in
  // parallel; the moves, which allocate and release blocks, run in order.
  std::vector<int> sts;
  for (int st = 0; st < streams(); ++st)
    if (PolicyStream(st) && !s.recall[st].query.empty()) sts.push_back(st);
  std::vector<RecallPlan> plans(sts.size());
  if (pool) {
    pool->Run(static_cast<int>(sts.size()), [&](int i, int) { PlanRecall(s, sts[i], &plans[i]); });
  } else {
    for (size_t i = 0; i < sts.size(); ++i) PlanRecall(s, sts[i], &plans[i]);
  }
  if (spill_fp_) ReadSpilled(s, sts, plans);
  for (size_t i = 0; i < sts.size(); ++i) {
    const int st = sts[i];
    RecallStream& r = s.recall[st];
    BlockTable& t = s.tables[st];
    std::vector<int>& wanted = plans[i].wanted;
    std::vector<int>& victims = plans[i].victims;
    evict_stats_.fetch_used += plans[i].used;
    evict_stats_.fetch_missed += static_cast<int64_t>(wanted.size());
    const int swaps = static_cast<int>(victims.size());
    if (swaps == 0) continue;
    // Fetch first (the host blocks leave the host list), then let the victims go, later blocks
    // first so erasing one does not move the others.
    std::vector<ColdBlock> fetch;
    wanted.resize(swaps);
    for (int j : wanted) fetch.push_back(std::move(r.cold[j]));
    std::sort(wanted.rbegin(), wanted.rend());  // the last host blocks first: none moves twice
    for (int j : wanted) RemoveCold(r, j);
    std::sort(victims.rbegin(), victims.rend());
    for (int b : victims) {
      OffloadBlock(s, st, b);
      store_.Release(t.sealed[b], t.ids[b]);
      EraseBlock(s, st, b);
    }
    for (ColdBlock& c : fetch) {
      const int64_t bytes = static_cast<int64_t>(c.HostBytes());
      if (InsertCold(s, st, c)) {
        evict_stats_.host_bytes -= bytes;
        ++evict_stats_.fetched;
      } else {
        PushCold(r, std::move(c));  // no room or no place: it stays in host memory
      }
    }
    BoundHost(r);  // the victims went to host memory, and a fetch that found no room stayed there
  }
}

}  // namespace slimkv::kv
