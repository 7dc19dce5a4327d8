#include "kv/kv_cache.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "base/check.h"
#include "base/int_math.h"
#include "kv/codec.h"

namespace slimkv::kv {
namespace {

// Query tokens of a prompt chunk whose attention feeds the policies' mass (decode steps: 1).
constexpr int kMassTokens = 32;
// Keys per part below which splitting a task's key range over threads does not pay.
constexpr int kMinKeysPerPart = 512;
// Seed of the Hadamard rotations (fixed: a stream's rotation is the same in every process).
constexpr uint64_t kRotationSeed = 0x5EED5EED5EEDull;

}  // namespace

Result<std::unique_ptr<KvCache>> KvCache::Create(const KvSpec& spec, const KvConfig& config,
                                                 size_t budget_bytes) {
  if (spec.n_layers <= 0 || spec.n_kv_heads <= 0 || spec.head_dim <= 0 || spec.n_q_heads <= 0 ||
      spec.n_q_heads % spec.n_kv_heads != 0) {
    return InvalidArgument("bad KV spec: {} layers, {} KV heads, {} query heads, head dim {}",
                           spec.n_layers, spec.n_kv_heads, spec.n_q_heads, spec.head_dim);
  }
  if (spec.head_dim % 16 != 0 || spec.head_dim > kMaxAttnHeadDim) {
    return Unimplemented("head dim {} is not supported by the KV cache (a multiple of 16 up to {})",
                         spec.head_dim, kMaxAttnHeadDim);
  }
  if (!spec.layer_window.empty() && static_cast<int>(spec.layer_window.size()) != spec.n_layers) {
    return InvalidArgument("KV spec has {} layer windows for {} layers", spec.layer_window.size(), spec.n_layers);
  }
  for (int w : spec.layer_window) {
    if (w < 0) return InvalidArgument("sliding window {} is negative", w);
  }
  if (spec.group_size() > kMaxAttnTaskRows) {
    return Unimplemented("{} query heads per KV head is more than the {} supported",
                         spec.group_size(), kMaxAttnTaskRows);
  }
  if (spec.rope_dim > 0 && (spec.rope_dim % 2 != 0 || spec.rope_dim > spec.head_dim ||
                            static_cast<int>(spec.layer_inv_freq.size()) != spec.n_layers)) {
    return InvalidArgument("bad RoPE spec: dim {} for head dim {}, {} frequency sets for {} layers", spec.rope_dim,
                           spec.head_dim, spec.layer_inv_freq.size(), spec.n_layers);
  }
  if (config.block_tokens <= 0 || config.block_tokens % 16 != 0 ||
      config.block_tokens > kMaxAttnBlockTokens) {
    return InvalidArgument("block size {} tokens: must be a multiple of 16 up to {}",
                           config.block_tokens, kMaxAttnBlockTokens);
  }
  if (config.residual < 0 || config.residual % config.block_tokens != 0) {
    return InvalidArgument("residual window {} tokens: must be a multiple of the block size {}", config.residual,
                           config.block_tokens);
  }
  RETURN_IF_ERROR(CheckFormat(config.k, spec.head_dim, true));
  RETURN_IF_ERROR(CheckFormat(config.v, spec.head_dim, false));
  if (config.k.pre_rope && spec.rope_dim == 0) {
    return InvalidArgument("K format {}: the model has no RoPE to apply later", FormatName(config.k));
  }
  std::unique_ptr<KvCache> c(new KvCache(spec, config, budget_bytes));
  ASSIGN_OR_RETURN(c->staged_pool_,
                   BlockPool::Create(StagedBlockBytes(config, spec.head_dim), budget_bytes, &c->budget_));
  if (!c->staged_only()) {
    ASSIGN_OR_RETURN(c->sealed_pool_,
                     BlockPool::Create(SealedBlockBytes(config, spec.head_dim), budget_bytes, &c->budget_));
  }
  return c;
}

KvCache::KvCache(const KvSpec& spec, const KvConfig& config, size_t budget)
    : spec_(spec), config_(config) {
  const int bt = config.block_tokens, hd = spec.head_dim;
  if (config.needs_staging()) {
    staged_ = MakeBlockKind(config.StagingK(), config.StagingV(), bt, hd);
    sealed_ = MakeBlockKind(config.k, config.v, bt, hd);
  } else {
    staged_ = sealed_ = MakeBlockKind(config.k, config.v, bt, hd);
  }
  budget_.limit = budget;
  for (int l = 0; l < spec.n_layers; ++l) {
    for (int h = 0; h < spec.n_kv_heads; ++h) {
      if (config.k.rotate) k_rot_.emplace_back(hd, kRotationSeed, l, h);
      if (config.v.rotate) v_rot_.emplace_back(hd, kRotationSeed ^ 0xABCDull, l, h);
    }
  }
  // One angle table per distinct set of frequencies (Gemma: local and global layers).
  layer_table_.assign(spec.n_layers, -1);
  if (spec.rope_dim > 0) {
    std::vector<const std::vector<float>*> seen;
    for (int l = 0; l < spec.n_layers; ++l) {
      int found = -1;
      for (size_t i = 0; i < seen.size(); ++i)
        if (*seen[i] == spec.layer_inv_freq[l]) found = static_cast<int>(i);
      if (found < 0) {
        found = static_cast<int>(seen.size());
        seen.push_back(&spec.layer_inv_freq[l]);
      }
      layer_table_[l] = found;
    }
    rope_cos_.resize(seen.size());
    rope_sin_.resize(seen.size());
    rope_views_.resize(seen.size());
  }
}

size_t KvCache::BudgetFor(const KvSpec& spec, const KvConfig& config, int64_t tokens,
                          int sequences, int step_tokens) {
  return PeakSequenceBytes(spec, config, tokens, step_tokens) * std::max(0, sequences);
}

KvCache::Sequence KvCache::NewSequence() const {
  Sequence s;
  s.live = true;
  s.tables.resize(streams());
  s.first_live.assign(streams(), 0);
  s.n_sealed.assign(streams(), 0);
  s.slots.assign(streams(), 0);
  if (policy_.active()) {
    s.pos.resize(streams());
    s.mass.resize(streams());
    s.last_mass.resize(streams());
    s.score.resize(streams());
    if (policy_.needs_queries()) {
      s.q_mean.assign(streams(), std::vector<float>(spec_.head_dim, 0.0f));
      s.q_sq.assign(streams(), std::vector<float>(spec_.head_dim, 0.0f));
    }
  }
  return s;
}

Status KvCache::SetPolicy(const PolicySpec& policy) {
  for (const Sequence& s : seqs_) {
    if (s.live) return InvalidArgument("the KV policy must be set before any sequence exists");
  }
  if (policy.active() && config_.k.pre_rope && !policy.reindexes()) {
    return InvalidArgument("policy {} keeps original positions, which keys stored before RoPE cannot carry; use "
                           "window or sinks, or post-RoPE keys", PolicyName(policy));
  }
  if (policy.active() && policy.budget < config_.block_tokens) {
    return InvalidArgument("--kv-budget {} is smaller than one block of {} tokens", policy.budget,
                           config_.block_tokens);
  }
  policy_ = policy;
  return Status::Ok();
}

int64_t KvCache::NextPosition(SeqId id) const { return Seq(id).next_pos; }

int KvCache::Slots(SeqId id, int layer, int head) const {
  return Seq(id).slots[layer * spec_.n_kv_heads + head];
}

SeqId KvCache::AddSequence() {
  for (size_t i = 0; i < seqs_.size(); ++i) {
    if (!seqs_[i].live) {
      seqs_[i] = NewSequence();
      return static_cast<SeqId>(i);
    }
  }
  seqs_.push_back(NewSequence());
  return static_cast<SeqId>(seqs_.size() - 1);
}

bool KvCache::HasSequence(SeqId id) const {
  return id >= 0 && static_cast<size_t>(id) < seqs_.size() && seqs_[id].live;
}

const KvCache::Sequence& KvCache::Seq(SeqId id) const {
  CHECK(HasSequence(id), "no sequence {}", id);
  return seqs_[id];
}
KvCache::Sequence& KvCache::Seq(SeqId id) {
  CHECK(HasSequence(id), "no sequence {}", id);
  return seqs_[id];
}

const uint8_t* KvCache::BlockData(const Sequence& s, int stream, int b) const {
  const BlockId id = s.tables[stream][b];
  if (id == kNoBlock) return nullptr;
  return b < s.n_sealed[stream] ? sealed_pool_.Data(id) : staged_pool_.Data(id);
}

void KvCache::RemoveSequence(SeqId id) {
  Sequence& s = Seq(id);
  for (int st = 0; st < streams(); ++st) {
    const auto& table = s.tables[st];
    for (int b = 0; b < static_cast<int>(table.size()); ++b) {
      if (table[b] == kNoBlock) continue;
      (b < s.n_sealed[st] ? sealed_pool_ : staged_pool_).Release(table[b]);
    }
  }
  s = Sequence{};
}

int KvCache::Length(SeqId id) const { return Seq(id).length; }

void KvCache::EnsureRopeTables(int64_t positions) {
  if (spec_.rope_dim == 0 || positions <= rope_capacity_) return;
  const int64_t cap = std::max<int64_t>(positions, 2 * rope_capacity_);
  const int half = spec_.rope_dim / 2;
  for (int l = 0; l < spec_.n_layers; ++l) {
    const int t = layer_table_[l];
    if (static_cast<int64_t>(rope_cos_[t].size()) == half * cap) continue;  // filled by an earlier layer
    rope_cos_[t].assign(static_cast<size_t>(half) * cap, 0.0f);
    rope_sin_[t].assign(static_cast<size_t>(half) * cap, 0.0f);
    std::vector<float> c(half), s(half);
    for (int64_t pos = 0; pos < cap; ++pos) {
      ops::RopeAngles(pos, spec_.layer_inv_freq[l], c.data(), s.data());
      for (int i = 0; i < half; ++i) {
        rope_cos_[t][i * cap + pos] = c[i];
        rope_sin_[t][i * cap + pos] = s[i];
      }
    }
    rope_views_[t] = RopeTables{rope_cos_[t].data(), rope_sin_[t].data(), cap, spec_.rope_dim, spec_.rope_style};
  }
  rope_capacity_ = cap;
}

const RopeTables* KvCache::LayerRope(int layer) const {
  return spec_.rope_dim > 0 ? &rope_views_[layer_table_[layer]] : nullptr;
}

Status KvCache::BeginStep(std::span<const StepChunk> chunks) {
  const int bt = config_.block_tokens;
  int need = 0;
  int64_t max_len = 0;
  for (size_t i = 0; i < chunks.size(); ++i) {
    const StepChunk& c = chunks[i];
    if (!HasSequence(c.seq)) return InvalidArgument("step names unknown sequence {}", c.seq);
    if (c.n_tokens <= 0) return InvalidArgument("step adds {} tokens to sequence {}", c.n_tokens, c.seq);
    for (size_t j = 0; j < i; ++j) {
      if (chunks[j].seq == c.seq) return InvalidArgument("sequence {} appears twice in a step", c.seq);
    }
    const Sequence& s = seqs_[c.seq];
    for (int st = 0; st < streams(); ++st) {
      need += std::max(0, CeilDiv(s.slots[st] + c.n_tokens, bt) - static_cast<int>(s.tables[st].size()));
    }
    max_len = std::max<int64_t>(max_len, std::max<int64_t>(s.next_pos, s.length) + c.n_tokens);
  }
  std::vector<BlockId> fresh;
  if (Status st = AllocateEvicting(staged_pool_, need, &fresh); !st.ok()) {
    return ResourceExhausted("{} (step of {} sequences; raise --kv-mem or shorten the context)",
                             st.message(), chunks.size());
  }
  EnsureRopeTables(max_len);
  if (policy_.kind == PolicyKind::kSnapKv) {  // SnapKV scores by the latest observation window only
    for (const StepChunk& c : chunks)
      for (auto& m : seqs_[c.seq].mass) std::fill(m.begin(), m.end(), 0.0f);
  }
  size_t next = 0;
  for (const StepChunk& c : chunks) {
    Sequence& s = seqs_[c.seq];
    s.pending = c.n_tokens;
    for (int st = 0; st < streams(); ++st) {
      const int want = CeilDiv(s.slots[st] + c.n_tokens, bt);
      while (static_cast<int>(s.tables[st].size()) < want) s.tables[st].push_back(fresh[next++]);
    }
  }
  CHECK(next == fresh.size());
  return Status::Ok();
}

void KvCache::Append(int layer, std::span<const StepChunk> chunks, const float* k, int64_t ldk,
                     const float* v, int64_t ldv) {
  const int bt = config_.block_tokens, hd = spec_.head_dim;
  const RopeTables* rope = config_.k.pre_rope ? nullptr : LayerRope(layer);
  scratch_vec_.resize(2 * hd);
  float* kx = scratch_vec_.data();
  float* vx = kx + hd;
  for (const StepChunk& c : chunks) {
    Sequence& s = Seq(c.seq);
    for (int h = 0; h < spec_.n_kv_heads; ++h) {
      const int st = layer * spec_.n_kv_heads + h;
      const auto& table = s.tables[st];
      for (int i = 0; i < c.n_tokens; ++i) {
        const int slot = s.slots[st] + i;
        const int64_t position = s.next_pos + i;
        DCHECK(slot / bt < static_cast<int>(table.size()) && slot / bt >= s.n_sealed[st]);
        uint8_t* block = staged_pool_.Data(table[slot / bt]);
        const int64_t row = c.row + i;
        std::memcpy(kx, k + row * ldk + h * hd, hd * sizeof(float));
        std::memcpy(vx, v + row * ldv + h * hd, hd * sizeof(float));
        if (rope) {
          float cs[kMaxAttnHeadDim / 2], sn[kMaxAttnHeadDim / 2];
          for (int p = 0; p < spec_.rope_dim / 2; ++p) {
            cs[p] = rope->cos[p * rope->stride + position];
            sn[p] = rope->sin[p * rope->stride + position];
          }
          ops::RopeApply(kx, 1, hd, spec_.rope_dim, cs, sn, spec_.rope_style);
        }
        if (config_.k.rotate) k_rot_[st].Apply(kx);
        if (config_.v.rotate) v_rot_[st].Apply(vx);
        EncodeKToken(staged_.k, bt, hd, slot % bt, kx, block);
        EncodeVToken(staged_.v, bt, hd, slot % bt, vx, block + staged_.v_offset);
        if (policy_.active()) {  // metadata for the policy: position and key norm
          if (static_cast<int>(s.pos[st].size()) < slot + 1) {
            s.pos[st].resize(slot + 1);
            s.mass[st].resize(slot + 1, 0.0f);
            s.last_mass[st].resize(slot + 1, 0.0f);
            s.score[st].resize(slot + 1, 0.0f);
          }
          s.pos[st][slot] = static_cast<int32_t>(position);
          s.mass[st][slot] = s.last_mass[st][slot] = 0.0f;
          double norm = 0;
          for (int d = 0; d < hd; ++d) norm += static_cast<double>(kx[d]) * kx[d];
          s.score[st][slot] = -static_cast<float>(std::sqrt(norm));  // knorm keeps small keys
        }
      }
    }
  }
}

void KvCache::Attend(ThreadPool& pool, int layer, std::span<const StepChunk> chunks,
                     const float* q, int64_t ldq, float* out, int64_t ldo, float scale) {
  const int H = spec_.n_kv_heads, G = spec_.group_size(), hd = spec_.head_dim;
  const int bt = config_.block_tokens;
  const int window = spec_.window(layer);
  const int tile_tokens = std::max(1, kMaxAttnTaskRows / G);
  const RopeTables* rope = config_.k.pre_rope ? LayerRope(layer) : nullptr;
  if (policy_.needs_queries()) {
    for (const StepChunk& c : chunks) UpdateQueryStats(Seq(c.seq), layer, q + c.row * ldq, ldq, c.n_tokens);
  }

  // Block pointers of every (chunk, head) stream.
  scratch_blocks_.clear();
  std::vector<size_t> stream_begin;
  for (const StepChunk& c : chunks) {
    const Sequence& s = Seq(c.seq);
    for (int h = 0; h < H; ++h) {
      const int st = layer * H + h;
      stream_begin.push_back(scratch_blocks_.size());
      for (int b = 0; b < static_cast<int>(s.tables[st].size()); ++b) scratch_blocks_.push_back(BlockData(s, st, b));
    }
  }

  // Units: (chunk, head, tile of query tokens); each is split into parts over its keys when
  // there are too few units to keep every thread busy (decode over a long context).
  struct Unit {
    int chunk, head, t0, nt, part0, n_parts;
  };
  std::vector<Unit> units;
  int64_t max_keys = 0;
  for (size_t ci = 0; ci < chunks.size(); ++ci) {
    for (int h = 0; h < H; ++h)
      for (int t0 = 0; t0 < chunks[ci].n_tokens; t0 += tile_tokens)
        units.push_back({static_cast<int>(ci), h, t0, std::min(tile_tokens, chunks[ci].n_tokens - t0), 0, 1});
    for (int h = 0; h < H; ++h) max_keys = std::max<int64_t>(max_keys, Seq(chunks[ci].seq).slots[layer * H + h] + chunks[ci].n_tokens);
  }
  if (units.empty()) return;
  const int want_tasks = 2 * pool.num_threads();
  int parts = 1;
  if (static_cast<int>(units.size()) < want_tasks) {
    parts = std::min(CeilDiv(want_tasks, units.size()), std::max(1, static_cast<int>(max_keys / kMinKeysPerPart)));
  }
  scratch_tasks_.clear();
  for (Unit& u : units) {
    const StepChunk& c = chunks[u.chunk];
    const Sequence& s = Seq(c.seq);
    const int st = layer * H + u.head;
    AttnTask t;
    t.blocks = scratch_blocks_.data() + stream_begin[u.chunk * H + u.head];
    t.n_sealed = staged_only() ? 0 : s.n_sealed[st];
    t.sealed = &sealed_;
    t.staged = &staged_;
    t.block_tokens = bt;
    t.head_dim = hd;
    t.rope = rope;
    t.k_rotation = config_.k.rotate ? &k_rot_[st] : nullptr;
    t.q = q + (c.row + u.t0) * ldq + u.head * G * hd;
    t.ldq = ldq;
    t.scale = scale;
    t.n_q_tokens = u.nt;
    t.group = G;
    t.first_q_slot = s.slots[st] + u.t0;
    t.window = window;
    const int key_end = s.slots[st] + u.t0 + u.nt;
    const int key_begin = window > 0 ? std::max(0, t.first_q_slot - window + 1) : 0;
    // Split [key_begin, key_end) into up to `parts` ranges aligned to blocks.
    const int b0 = key_begin / bt, n_blocks = CeilDiv(key_end, bt) - b0;
    const int np = std::max(1, std::min(parts, n_blocks));
    u.part0 = static_cast<int>(scratch_tasks_.size());
    u.n_parts = np;
    for (int p = 0; p < np; ++p) {
      t.key_begin = std::max(key_begin, (b0 + static_cast<int>(static_cast<int64_t>(n_blocks) * p / np)) * bt);
      t.key_end = std::min(key_end, (b0 + static_cast<int>(static_cast<int64_t>(n_blocks) * (p + 1) / np)) * bt);
      scratch_tasks_.push_back(t);
    }
  }
  // Attention mass for the eviction policy: the scores of the step's last tokens (all of a
  // decode step; a prompt chunk's last 32, or SnapKV's observation window) are kept and
  // turned into weights once the parts of each unit are merged.
  const bool want_mass = policy_.active() && policy_.needs_mass();
  scratch_score_off_.assign(scratch_tasks_.size(), SIZE_MAX);
  if (want_mass) {
    size_t total = 0;
    for (const Unit& u : units) {
      const StepChunk& c = chunks[u.chunk];
      const int n_mass = c.n_tokens == 1 ? 1 : (policy_.kind == PolicyKind::kSnapKv ? policy_.obs_window : kMassTokens);
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
      if (scratch_score_off_[i] != SIZE_MAX) scratch_tasks_[i].scores_out = scratch_scores_.data() + scratch_score_off_[i];
    }
  }
  const size_t rows_max = static_cast<size_t>(tile_tokens) * G;
  scratch_ml_.resize(2 * rows_max * units.size());
  const size_t stride = rows_max * (hd + 2);
  scratch_partials_.resize(stride * scratch_tasks_.size());
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
  if (parts == 1) {
    pool.Run(static_cast<int>(units.size()), [&](int i, int thread) {
      run_task(units[i].part0, thread);
      merge(units[i]);
    });
  } else {
    pool.Run(static_cast<int>(scratch_tasks_.size()), [&](int i, int thread) { run_task(i, thread); });
    pool.Run(static_cast<int>(units.size()), [&](int i, int) { merge(units[i]); });
  }
  if (!want_mass) return;
  // Weights exp(score - max) / sum per mass row, summed into each stream's slots: `mass`
  // accumulates, `last_mass` is the latest token's (heads averaged). One task per stream.
  pool.Run(static_cast<int>(chunks.size()) * H, [&](int job, int) {
    const int ci = job / H, h = job % H, st = layer * H + h;
    Sequence& s = Seq(chunks[ci].seq);
    auto& mass = s.mass[st];
    auto& last = s.last_mass[st];
    std::fill(last.begin(), last.end(), 0.0f);
    for (size_t ui = 0; ui < units.size(); ++ui) {
      const Unit& u = units[ui];
      if (u.chunk != ci || u.head != h) continue;
      const float* mm = scratch_ml_.data() + 2 * rows_max * ui;
      for (int p = 0; p < u.n_parts; ++p) {
        const AttnTask& t = scratch_tasks_[u.part0 + p];
        if (!t.scores_out) continue;
        const int range = t.key_end - t.key_begin;
        for (int i = t.mass_first_token; i < u.nt; ++i) {
          const bool newest = u.t0 + i == chunks[ci].n_tokens - 1;
          for (int g = 0; g < G; ++g) {
            const int r = i * G + g;
            const float m = mm[r], l = mm[rows_max + r];
            if (!(l > 0)) continue;
            const float* sc = t.scores_out + static_cast<int64_t>((i - t.mass_first_token) * G + g) * range;
            for (int k = 0; k < range; ++k) {
              if (sc[k] == -std::numeric_limits<float>::infinity()) continue;
              const float w = std::exp(sc[k] - m) / l;
              mass[t.key_begin + k] += w;
              if (newest) last[t.key_begin + k] += w / G;
            }
          }
        }
      }
    }
  });
}

void KvCache::EndStep(std::span<const StepChunk> chunks) {
  for (const StepChunk& c : chunks) {
    Sequence& s = Seq(c.seq);
    s.length += c.n_tokens;
    s.pending = 0;
    for (int& n : s.slots) n += c.n_tokens;
    s.next_pos = policy_.reindexes() ? s.slots[0] : s.length;
    DropOutOfWindow(s);
    // Decode steps keep a stream within budget + one block (evicting a block's worth at a
    // time amortises the compaction); prompt chunks may grow to twice the budget. SnapKV
    // decides once, at the end of the prompt (Compress), from the attention of the prompt's
    // last tokens, so it leaves prompt chunks alone.
    if (policy_.active()) {
      const int slack = c.n_tokens == 1 ? config_.block_tokens
                                        : (policy_.kind == PolicyKind::kSnapKv ? 1 << 30 : policy_.budget);
      Evict(s, slack);
    }
    if (!staged_only()) Seal(s);
  }
}

void KvCache::Seal(Sequence& s) {
  const int bt = config_.block_tokens, hd = spec_.head_dim;
  std::vector<float> k(static_cast<size_t>(bt) * hd), v(static_cast<size_t>(bt) * hd);
  std::vector<BlockId> fresh;
  for (int st = 0; st < streams(); ++st) {
    // Blocks whose every slot is older than the residual window.
    const int sealable = std::max(0, s.slots[st] - config_.residual) / bt;
    auto& table = s.tables[st];
    s.n_sealed[st] = std::max(s.n_sealed[st], s.first_live[st]);
    while (s.n_sealed[st] < sealable) {
      const int b = s.n_sealed[st];
      const uint8_t* src = staged_pool_.Data(table[b]);
      for (int t = 0; t < bt; ++t) {
        DecodeK(staged_.k, bt, hd, t, src, &k[static_cast<size_t>(t) * hd]);
        DecodeV(staged_.v, bt, hd, t, src + staged_.v_offset, &v[static_cast<size_t>(t) * hd]);
      }
      // A sealed block is smaller than a staging block, so sealing returns budget; it needs
      // one block of headroom only while both exist (and when the staging block is shared,
      // it returns nothing). Without room, the block stays staged until a later step.
      fresh.clear();
      if (!AllocateEvicting(sealed_pool_, 1, &fresh).ok()) return;
      staged_pool_.Release(table[b]);
      uint8_t* dst = sealed_pool_.Data(fresh[0]);
      EncodeKPart(sealed_.k, bt, hd, k.data(), bt, dst);
      EncodeVPart(sealed_.v, bt, hd, v.data(), bt, dst + sealed_.v_offset);
      table[b] = fresh[0];
      ++s.n_sealed[st];
    }
  }
}

void KvCache::DropOutOfWindow(Sequence& s) {
  const int bt = config_.block_tokens;
  for (int l = 0; l < spec_.n_layers; ++l) {
    const int w = spec_.window(l);
    if (w <= 0) continue;
    for (int h = 0; h < spec_.n_kv_heads; ++h) {
      const int st = l * spec_.n_kv_heads + h;
      // The next token (slot `slots`) sees keys > slots - w; later tokens see fewer.
      const int first_visible = std::max(0, s.slots[st] - w + 1);
      const int dead_blocks = first_visible / bt;
      auto& table = s.tables[st];
      for (int b = s.first_live[st]; b < dead_blocks && b < static_cast<int>(table.size()); ++b) {
        (b < s.n_sealed[st] ? sealed_pool_ : staged_pool_).Release(table[b]);
        table[b] = kNoBlock;
      }
      s.first_live[st] = std::max(s.first_live[st], std::min(dead_blocks, static_cast<int>(table.size())));
      s.n_sealed[st] = std::max(s.n_sealed[st], s.first_live[st]);
    }
  }
}

Status KvCache::AllocateEvicting(BlockPool& pool, int n, std::vector<BlockId>* out) {
  Status st = pool.Allocate(n, out);
  while (!st.ok() && st.code() == StatusCode::kResourceExhausted && EvictOnePrefix()) st = pool.Allocate(n, out);
  return st;
}

Status KvCache::ReadTokens(SeqId id, int layer, int head, int first, int n, float* k, float* v) const {
  if (!HasSequence(id)) return InvalidArgument("no sequence {}", id);
  if (layer < 0 || layer >= spec_.n_layers || head < 0 || head >= spec_.n_kv_heads) {
    return InvalidArgument("no stream for layer {} head {}", layer, head);
  }
  return ReadTokensOf(seqs_[id], layer * spec_.n_kv_heads + head, first, n, k, v);
}

Status KvCache::ReadTokensOf(const Sequence& s, int st, int first, int n, float* k, float* v) const {
  const int bt = config_.block_tokens, hd = spec_.head_dim;
  if (first < 0 || n < 0 || first + n > s.slots[st] || (n > 0 && first / bt < s.first_live[st])) {
    return OutOfRange("tokens [{}, {}) of a stream holding [{}, {})", first, first + n,
                      s.first_live[st] * bt, s.slots[st]);
  }
  for (int i = 0; i < n; ++i) {
    const int slot = first + i, b = slot / bt;
    const bool sealed = !staged_only() && b < s.n_sealed[st];
    const BlockKind& kind = sealed ? sealed_ : staged_;
    const uint8_t* block = BlockData(s, st, b);
    DecodeK(kind.k, bt, hd, slot % bt, block, k + static_cast<size_t>(i) * hd);
    DecodeV(kind.v, bt, hd, slot % bt, block + kind.v_offset, v + static_cast<size_t>(i) * hd);
  }
  return Status::Ok();
}

size_t KvCache::DataBytesPerToken() const {
  return static_cast<size_t>(kv::DataBytesPerToken(spec_, config_));
}
size_t KvCache::MetaBytesPerToken() const {
  return static_cast<size_t>(kv::MetaBytesPerToken(spec_, config_));
}

KvUsage KvCache::LayerUsage(SeqId id, int layer) const {
  const Sequence& s = Seq(id);
  KvUsage u;
  for (int h = 0; h < spec_.n_kv_heads; ++h) {
    const int st = layer * spec_.n_kv_heads + h;
    const StreamBlocks b{.first_live = s.first_live[st],
                         .n_sealed = staged_only() ? 0 : s.n_sealed[st],
                         .n_blocks = static_cast<int64_t>(s.tables[st].size())};
    u += StreamUsage(config_, spec_.head_dim, b, s.slots[st]);
  }
  return u;
}

KvUsage KvCache::SequenceUsage(SeqId id) const {
  KvUsage total;
  for (int l = 0; l < spec_.n_layers; ++l) total += LayerUsage(id, l);
  total.tokens = Seq(id).length;
  return total;
}

KvUsage KvCache::TotalUsage() const {
  KvUsage total;
  int64_t tokens = 0;
  for (size_t i = 0; i < seqs_.size(); ++i) {
    if (!seqs_[i].live) continue;
    total += SequenceUsage(static_cast<SeqId>(i));
    tokens += seqs_[i].length;
  }
  total.tokens = tokens;
  return total;
}

void KvCache::CheckInvariants() const {
  staged_pool_.CheckInvariants();
  if (!staged_only()) sealed_pool_.CheckInvariants();
  std::vector<int> staged_refs(staged_pool_.capacity(), 0), sealed_refs(staged_only() ? 0 : sealed_pool_.capacity(), 0);
  for (const Sequence& s : seqs_) {
    if (!s.live) continue;
    CHECK(static_cast<int>(s.tables.size()) == streams());
    for (int st = 0; st < streams(); ++st) {
      const auto& table = s.tables[st];
      CHECK(static_cast<int>(table.size()) >= CeilDiv(s.slots[st], config_.block_tokens),
            "table of {} blocks for {} tokens", table.size(), s.slots[st]);
      CHECK(s.slots[st] <= s.length, "stream {} holds {} slots of {} tokens", st, s.slots[st], s.length);
      CHECK(s.n_sealed[st] >= s.first_live[st] || staged_only(), "stream {}: sealed before first live", st);
      CHECK(s.n_sealed[st] * config_.block_tokens <= s.slots[st] || staged_only(),
            "stream {}: a block that is not full is sealed", st);
      for (int b = 0; b < static_cast<int>(table.size()); ++b) {
        CHECK((b < s.first_live[st]) == (table[b] == kNoBlock), "stream {} block {}: freed/live mismatch", st, b);
        if (table[b] == kNoBlock) continue;
        if (!staged_only() && b < s.n_sealed[st]) {
          ++sealed_refs[table[b]];
        } else {
          ++staged_refs[table[b]];
        }
      }
    }
  }
  prefix_.ForEach([&](const PrefixEntry& e) {
    for (int st = 0; st < streams(); ++st) {
      if (e.blocks[st] == kNoBlock) continue;
      if (e.sealed[st]) {
        ++sealed_refs[e.blocks[st]];
      } else {
        ++staged_refs[e.blocks[st]];
      }
    }
  });
  for (int b = 0; b < staged_pool_.capacity(); ++b) {
    CHECK(staged_refs[b] == staged_pool_.RefCount(b), "staging block {}: {} table references, refcount {}", b,
          staged_refs[b], staged_pool_.RefCount(b));
  }
  for (size_t b = 0; b < sealed_refs.size(); ++b) {
    CHECK(sealed_refs[b] == sealed_pool_.RefCount(static_cast<BlockId>(b)),
          "sealed block {}: {} table references, refcount {}", b, sealed_refs[b],
          sealed_pool_.RefCount(static_cast<BlockId>(b)));
  }
  CHECK(budget_.used == staged_pool_.bytes_used() + (staged_only() ? 0 : sealed_pool_.bytes_used()),
        "budget says {} bytes used, pools {}", budget_.used,
        staged_pool_.bytes_used() + (staged_only() ? 0 : sealed_pool_.bytes_used()));
  // The footprint rule. A policy compacts streams its own way; sealing waits while the pool
  // has no room (never ahead of the rule), and an attached prefix may arrive sealed.
  if (policy_.active()) return;
  for (size_t i = 0; i < seqs_.size(); ++i) {
    const Sequence& s = seqs_[i];
    if (!s.live) continue;
    bool at_rule = true;
    for (int st = 0; st < streams(); ++st) {
      const StreamBlocks r =
          RuleBlocks(config_, spec_.window(st / spec_.n_kv_heads), s.slots[st] + s.pending, s.pending);
      CHECK(static_cast<int64_t>(s.tables[st].size()) == r.n_blocks && s.first_live[st] == r.first_live,
            "sequence {} stream {}: blocks [{}, {}), the footprint rule says [{}, {})", i, st,
            s.first_live[st], s.tables[st].size(), r.first_live, r.n_blocks);
      if (staged_only()) continue;
      CHECK(s.attached || s.n_sealed[st] <= r.n_sealed,
            "sequence {} stream {}: {} blocks sealed, the rule seals {}", i, st, s.n_sealed[st], r.n_sealed);
      at_rule = at_rule && s.n_sealed[st] == r.n_sealed;
    }
    if (!at_rule) continue;
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
}

}  // namespace slimkv::kv
