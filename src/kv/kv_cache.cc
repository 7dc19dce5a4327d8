#include "kv/kv_cache.h"

#include <algorithm>

#include "base/check.h"
#include "kv/codec.h"

namespace slimkv::kv {
namespace {

int CeilDiv(int64_t a, int64_t b) { return static_cast<int>((a + b - 1) / b); }

// Keys per part below which splitting a task's key range over threads does not pay.
constexpr int kMinKeysPerPart = 512;

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
  if (config.block_tokens <= 0 || config.block_tokens % 16 != 0 ||
      config.block_tokens > kMaxAttnBlockTokens) {
    return InvalidArgument("block size {} tokens: must be a multiple of 16 up to {}",
                           config.block_tokens, kMaxAttnBlockTokens);
  }
  const PartLayout k = KLayout(config.k, config.block_tokens, spec.head_dim);
  const PartLayout v = VLayout(config.v, config.block_tokens, spec.head_dim);
  ASSIGN_OR_RETURN(BlockPool pool, BlockPool::Create(k.total() + v.total(), budget_bytes));
  return std::unique_ptr<KvCache>(new KvCache(spec, config, std::move(pool)));
}

KvCache::KvCache(const KvSpec& spec, const KvConfig& config, BlockPool pool)
    : spec_(spec), config_(config),
      k_layout_(KLayout(config.k, config.block_tokens, spec.head_dim)),
      v_layout_(VLayout(config.v, config.block_tokens, spec.head_dim)),
      pool_(std::move(pool)) {}

size_t KvCache::BudgetFor(const KvSpec& spec, const KvConfig& config, int64_t tokens,
                          int sequences, int step_tokens) {
  if (config.block_tokens <= 0) return 0;  // Create rejects the config with a message
  const size_t block = (KLayout(config.k, config.block_tokens, spec.head_dim).total() +
                        VLayout(config.v, config.block_tokens, spec.head_dim).total() + 63) / 64 * 64;
  size_t blocks = 0;
  for (int l = 0; l < spec.n_layers; ++l) {
    int64_t held = tokens;
    // A window layer holds the window, the step's tokens and a partly dead first block.
    if (spec.window(l) > 0) held = std::min<int64_t>(tokens, spec.window(l) + step_tokens + config.block_tokens);
    blocks += static_cast<size_t>(CeilDiv(held, config.block_tokens) + (spec.window(l) > 0 ? 1 : 0));
  }
  return blocks * spec.n_kv_heads * sequences * block;
}

KvCache::Sequence KvCache::NewSequence() const {
  return Sequence{true, 0, std::vector<std::vector<BlockId>>(streams()), std::vector<int>(streams(), 0)};
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

void KvCache::RemoveSequence(SeqId id) {
  Sequence& s = Seq(id);
  for (auto& table : s.tables)
    for (BlockId b : table)
      if (b != kNoBlock) pool_.Release(b);
  s = Sequence{};
}

int KvCache::Length(SeqId id) const { return Seq(id).length; }

Status KvCache::BeginStep(std::span<const StepChunk> chunks) {
  const int bt = config_.block_tokens;
  int need = 0;
  for (size_t i = 0; i < chunks.size(); ++i) {
    const StepChunk& c = chunks[i];
    if (!HasSequence(c.seq)) return InvalidArgument("step names unknown sequence {}", c.seq);
    for (size_t j = 0; j < i; ++j) {
      if (chunks[j].seq == c.seq) return InvalidArgument("sequence {} appears twice in a step", c.seq);
    }
    const Sequence& s = seqs_[c.seq];
    const int have = static_cast<int>(s.tables[0].size());
    need += std::max(0, CeilDiv(s.length + c.n_tokens, bt) - have) * streams();
  }
  std::vector<BlockId> fresh;
  if (Status st = pool_.Allocate(need, &fresh); !st.ok()) {
    return ResourceExhausted("{} (step of {} sequences; raise --kv-mem or shorten the context)",
                             st.message(), chunks.size());
  }
  size_t next = 0;
  for (const StepChunk& c : chunks) {
    Sequence& s = seqs_[c.seq];
    const int want = CeilDiv(s.length + c.n_tokens, bt);
    for (auto& table : s.tables)
      while (static_cast<int>(table.size()) < want) table.push_back(fresh[next++]);
  }
  CHECK(next == fresh.size());
  return Status::Ok();
}

void KvCache::Append(int layer, std::span<const StepChunk> chunks, const float* k, int64_t ldk,
                     const float* v, int64_t ldv) {
  const int bt = config_.block_tokens, hd = spec_.head_dim;
  for (const StepChunk& c : chunks) {
    Sequence& s = Seq(c.seq);
    for (int h = 0; h < spec_.n_kv_heads; ++h) {
      const auto& table = s.tables[layer * spec_.n_kv_heads + h];
      for (int i = 0; i < c.n_tokens; ++i) {
        const int slot = s.length + i;
        DCHECK(slot / bt < static_cast<int>(table.size()));
        uint8_t* block = pool_.Data(table[slot / bt]);
        const int64_t row = c.row + i;
        EncodeK(config_.k, bt, hd, slot % bt, k + row * ldk + h * hd, block);
        EncodeV(config_.v, bt, hd, slot % bt, v + row * ldv + h * hd, block + k_layout_.total());
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

  // Block pointers of every (chunk, head) stream.
  scratch_blocks_.clear();
  std::vector<size_t> stream_begin;
  for (const StepChunk& c : chunks) {
    const Sequence& s = Seq(c.seq);
    for (int h = 0; h < H; ++h) {
      stream_begin.push_back(scratch_blocks_.size());
      for (BlockId b : s.tables[layer * H + h]) scratch_blocks_.push_back(b == kNoBlock ? nullptr : pool_.Data(b));
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
    max_keys = std::max<int64_t>(max_keys, Seq(chunks[ci].seq).length + chunks[ci].n_tokens);
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
    const int len = Seq(c.seq).length;
    AttnTask t;
    t.blocks = scratch_blocks_.data() + stream_begin[u.chunk * H + u.head];
    t.block_tokens = bt;
    t.head_dim = hd;
    t.v_offset = k_layout_.total();
    t.k_type = config_.k.type;
    t.v_type = config_.v.type;
    t.q = q + (c.row + u.t0) * ldq + u.head * G * hd;
    t.ldq = ldq;
    t.scale = scale;
    t.n_q_tokens = u.nt;
    t.group = G;
    t.first_q_slot = len + u.t0;
    t.window = window;
    const int key_end = len + u.t0 + u.nt;
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
  const size_t rows_max = static_cast<size_t>(tile_tokens) * G;
  const size_t stride = rows_max * (hd + 2);
  scratch_partials_.resize(stride * scratch_tasks_.size());
  auto partial = [&](int task) {
    float* base = scratch_partials_.data() + stride * task;
    return AttnPartial{base, base + rows_max * hd, base + rows_max * hd + rows_max};
  };
  auto merge = [&](const Unit& u) {
    AttnPartial parts_buf[64];
    std::vector<AttnPartial> many;
    AttnPartial* ps = parts_buf;
    if (u.n_parts > 64) {
      many.resize(u.n_parts);
      ps = many.data();
    }
    for (int p = 0; p < u.n_parts; ++p) ps[p] = partial(u.part0 + p);
    const StepChunk& c = chunks[u.chunk];
    MergePartials(ps, u.n_parts, u.nt * G, G, hd, out + (c.row + u.t0) * ldo + u.head * G * hd, ldo);
  };
  if (parts == 1) {
    pool.Run(static_cast<int>(units.size()), [&](int i, int) {
      RunAttnTask(scratch_tasks_[units[i].part0], partial(units[i].part0));
      merge(units[i]);
    });
  } else {
    pool.Run(static_cast<int>(scratch_tasks_.size()),
             [&](int i, int) { RunAttnTask(scratch_tasks_[i], partial(i)); });
    pool.Run(static_cast<int>(units.size()), [&](int i, int) { merge(units[i]); });
  }
}

void KvCache::EndStep(std::span<const StepChunk> chunks) {
  for (const StepChunk& c : chunks) {
    Sequence& s = Seq(c.seq);
    s.length += c.n_tokens;
    DropOutOfWindow(s);
  }
}

void KvCache::DropOutOfWindow(Sequence& s) {
  const int bt = config_.block_tokens;
  for (int l = 0; l < spec_.n_layers; ++l) {
    const int w = spec_.window(l);
    if (w <= 0) continue;
    // The next token (slot `length`) sees keys > length - w; later tokens see fewer.
    const int first_visible = std::max(0, s.length - w + 1);
    const int dead_blocks = first_visible / bt;
    for (int h = 0; h < spec_.n_kv_heads; ++h) {
      const int st = l * spec_.n_kv_heads + h;
      auto& table = s.tables[st];
      for (int b = s.first_live[st]; b < dead_blocks && b < static_cast<int>(table.size()); ++b) {
        pool_.Release(table[b]);
        table[b] = kNoBlock;
      }
      s.first_live[st] = std::max(s.first_live[st], std::min(dead_blocks, static_cast<int>(table.size())));
    }
  }
}

size_t KvCache::DataBytesPerToken() const {
  return (k_layout_.data_bytes + v_layout_.data_bytes) * streams() / config_.block_tokens;
}
size_t KvCache::MetaBytesPerToken() const {
  return (k_layout_.meta_bytes + v_layout_.meta_bytes) * streams() / config_.block_tokens;
}

KvUsage KvCache::LayerUsage(SeqId id, int layer) const {
  const Sequence& s = Seq(id);
  const int bt = config_.block_tokens;
  const double per_slot_data =
      static_cast<double>(k_layout_.data_bytes + v_layout_.data_bytes) / bt;
  const double per_slot_meta =
      static_cast<double>(k_layout_.meta_bytes + v_layout_.meta_bytes) / bt;
  KvUsage u;
  for (int h = 0; h < spec_.n_kv_heads; ++h) {
    const int st = layer * spec_.n_kv_heads + h;
    const int64_t blocks = static_cast<int64_t>(s.tables[st].size()) - s.first_live[st];
    const int64_t slots = std::max<int64_t>(0, s.length - static_cast<int64_t>(s.first_live[st]) * bt);
    u.blocks += blocks;
    u.tokens = std::max(u.tokens, slots);
    u.bytes_data += static_cast<size_t>(per_slot_data * slots);
    u.bytes_meta += static_cast<size_t>(per_slot_meta * slots);
  }
  u.bytes_allocated = static_cast<size_t>(u.blocks) * pool_.block_bytes();
  u.bytes_waste = u.bytes_allocated - u.bytes_data - u.bytes_meta;
  return u;
}

KvUsage KvCache::SequenceUsage(SeqId id) const {
  KvUsage total;
  total.tokens = Seq(id).length;
  for (int l = 0; l < spec_.n_layers; ++l) {
    const KvUsage u = LayerUsage(id, l);
    total.blocks += u.blocks;
    total.bytes_data += u.bytes_data;
    total.bytes_meta += u.bytes_meta;
    total.bytes_waste += u.bytes_waste;
    total.bytes_allocated += u.bytes_allocated;
  }
  return total;
}

KvUsage KvCache::TotalUsage() const {
  KvUsage total;
  for (size_t i = 0; i < seqs_.size(); ++i) {
    if (!seqs_[i].live) continue;
    const KvUsage u = SequenceUsage(static_cast<SeqId>(i));
    total.tokens += u.tokens;
    total.blocks += u.blocks;
    total.bytes_data += u.bytes_data;
    total.bytes_meta += u.bytes_meta;
    total.bytes_waste += u.bytes_waste;
    total.bytes_allocated += u.bytes_allocated;
  }
  return total;
}

void KvCache::CheckInvariants() const {
  pool_.CheckInvariants();
  std::vector<int> refs(pool_.capacity(), 0);
  for (const Sequence& s : seqs_) {
    if (!s.live) continue;
    CHECK(static_cast<int>(s.tables.size()) == streams());
    for (int st = 0; st < streams(); ++st) {
      const auto& table = s.tables[st];
      CHECK(static_cast<int>(table.size()) >= CeilDiv(s.length, config_.block_tokens),
            "table of {} blocks for {} tokens", table.size(), s.length);
      for (int b = 0; b < static_cast<int>(table.size()); ++b) {
        CHECK((b < s.first_live[st]) == (table[b] == kNoBlock), "stream {} block {}: freed/live mismatch", st, b);
        if (table[b] != kNoBlock) ++refs[table[b]];
      }
    }
  }
  for (int b = 0; b < pool_.capacity(); ++b) {
    CHECK(refs[b] == pool_.RefCount(b), "block {}: {} table references, refcount {}", b, refs[b],
          pool_.RefCount(b));
  }
}

}  // namespace slimkv::kv
