#include "kv/kv_cache.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "base/check.h"
#include "base/int_math.h"
#include "kv/codec.h"

namespace slimkv::kv {
namespace {

// Seed of the Hadamard rotations (fixed: a stream's rotation is the same in
// every process).
constexpr uint64_t kRotationSeed = 0x5EED5EED5EEDull;

}  // namespace

Result<std::unique_ptr<KvCache>> KvCache::Create(const KvSpec& spec, const KvConfig& config,
                                                 size_t budget_bytes) {
  if (spec.n_layers <= 0 || spec.n_kv_heads <= 0 || spec.head_dim <= 0 || spec.n_q_heads <= 0 ||
      spec.n_q_heads % spec.n_kv_heads != 0) {
    return InvalidArgument("bad KV spec: {} layers, {} KV heads, {} query heads, head dim {}", spec.n_layers,
                           spec.n_kv_heads, spec.n_q_heads, spec.head_dim);
  }
  if (spec.head_dim % 16 != 0 || spec.head_dim > kMaxAttnHeadDim) {
    return Unimplemented("head dim {} is not supported by the KV cache (a multiple of 16 up to {})",
                         spec.head_dim, kMaxAttnHeadDim);
  }
  if (!spec.layer_window.empty() && static_cast<int>(spec.layer_window.size()) != spec.n_layers) {
    return InvalidArgument("KV spec has {} layer windows for {} layers", spec.layer_window.size(),
                           spec.n_layers);
  }
  for (int w : spec.layer_window) {
    if (w < 0) return InvalidArgument("sliding window {} is negative", w);
  }
  if (spec.group_size() > kMaxAttnTaskRows) {
    return Unimplemented("{} query heads per KV head is more than the {} supported", spec.group_size(),
                         kMaxAttnTaskRows);
  }
  if (spec.rope_dim > 0 && (spec.rope_dim % 2 != 0 || spec.rope_dim > spec.head_dim ||
                            static_cast<int>(spec.layer_inv_freq.size()) != spec.n_layers)) {
    return InvalidArgument("bad RoPE spec: dim {} for head dim {}, {} frequency sets for {} layers",
                           spec.rope_dim, spec.head_dim, spec.layer_inv_freq.size(), spec.n_layers);
  }
  if (config.block_tokens <= 0 || config.block_tokens % 16 != 0 ||
      config.block_tokens > kMaxAttnBlockTokens) {
    return InvalidArgument("block size {} tokens: must be a multiple of 16 up to {}", config.block_tokens,
                           kMaxAttnBlockTokens);
  }
  if (config.residual < 0 || config.residual % config.block_tokens != 0) {
    return InvalidArgument("residual window {} tokens: must be a multiple of the block size {}",
                           config.residual, config.block_tokens);
  }
  RETURN_IF_ERROR(CheckFormat(config.k, spec.head_dim, true));
  RETURN_IF_ERROR(CheckFormat(config.v, spec.head_dim, false));
  if (config.k.pre_rope && spec.rope_dim == 0) {
    return InvalidArgument("K format {}: the model has no RoPE to apply later", FormatName(config.k));
  }
  std::unique_ptr<KvCache> c(new KvCache(spec, config));
  ASSIGN_OR_RETURN(c->store_, BlockStore::Create(config, spec.head_dim, budget_bytes));
  return c;
}

KvCache::KvCache(const KvSpec& spec, const KvConfig& config)
    : spec_(spec), config_(config), prefix_(spec, config.block_tokens, &store_) {
  const int hd = spec.head_dim;
  for (int l = 0; l < spec.n_layers; ++l) {
    for (int h = 0; h < spec.n_kv_heads; ++h) {
      if (config.k.rotate) k_rot_.emplace_back(hd, kRotationSeed, l, h);
      if (config.v.rotate) v_rot_.emplace_back(hd, kRotationSeed ^ 0xABCDull, l, h);
    }
  }
  // One angle table per distinct set of frequencies (Gemma: local and global
  // layers).
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

size_t KvCache::BudgetFor(const KvSpec& spec, const KvConfig& config, int64_t tokens, int sequences,
                          int step_tokens) {
  return PeakSequenceBytes(spec, config, tokens, step_tokens) * std::max(0, sequences);
}

Status KvCache::SetPolicy(const PolicySpec& policy) {
  for (const Sequence& s : seqs_) {
    if (s.live) return InvalidArgument("the KV policy must be set before any sequence exists");
  }
  if (policy.active() && config_.k.pre_rope && !policy.reindexes()) {
    return InvalidArgument(
        "policy {} keeps original positions, which keys stored before RoPE cannot carry; use window or "
        "sinks, or post-RoPE keys",
        PolicyName(policy));
  }
  if (policy.active() && policy.budget < config_.block_tokens) {
    return InvalidArgument("--kv-budget {} is smaller than one block of {} tokens", policy.budget,
                           config_.block_tokens);
  }
  policy_ = policy;
  evictor_ = EvictionPolicy::Create(policy);
  return Status::Ok();
}

SeqId KvCache::AddSequence() {
  Sequence s;
  s.live = true;
  s.prompt_open = policy_.active();
  s.tables.resize(streams());
  s.stats.resize(streams());
  if (policy_.recall) s.recall.resize(streams());
  size_t i = 0;
  while (i < seqs_.size() && seqs_[i].live) ++i;
  if (i == seqs_.size()) seqs_.emplace_back();
  seqs_[i] = std::move(s);
  return static_cast<SeqId>(i);
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

void KvCache::RemoveSequence(SeqId id) {
  Sequence& s = Seq(id);
  for (BlockTable& t : s.tables) {
    for (int b = t.first_live; b < t.n_blocks(); ++b) store_.Release(t.sealed[b], t.ids[b]);
  }
  for (const RecallStream& r : s.recall)
    for (const ColdBlock& c : r.cold) evict_stats_.host_bytes -= static_cast<int64_t>(c.HostBytes());
  if (spill_fp_) ForgetSpilled(s);
  s = Sequence{};
}

int KvCache::Length(SeqId id) const { return Seq(id).length; }
int KvCache::AttachedTokens(SeqId id) const { return Seq(id).attached; }

int KvCache::Slots(SeqId id, int layer, int head) const {
  return Seq(id).tables[layer * spec_.n_kv_heads + head].Held();
}

void KvCache::EnsureRopeTables(int64_t positions) {
  if (spec_.rope_dim == 0 || positions <= rope_capacity_) return;
  const int64_t cap = std::max<int64_t>(positions, 2 * rope_capacity_);
  const int half = spec_.rope_dim / 2;
  // The `:pre` kernel rotates whole blocks: a partly filled last block reads up to a block past the
  // last position, so the tables end in a block of zeros (the rotated slots are never scored).
  const size_t size = static_cast<size_t>(half) * cap + kMaxAttnBlockTokens;
  for (int l = 0; l < spec_.n_layers; ++l) {
    const int t = layer_table_[l];
    if (rope_cos_[t].size() == size) continue;  // filled by an earlier layer
    rope_cos_[t].assign(size, 0.0f);
    rope_sin_[t].assign(size, 0.0f);
    std::vector<float> c(half), s(half);
    for (int64_t pos = 0; pos < cap; ++pos) {
      ops::RopeAngles(pos, spec_.layer_inv_freq[l], c.data(), s.data());
      for (int i = 0; i < half; ++i) {
        rope_cos_[t][i * cap + pos] = c[i];
        rope_sin_[t][i * cap + pos] = s[i];
      }
    }
    rope_views_[t] =
        RopeTables{rope_cos_[t].data(), rope_sin_[t].data(), cap, spec_.rope_dim, spec_.rope_style};
  }
  rope_capacity_ = cap;
}

const RopeTables* KvCache::LayerRope(int layer) const {
  return spec_.rope_dim > 0 ? &rope_views_[layer_table_[layer]] : nullptr;
}

Status KvCache::AllocateEvicting(bool sealed, int n, std::vector<BlockId>* out) {
  return prefix_.AllocateEvicting(sealed, n, out);
}

Status KvCache::BeginStep(std::span<const StepChunk> chunks) {
  const int bt = config_.block_tokens;
  int need = 0;
  int64_t max_slot = 0, rows = 0;
  for (size_t i = 0; i < chunks.size(); ++i) {
    const StepChunk& c = chunks[i];
    if (!HasSequence(c.seq)) return InvalidArgument("step names unknown sequence {}", c.seq);
    if (c.n_tokens <= 0) return InvalidArgument("step adds {} tokens to sequence {}", c.n_tokens, c.seq);
    for (size_t j = 0; j < i; ++j) {
      if (chunks[j].seq == c.seq) return InvalidArgument("sequence {} appears twice in a step", c.seq);
    }
    if (seqs_[c.seq].pending > 0) return InvalidArgument("sequence {} already has a step reserved", c.seq);
    // A prompt's eviction waits for its next step (or Compress), so the blocks of the last chunk could be
    // published to the prefix cache as they were computed.
    if (seqs_[c.seq].prompt_open && policy_.active()) Evict(seqs_[c.seq], /*at_prompt_end=*/false);
    const Sequence& s = seqs_[c.seq];
    for (const BlockTable& t : s.tables) {
      need += std::max(0, CeilDiv(t.slots + c.n_tokens, bt) - t.n_blocks());
      max_slot = std::max<int64_t>(max_slot, t.slots + c.n_tokens);
    }
    rows = std::max<int64_t>(rows, c.row + c.n_tokens);
  }
  std::vector<BlockId> fresh;
  if (Status st = AllocateEvicting(false, need, &fresh); !st.ok()) {
    return ResourceExhausted("{} (step of {} sequences; raise --kv-mem or shorten the context)", st.message(),
                             chunks.size());
  }
  if (config_.k.pre_rope) EnsureRopeTables(max_slot);  // keys are rotated by slot in the kernel
  size_t next = 0;
  for (const StepChunk& c : chunks) {
    Sequence& s = seqs_[c.seq];
    s.pending = c.n_tokens;
    for (BlockTable& t : s.tables) {
      while (t.n_blocks() < CeilDiv(t.slots + c.n_tokens, bt)) t.Push(fresh[next++], false);
    }
  }
  CHECK(next == fresh.size());
  // RoPE angles of the step's rows (keys stored after RoPE), one table per
  // frequency set.
  if (spec_.rope_dim > 0 && !config_.k.pre_rope) {
    const int half = spec_.rope_dim / 2;
    const size_t sets = rope_cos_.size();
    step_cos_.assign(sets * rows * half, 0.0f);
    step_sin_.assign(sets * rows * half, 0.0f);
    for (int l = 0; l < spec_.n_layers; ++l) {
      const int t = layer_table_[l];
      if (std::find(layer_table_.begin(), layer_table_.begin() + l, t) != layer_table_.begin() + l) continue;
      for (const StepChunk& c : chunks) {
        for (int i = 0; i < c.n_tokens; ++i) {
          const size_t at = (t * rows + c.row + i) * half;
          ops::RopeAngles(seqs_[c.seq].length + i, spec_.layer_inv_freq[l], &step_cos_[at], &step_sin_[at]);
        }
      }
    }
    step_rows_ = rows;
  }
  return Status::Ok();
}

void KvCache::CancelStep(std::span<const StepChunk> chunks) {
  const int bt = config_.block_tokens;
  for (const StepChunk& c : chunks) {
    if (!HasSequence(c.seq)) continue;
    Sequence& s = seqs_[c.seq];
    for (BlockTable& t : s.tables) {
      while (t.n_blocks() > std::max(t.first_live, CeilDiv(t.slots, bt))) {
        store_.Release(t.sealed.back(), t.ids.back());
        t.ids.pop_back();
        t.sealed.pop_back();
        t.fill.pop_back();
      }
    }
    s.pending = 0;
  }
}

bool KvCache::StepReserved(std::span<const StepChunk> chunks) const {
  for (const StepChunk& c : chunks) {
    if (!HasSequence(c.seq) || seqs_[c.seq].pending != c.n_tokens) return false;
  }
  return !chunks.empty();
}

void KvCache::Append(int layer, std::span<const StepChunk> chunks, const float* k, int64_t ldk,
                     const float* v, int64_t ldv) {
  const int bt = config_.block_tokens, hd = spec_.head_dim, half = spec_.rope_dim / 2;
  const bool rope = spec_.rope_dim > 0 && !config_.k.pre_rope;
  const int64_t rows = step_rows_;
  const BlockKind& kind = store_.kind(false);
  scratch_vec_.resize(2 * hd);
  float* kx = scratch_vec_.data();
  float* vx = kx + hd;
  for (const StepChunk& c : chunks) {
    Sequence& s = Seq(c.seq);
    DCHECK(s.pending == c.n_tokens);
    for (int h = 0; h < spec_.n_kv_heads; ++h) {
      const int st = layer * spec_.n_kv_heads + h;
      BlockTable& t = s.tables[st];
      const bool policy = PolicyStream(st);
      if (policy) s.stats[st].Grow(t.slots + c.n_tokens);
      for (int i = 0; i < c.n_tokens; ++i) {
        const int slot = t.slots + i;
        DCHECK(slot / bt < t.n_blocks() && !t.sealed[slot / bt]);
        uint8_t* block = store_.Data(false, t.ids[slot / bt]);
        const int64_t row = c.row + i;
        std::memcpy(kx, k + row * ldk + h * hd, hd * sizeof(float));
        std::memcpy(vx, v + row * ldv + h * hd, hd * sizeof(float));
        if (rope) {
          const size_t at = (layer_table_[layer] * rows + row) * half;
          ops::RopeApply(kx, 1, hd, spec_.rope_dim, &step_cos_[at], &step_sin_[at], spec_.rope_style);
        }
        if (policy) {
          TokenStats& ts = s.stats[st];
          ts.pos[slot] = s.length + i;
          ts.mass[slot] = ts.last_mass[slot] = 0.0f;
          ts.score[slot] = evictor_->OnAppend(kx, vx, hd);
        }
        if (config_.k.rotate) k_rot_[st].Apply(kx);
        if (config_.v.rotate) v_rot_[st].Apply(vx);
        EncodeKToken(kind.k, bt, hd, slot % bt, kx, block);
        EncodeVToken(kind.v, bt, hd, slot % bt, vx, block + kind.v_offset);
      }
    }
  }
}

void KvCache::EndStep(std::span<const StepChunk> chunks, ThreadPool* pool) {
  const int bt = config_.block_tokens;
  for (const StepChunk& c : chunks) {
    Sequence& s = Seq(c.seq);
    if (s.plain == s.length) s.plain += c.n_tokens;
    s.length += c.n_tokens;
    s.pending = 0;
    for (BlockTable& t : s.tables) {
      for (int slot = t.slots; slot < t.slots + c.n_tokens; ++slot) ++t.fill[slot / bt];
      t.slots += c.n_tokens;
    }
    DropOutOfWindow(s);
    if (policy_.active() && !s.prompt_open) Evict(s, /*at_prompt_end=*/false);
    if (!staged_only()) Seal(s);
    Recall(s, pool);
  }
}

void KvCache::Compress(SeqId id) {
  Sequence& s = Seq(id);
  if (!policy_.active() || !s.prompt_open) return;
  CHECK(s.pending == 0, "Compress during a step of sequence {}", id);
  s.prompt_open = false;
  Evict(s, /*at_prompt_end=*/true);
  DropCarry(s);
  if (!staged_only()) Seal(s);
}

void KvCache::DecodeStaged(const uint8_t* block, int n, float* k, float* v) const {
  const int bt = config_.block_tokens, hd = spec_.head_dim;
  const BlockKind& staged = store_.kind(false);
  for (int i = 0; i < n; ++i) {
    DecodeK(staged.k, bt, hd, i, block, k + static_cast<size_t>(i) * hd);
    DecodeV(staged.v, bt, hd, i, block + staged.v_offset, v + static_cast<size_t>(i) * hd);
  }
}

void KvCache::EncodeFinal(const float* k, const float* v, int n, uint8_t* block) const {
  const int bt = config_.block_tokens, hd = spec_.head_dim;
  const BlockKind& sealed = store_.kind(true);
  EncodeKPart(sealed.k, bt, hd, k, n, block);
  EncodeVPart(sealed.v, bt, hd, v, n, block + sealed.v_offset);
}

void KvCache::Seal(Sequence& s) {
  const int bt = config_.block_tokens, hd = spec_.head_dim;
  std::vector<float> k(static_cast<size_t>(bt) * hd), v(static_cast<size_t>(bt) * hd);
  std::vector<BlockId> fresh;
  for (int st = 0; st < streams(); ++st) {
    const bool policy = PolicyStream(st);
    if (policy && s.prompt_open) continue;  // the prompt stays movable until the policy has chosen
    BlockTable& t = s.tables[st];
    // Blocks whose every token is older than the residual window, in order; a
    // policy's pinned blocks are read as they came.
    for (int b = std::max(t.first_live, policy ? t.pinned : 0); b < t.n_blocks(); ++b) {
      if (t.sealed[b]) continue;
      const bool closed = t.fill[b] == bt || (b + 1 < t.n_blocks() && t.fill[b] > 0);
      if (!closed || b * bt + t.fill[b] > t.slots - config_.residual) break;
      const int n = t.fill[b];
      DecodeStaged(store_.Data(false, t.ids[b]), n, k.data(), v.data());
      // A sealed block is smaller than a staging block, so sealing returns
      // budget; it needs one block of headroom only while both exist (and when
      // the staging block is shared, it returns nothing). Without room, the
      // block stays staged until a later step.
      fresh.clear();
      if (!AllocateEvicting(true, 1, &fresh).ok()) return;
      store_.Release(false, t.ids[b]);
      EncodeFinal(k.data(), v.data(), n, store_.Data(true, fresh[0]));
      t.ids[b] = fresh[0];
      t.sealed[b] = 1;
    }
  }
}

void KvCache::DropOutOfWindow(Sequence& s) {
  const int bt = config_.block_tokens;
  for (int l = 0; l < spec_.n_layers; ++l) {
    const int w = spec_.window(l);
    if (w <= 0) continue;
    for (int h = 0; h < spec_.n_kv_heads; ++h) {
      BlockTable& t = s.tables[l * spec_.n_kv_heads + h];
      // The next token (slot `slots`) sees keys > slots - w; later tokens see
      // fewer.
      const int dead = std::min(std::max(0, t.slots - w + 1) / bt, t.n_blocks());
      for (int b = t.first_live; b < dead; ++b) {
        store_.Release(t.sealed[b], t.ids[b]);
        t.ids[b] = kNoBlock;
        t.sealed[b] = 0;
      }
      t.first_live = std::max(t.first_live, dead);
    }
  }
}

int KvCache::AttachPrefix(SeqId id, uint64_t salt, std::span<const int32_t> tokens, int max_tokens) {
  Sequence& s = Seq(id);
  CHECK(s.length == 0 && s.tables[0].n_blocks() == 0, "AttachPrefix on a sequence that is not empty");
  std::vector<uint8_t> pin(streams());
  for (int st = 0; st < streams(); ++st) pin[st] = PolicyStream(st);
  const int n = prefix_.Attach(s.tables, salt, tokens, max_tokens, pin);
  if (n == 0) return 0;
  s.length = s.plain = s.attached = n;
  for (int st = 0; st < streams(); ++st) {
    if (!PolicyStream(st)) continue;
    TokenStats& ts = s.stats[st];
    ts.Grow(n);
    for (int i = 0; i < n; ++i) ts.pos[i] = i;
  }
  return n;
}

void KvCache::PublishPrefix(SeqId id, uint64_t salt, std::span<const int32_t> tokens) {
  const Sequence& s = Seq(id);
  const size_t n = std::min<size_t>(tokens.size(), std::min(s.plain, s.length));
  prefix_.Publish(s.tables, salt, tokens.first(n));
}

Status KvCache::ReadHeld(const BlockTable& t, int first, int n, float* k, float* v) const {
  const int bt = config_.block_tokens, hd = spec_.head_dim;
  if (first < 0 || n < 0 || first + n > t.Held()) {
    return OutOfRange("tokens [{}, {}) of a stream holding {}", first, first + n, t.Held());
  }
  int rank = 0, out = 0;
  for (int b = t.first_live; b < t.n_blocks() && out < n; ++b) {
    const BlockKind& kind = store_.kind(t.sealed[b]);
    const uint8_t* block = BlockData(t, b);
    for (int i = 0; i < t.fill[b] && out < n; ++i, ++rank) {
      if (rank < first) continue;
      DecodeK(kind.k, bt, hd, i, block, k + static_cast<size_t>(out) * hd);
      DecodeV(kind.v, bt, hd, i, block + kind.v_offset, v + static_cast<size_t>(out) * hd);
      ++out;
    }
  }
  return Status::Ok();
}

Status KvCache::ReadTokens(SeqId id, int layer, int head, int first, int n, float* k, float* v,
                           bool unrotate) const {
  if (!HasSequence(id)) return InvalidArgument("no sequence {}", id);
  if (layer < 0 || layer >= spec_.n_layers || head < 0 || head >= spec_.n_kv_heads) {
    return InvalidArgument("no stream for layer {} head {}", layer, head);
  }
  const int st = layer * spec_.n_kv_heads + head;
  RETURN_IF_ERROR(ReadHeld(seqs_[id].tables[st], first, n, k, v));
  for (int i = 0; unrotate && i < n; ++i) {
    if (config_.k.rotate) k_rot_[st].Inverse(k + static_cast<size_t>(i) * spec_.head_dim);
    if (config_.v.rotate) v_rot_[st].Inverse(v + static_cast<size_t>(i) * spec_.head_dim);
  }
  return Status::Ok();
}

std::vector<float> KvCache::HeldScores(SeqId id, int layer, int head) const {
  const Sequence& s = Seq(id);
  const int st = layer * spec_.n_kv_heads + head, bt = config_.block_tokens;
  if (!PolicyStream(st)) return {};
  const BlockTable& t = s.tables[st];
  std::vector<float> out;
  for (int b = t.first_live; b < t.n_blocks(); ++b)
    for (int i = 0; i < t.fill[b]; ++i) out.push_back(s.stats[st].score[b * bt + i]);
  return out;
}

std::vector<int32_t> KvCache::HeldPositions(SeqId id, int layer, int head) const {
  const Sequence& s = Seq(id);
  const int st = layer * spec_.n_kv_heads + head, bt = config_.block_tokens;
  const BlockTable& t = s.tables[st];
  std::vector<int32_t> out;
  for (int b = t.first_live; b < t.n_blocks(); ++b) {
    for (int i = 0; i < t.fill[b]; ++i) {
      const int slot = b * bt + i;
      out.push_back(PolicyStream(st) ? s.stats[st].pos[slot] : slot);
    }
  }
  return out;
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
    const BlockTable& t = s.tables[layer * spec_.n_kv_heads + h];
    HeldBlocks held;
    for (int b = t.first_live; b < t.n_blocks(); ++b) {
      const bool sealed = !staged_only() && t.sealed[b];
      (sealed ? held.sealed_blocks : held.staged_blocks) += 1;
      (sealed ? held.sealed_tokens : held.staged_tokens) += t.fill[b];
    }
    held.staged_tokens += s.pending;  // a step's tokens in flight occupy their slots already
    u += HeldUsage(config_, spec_.head_dim, held);
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

}  // namespace slimkv::kv
