// Attention over a sequence's blocks: the runs of contiguous slots each stream
// holds, split into tasks over threads, merged by log-sum-exp; the policy
// observes the step's attention. (KvCache's methods are split over kv_cache.cc,
// kv_attend.cc, kv_evict.cc and kv_invariants.cc by concern.)
#include <algorithm>
#include <cmath>
#include <limits>

#include "base/check.h"
#include "base/int_math.h"
#include "kv/kv_cache.h"

namespace slimkv::kv {
namespace {

// Keys per part below which splitting a task's key range over threads does not
// pay.
constexpr int kMinKeysPerPart = 512;

}  // namespace

// A run is a range of slots whose blocks the kernels can walk in one task:
// every block but the last full, sealed blocks before staged ones. Runs break
// after a shortened block and where a pinned staged prefix meets sealed blocks.
// `extra`: the step's tokens after `slots`.
//
// Positions. The kernels see a key at the position it was stored with (keys
// after RoPE), or at its slot (keys before RoPE), and the query at
// NextPosition. Keys before RoPE of a policy stream have lost their original
// slots, so the query is rotated back by length - slots: the query's own slot.
// Re-indexing policies (window, sinks) attend to their kept tokens as if
// contiguous: a run's query is rotated back so that the run ends right where
// the next begins (the sinks sit just before the window, StreamingLLM's
// positions), no key touched.
void KvCache::StreamRuns(const Sequence& s, int st, int extra, std::vector<Run>* runs) const {
  const int bt = config_.block_tokens;
  const BlockTable& t = s.tables[st];
  const int end = t.slots + extra;
  runs->clear();
  auto fill = [&](int b) {
    return b * bt + bt <= t.slots ? static_cast<int>(t.fill[b]) : std::clamp(end - b * bt, 0, bt);
  };
  for (int b = t.first_live; b < t.n_blocks(); ++b) {
    const int f = fill(b);
    if (f == 0) continue;
    Run* r = runs->empty() ? nullptr : &runs->back();
    const int prev = b - 1;
    const bool joins = r && r->key_end == b * bt && fill(prev) == bt && !(t.sealed[b] && !t.sealed[prev]);
    if (!joins) {
      runs->push_back({b * bt, b * bt, b, 0, 0});
      r = &runs->back();
    }
    r->key_end = b * bt + f;
    if (t.sealed[b]) ++r->n_sealed_blocks;
  }
  const bool pre = config_.k.pre_rope && spec_.rope_dim > 0;
  int64_t shift = pre ? static_cast<int64_t>(s.length) - t.slots : 0;
  const bool reindex = PolicyStream(st) && policy_.reindexes();
  const std::vector<int32_t>& pos = s.stats[st].pos;
  auto position = [&](int slot) -> int64_t { return pre || !reindex ? slot : pos[slot]; };
  if (reindex && !pre) {
    // A run also ends where original positions jump (the sinks before the
    // window), at any slot.
    std::vector<Run> split;
    for (const Run& r : *runs) {
      int begin = r.key_begin;
      for (int slot = r.key_begin + 1; slot <= r.key_end; ++slot) {
        if (slot < r.key_end && pos[slot] == pos[slot - 1] + 1) continue;
        Run part = r;
        part.key_begin = begin;
        part.key_end = slot;
        part.first_block = begin / bt;
        // Sealed blocks of the part: those of the run from its first block on.
        part.n_sealed_blocks = std::max(0, r.first_block + r.n_sealed_blocks - part.first_block);
        split.push_back(part);
        begin = slot;
      }
    }
    runs->swap(split);
  }
  for (int r = static_cast<int>(runs->size()) - 1; r >= 0; --r) {
    if (reindex && r + 1 < static_cast<int>(runs->size())) {
      shift += position((*runs)[r + 1].key_begin) - (position((*runs)[r].key_end - 1) + 1);
    }
    (*runs)[r].q_shift = shift;
  }
}

void KvCache::Attend(ThreadPool& pool, int layer, std::span<const StepChunk> chunks, const float* q,
                     int64_t ldq, float* out, int64_t ldo, float scale) {
  const int H = spec_.n_kv_heads, G = spec_.group_size(), hd = spec_.head_dim;
  const int bt = config_.block_tokens;
  const int window = spec_.window(layer);
  const int tile_tokens = std::max(1, kMaxAttnTaskRows / G);
  const bool policy_layer = PolicyLayer(layer);
  if (policy_layer && evictor_->wants_queries()) {
    for (const StepChunk& c : chunks) {
      Sequence& s = Seq(c.seq);
      for (int h = 0; h < H; ++h) {
        evictor_->ObserveQueries(s.stats[layer * H + h], q + c.row * ldq + h * G * hd, ldq, c.n_tokens, G,
                                 hd);
      }
    }
  }

  if (policy_layer && policy_.recall) {  // the newest query ranks the blocks the next step holds
    for (const StepChunk& c : chunks) {
      Sequence& s = Seq(c.seq);
      const float* newest = q + (c.row + c.n_tokens - 1) * ldq;
      for (int h = 0; h < H; ++h) s.recall[layer * H + h].query.assign(newest + h * G * hd, newest + (h + 1) * G * hd);
    }
  }

  // Block pointers and runs of every (chunk, head) stream.
  scratch_blocks_.clear();
  std::vector<size_t> stream_begin;
  std::vector<std::vector<Run>> runs(chunks.size() * H);
  int64_t max_keys = 0;
  for (size_t ci = 0; ci < chunks.size(); ++ci) {
    const Sequence& s = Seq(chunks[ci].seq);
    for (int h = 0; h < H; ++h) {
      const int st = layer * H + h;
      const BlockTable& t = s.tables[st];
      stream_begin.push_back(scratch_blocks_.size());
      for (int b = 0; b < t.n_blocks(); ++b) {
        scratch_blocks_.push_back(t.ids[b] == kNoBlock ? nullptr : BlockData(t, b));
      }
      StreamRuns(s, st, chunks[ci].n_tokens, &runs[ci * H + h]);
      max_keys = std::max<int64_t>(max_keys, t.Held() + chunks[ci].n_tokens);
    }
  }

  // Units: (chunk, head, tile of query tokens). A unit has a task per run it
  // sees, each split into parts over its keys when there are too few units to
  // keep every thread busy (decode over a long context).
  struct Unit {
    int chunk, head, t0, nt, part0, n_parts;
  };
  std::vector<Unit> units;
  for (size_t ci = 0; ci < chunks.size(); ++ci) {
    for (int h = 0; h < H; ++h)
      for (int t0 = 0; t0 < chunks[ci].n_tokens; t0 += tile_tokens)
        units.push_back({static_cast<int>(ci), h, t0, std::min(tile_tokens, chunks[ci].n_tokens - t0), 0, 0});
  }
  if (units.empty()) return;
  const int want_tasks = 2 * pool.num_threads();
  int parts = 1;
  if (static_cast<int>(units.size()) < want_tasks) {
    parts = std::min(CeilDiv(want_tasks, units.size()),
                     std::max(1, static_cast<int>(max_keys / kMinKeysPerPart)));
  }
  // Queries rotated for runs with a position shift: [unit
  // run][token][group][head_dim].
  size_t q_floats = 0;
  for (const Unit& u : units) {
    for (const Run& r : runs[u.chunk * H + u.head])
      q_floats += r.q_shift ? static_cast<size_t>(u.nt) * G * hd : 0;
  }
  scratch_q_.resize(q_floats);
  std::vector<RopeTables> ropes;  // per unit run, for keys stored before RoPE (slot offsets differ)
  size_t unit_runs = 0;
  for (const Unit& u : units) unit_runs += runs[u.chunk * H + u.head].size();
  ropes.reserve(unit_runs);      // tasks point into it: no reallocation
  std::vector<int> task_offset;  // [task] slot of the task's first block
  scratch_tasks_.clear();
  size_t q_next = 0;
  const RopeTables* layer_rope = config_.k.pre_rope ? LayerRope(layer) : nullptr;
  std::vector<float> cs(std::max(1, spec_.rope_dim / 2)), sn(cs.size());
  for (Unit& u : units) {
    const StepChunk& c = chunks[u.chunk];
    const Sequence& s = Seq(c.seq);
    const int st = layer * H + u.head;
    const BlockTable& tb = s.tables[st];
    const int first_q_slot = tb.slots + u.t0;
    const int unit_end = first_q_slot + u.nt;
    const int window_begin = window > 0 ? std::max(0, first_q_slot - window + 1) : 0;
    const float* uq = q + (c.row + u.t0) * ldq + u.head * G * hd;
    u.part0 = static_cast<int>(scratch_tasks_.size());
    const auto& rs = runs[u.chunk * H + u.head];
    int total_blocks = 0;
    for (const Run& r : rs) total_blocks += CeilDiv(r.key_end, bt) - r.key_begin / bt;
    for (const Run& r : rs) {
      const int kb = std::max(r.key_begin, window_begin), ke = std::min(r.key_end, unit_end);
      if (kb >= ke) continue;
      const int off = r.first_block * bt;
      AttnTask t;
      t.blocks = scratch_blocks_.data() + stream_begin[u.chunk * H + u.head] + r.first_block;
      t.n_sealed = staged_only() ? 0 : r.n_sealed_blocks;
      t.sealed = &store_.kind(true);
      t.staged = &store_.kind(false);
      t.block_tokens = bt;
      t.head_dim = hd;
      if (layer_rope) {
        RopeTables rt = *layer_rope;
        rt.cos += off;
        rt.sin += off;
        ropes.push_back(rt);
        t.rope = &ropes.back();
      }
      t.k_rotation = config_.k.rotate ? &k_rot_[st] : nullptr;
      t.q = uq;
      t.ldq = ldq;
      if (r.q_shift != 0) {
        float* rq = scratch_q_.data() + q_next;
        q_next += static_cast<size_t>(u.nt) * G * hd;
        ops::RopeAngles(-r.q_shift, spec_.layer_inv_freq[layer], cs.data(), sn.data());
        for (int i = 0; i < u.nt; ++i) {
          std::copy_n(uq + i * ldq, G * hd, rq + static_cast<size_t>(i) * G * hd);
          ops::RopeApply(rq + static_cast<size_t>(i) * G * hd, G, hd, spec_.rope_dim, cs.data(), sn.data(),
                         spec_.rope_style);
        }
        t.q = rq;
        t.ldq = static_cast<int64_t>(G) * hd;
      }
      t.scale = scale;
      t.n_q_tokens = u.nt;
      t.group = G;
      t.first_q_slot = first_q_slot - off;
      t.window = window;
      // Split [kb, ke) into parts aligned to blocks, about `parts` over the
      // unit's runs.
      const int b0 = kb / bt, n_blocks = CeilDiv(ke, bt) - b0;
      const int np = std::max(1, std::min(n_blocks, CeilDiv(parts * n_blocks, std::max(1, total_blocks))));
      for (int p = 0; p < np; ++p) {
        t.key_begin =
            std::max(kb, (b0 + static_cast<int>(static_cast<int64_t>(n_blocks) * p / np)) * bt) - off;
        t.key_end =
            std::min(ke, (b0 + static_cast<int>(static_cast<int64_t>(n_blocks) * (p + 1) / np)) * bt) - off;
        scratch_tasks_.push_back(t);
        task_offset.push_back(off);
      }
    }
    u.n_parts = static_cast<int>(scratch_tasks_.size()) - u.part0;
  }
  // Attention mass for the policy: the scores of the step's last tokens (all of
  // a decode step; the last observed_tokens() of a prompt chunk) are kept and
  // turned into weights once the parts of each unit are merged.
  const bool want_mass = policy_layer && evictor_->wants_attention();
  scratch_score_off_.assign(scratch_tasks_.size(), SIZE_MAX);
  if (want_mass) {
    size_t total = 0;
    for (const Unit& u : units) {
      const StepChunk& c = chunks[u.chunk];
      const int n_mass = c.n_tokens == 1 ? 1 : evictor_->observed_tokens();
      const int first = std::max(0, c.n_tokens - n_mass) - u.t0;  // first mass token of the unit
      if (first >= u.nt) continue;
      for (int p = 0; p < u.n_parts; ++p) {
        AttnTask& t = scratch_tasks_[u.part0 + p];
        t.mass_first_token = std::max(0, first);
        scratch_score_off_[u.part0 + p] = total;
        total += static_cast<size_t>(u.nt - t.mass_first_token) * G * (t.key_end - t.key_begin);
      }
    }
    scratch_scores_.resize(total);
    for (size_t i = 0; i < scratch_tasks_.size(); ++i) {
      if (scratch_score_off_[i] != SIZE_MAX)
        scratch_tasks_[i].scores_out = scratch_scores_.data() + scratch_score_off_[i];
    }
  }
  const size_t rows_max = static_cast<size_t>(tile_tokens) * G;
  scratch_ml_.resize(2 * rows_max * units.size());
  const size_t stride = rows_max * (hd + 2);
  scratch_partials_.resize(stride * std::max<size_t>(1, scratch_tasks_.size()));
  auto partial = [&](int task) {
    float* base = scratch_partials_.data() + stride * task;
    return AttnPartial{base, base + rows_max * hd, base + rows_max * hd + rows_max};
  };
  auto merge = [&](const Unit& u) {
    const size_t ui = static_cast<size_t>(&u - units.data());
    float* mm = scratch_ml_.data() + 2 * rows_max * ui;
    AttnPartial parts_buf[64];
    std::vector<AttnPartial> many;
    AttnPartial* ps = parts_buf;
    if (u.n_parts > 64) {
      many.resize(u.n_parts);
      ps = many.data();
    }
    for (int p = 0; p < u.n_parts; ++p) ps[p] = partial(u.part0 + p);
    const StepChunk& c = chunks[u.chunk];
    float* o = out + (c.row + u.t0) * ldo + u.head * G * hd;
    MergePartials(ps, u.n_parts, u.nt * G, G, hd, o, ldo, mm, mm + rows_max);
    if (config_.v.rotate) {  // values were stored rotated: rotate the output back
      const Rotation& rot = v_rot_[layer * H + u.head];
      for (int i = 0; i < u.nt; ++i)
        for (int g = 0; g < G; ++g) rot.Inverse(o + i * ldo + g * hd);
    }
  };
  if (static_cast<int>(attn_scratch_.size()) < pool.num_threads()) attn_scratch_.resize(pool.num_threads());
  auto run_task = [&](int task, int thread) {
    std::unique_ptr<AttnScratch>& scratch = attn_scratch_[thread];
    if (!scratch) scratch = std::make_unique<AttnScratch>();
    RunAttnTask(scratch_tasks_[task], partial(task), *scratch);
  };
  bool one_task_each = true;
  for (const Unit& u : units) one_task_each = one_task_each && u.n_parts == 1;
  if (one_task_each) {
    pool.Run(static_cast<int>(units.size()), [&](int i, int thread) {
      run_task(units[i].part0, thread);
      merge(units[i]);
    });
  } else {
    pool.Run(static_cast<int>(scratch_tasks_.size()), [&](int i, int thread) { run_task(i, thread); });
    pool.Run(static_cast<int>(units.size()), [&](int i, int) { merge(units[i]); });
  }
  if (!want_mass) return;
  // Weights exp(score - max) / sum per observed row, summed per slot
  // (`weights`), and the newest token's averaged over the group's heads
  // (`newest`); the policy takes them. One job per stream.
  pool.Run(static_cast<int>(chunks.size()) * H, [&](int job, int) {
    const int ci = job / H, h = job % H, st = layer * H + h;
    Sequence& s = Seq(chunks[ci].seq);
    const int n_slots = s.tables[st].slots + chunks[ci].n_tokens;
    std::vector<float> weights(n_slots, 0.0f), newest(n_slots, 0.0f);
    for (size_t ui = 0; ui < units.size(); ++ui) {
      const Unit& u = units[ui];
      if (u.chunk != ci || u.head != h) continue;
      const float* mm = scratch_ml_.data() + 2 * rows_max * ui;
      for (int p = 0; p < u.n_parts; ++p) {
        const AttnTask& t = scratch_tasks_[u.part0 + p];
        if (!t.scores_out) continue;
        const int range = t.key_end - t.key_begin, base = task_offset[u.part0 + p] + t.key_begin;
        for (int i = t.mass_first_token; i < u.nt; ++i) {
          const bool is_newest = u.t0 + i == chunks[ci].n_tokens - 1;
          for (int g = 0; g < G; ++g) {
            const int r = i * G + g;
            const float m = mm[r], l = mm[rows_max + r];
            if (!(l > 0)) continue;
            const float* sc = t.scores_out + static_cast<int64_t>((i - t.mass_first_token) * G + g) * range;
            for (int k = 0; k < range; ++k) {
              if (sc[k] == -std::numeric_limits<float>::infinity()) continue;
              const float w = std::exp(sc[k] - m) / l;
              weights[base + k] += w;
              if (is_newest) newest[base + k] += w / G;
            }
          }
        }
      }
    }
    evictor_->ObserveAttention(s.stats[st], weights, newest);
  });
}

}  // namespace slimkv::kv
