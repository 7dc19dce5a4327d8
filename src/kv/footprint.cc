#include "kv/footprint.h"

#include <algorithm>

#include "base/int_math.h"

namespace slimkv::kv {
namespace {

size_t RoundUp64(size_t n) { return (n + 63) / 64 * 64; }

size_t BlockBytesOf(const KvFormat& k, const KvFormat& v, int bt, int hd) {
  return RoundUp64(KLayout(k, bt, hd).total() + VLayout(v, bt, hd).total());
}

}  // namespace

KvUsage& KvUsage::operator+=(const KvUsage& o) {
  tokens = std::max(tokens, o.tokens);
  blocks += o.blocks;
  bytes_data += o.bytes_data;
  bytes_meta += o.bytes_meta;
  bytes_residual += o.bytes_residual;
  bytes_waste += o.bytes_waste;
  bytes_allocated += o.bytes_allocated;
  return *this;
}

StreamBlocks RuleBlocks(const KvConfig& config, int window, int64_t slots, int64_t in_flight) {
  const int64_t bt = config.block_tokens;
  const int64_t committed = std::max<int64_t>(0, slots - in_flight);
  StreamBlocks b;
  b.n_blocks = CeilDiv(slots, bt);
  if (window > 0) b.first_live = std::min(b.n_blocks, std::max<int64_t>(0, committed - window + 1) / bt);
  if (config.needs_staging()) {
    b.n_sealed = std::max(b.first_live, std::max<int64_t>(0, committed - config.residual) / bt);
  }
  return b;
}

size_t SealedBlockBytes(const KvConfig& c, int hd) { return BlockBytesOf(c.k, c.v, c.block_tokens, hd); }
size_t StagedBlockBytes(const KvConfig& c, int hd) {
  return c.needs_staging() ? BlockBytesOf(c.StagingK(), c.StagingV(), c.block_tokens, hd)
                           : SealedBlockBytes(c, hd);
}

KvUsage HeldUsage(const KvConfig& c, int hd, const HeldBlocks& h) {
  const int bt = c.block_tokens;
  const PartLayout k = KLayout(c.k, bt, hd), v = VLayout(c.v, bt, hd);
  const double data_slot = static_cast<double>(k.data_bytes + v.data_bytes) / bt;
  const double meta_slot = static_cast<double>(k.meta_bytes + v.meta_bytes) / bt;
  KvUsage u;
  u.blocks = h.sealed_blocks + h.staged_blocks;
  u.tokens = h.sealed_tokens + h.staged_tokens;
  if (!c.needs_staging()) {
    u.bytes_data = static_cast<size_t>(data_slot * u.tokens);
    u.bytes_meta = static_cast<size_t>(meta_slot * u.tokens);
    u.bytes_allocated = static_cast<size_t>(u.blocks) * SealedBlockBytes(c, hd);
  } else {
    const double staged_slot =
        static_cast<double>(KLayout(c.StagingK(), bt, hd).total() + VLayout(c.StagingV(), bt, hd).total()) /
        bt;
    u.bytes_data = static_cast<size_t>(data_slot * h.sealed_tokens);
    u.bytes_meta = static_cast<size_t>(meta_slot * h.sealed_tokens);
    u.bytes_residual = static_cast<size_t>(staged_slot * h.staged_tokens);
    u.bytes_allocated = static_cast<size_t>(h.sealed_blocks) * SealedBlockBytes(c, hd) +
                        static_cast<size_t>(h.staged_blocks) * StagedBlockBytes(c, hd);
  }
  u.bytes_waste = u.bytes_allocated - u.bytes_data - u.bytes_meta - u.bytes_residual;
  return u;
}

KvUsage StreamUsage(const KvConfig& c, int hd, const StreamBlocks& b, int64_t slots) {
  const int bt = c.block_tokens;
  const bool staging = c.needs_staging();
  HeldBlocks h;
  h.sealed_blocks = staging ? b.n_sealed - b.first_live : 0;
  h.staged_blocks = b.n_blocks - std::max(b.n_sealed, b.first_live);
  const int64_t held_slots = std::max<int64_t>(0, slots - b.first_live * bt);
  h.sealed_tokens = h.sealed_blocks * bt;
  h.staged_tokens = held_slots - h.sealed_tokens;
  return HeldUsage(c, hd, h);
}

KvUsage SequenceFootprint(const KvSpec& spec, const KvConfig& config, int64_t tokens, int64_t in_flight) {
  KvUsage total;
  for (int l = 0; l < spec.n_layers; ++l) {
    const KvUsage stream =
        StreamUsage(config, spec.head_dim, RuleBlocks(config, spec.window(l), tokens, in_flight), tokens);
    for (int h = 0; h < spec.n_kv_heads; ++h) total += stream;
  }
  total.tokens = tokens;
  return total;
}

size_t PeakSequenceBytes(const KvSpec& spec, const KvConfig& config, int64_t tokens, int step_tokens) {
  if (config.block_tokens <= 0 || tokens <= 0) return 0;
  const int64_t bt = config.block_tokens, step = std::max(1, step_tokens);
  const size_t sealed = SealedBlockBytes(config, spec.head_dim),
               staged = StagedBlockBytes(config, spec.head_dim);
  const size_t extra = staged > sealed && config.needs_staging() ? staged - sealed : 0;
  size_t bytes = 0;
  for (int l = 0; l < spec.n_layers; ++l) {
    const int w = spec.window(l);
    // Held blocks: all of them, or on a window layer those from the first one a
    // committed token still sees to the end of the step in flight (ceil(x + y)
    // - floor(x) <= ceil(y) + 1).
    int64_t held = CeilDiv(tokens, bt);
    if (w > 0) held = std::min<int64_t>(held, CeilDiv(w + step - 1, bt) + 1);
    // Staged blocks: the residual window and the step in flight, and a partly
    // filled block.
    const int64_t staged_blocks = std::min<int64_t>(held, CeilDiv(config.residual + step, bt) + 1);
    bytes += static_cast<size_t>(held) * sealed + static_cast<size_t>(staged_blocks) * extra;
  }
  return bytes * spec.n_kv_heads;
}

size_t PolicyPeakSequenceBytes(const KvSpec& spec, const KvConfig& config, const PolicySpec& policy,
                               int64_t tokens, int step_tokens) {
  if (!policy.active()) return PeakSequenceBytes(spec, config, tokens, step_tokens);
  if (config.block_tokens <= 0 || tokens <= 0) return 0;
  const int64_t bt = config.block_tokens, step = std::max(1, step_tokens), H = spec.n_kv_heads;
  const size_t sealed = SealedBlockBytes(config, spec.head_dim),
               staged = StagedBlockBytes(config, spec.head_dim);
  const size_t extra = staged > sealed && config.needs_staging() ? staged - sealed : 0;
  // Window layers: the rule, one layer at a time.
  KvSpec one = spec;
  one.n_layers = 1;
  one.layer_inv_freq.clear();
  size_t bytes = 0;
  for (int l = 0; l < spec.n_layers; ++l) {
    if (spec.window(l) > 0) {
      one.layer_window = {spec.window(l)};
      bytes += PeakSequenceBytes(one, config, tokens, step_tokens);
      continue;
    }
    const int64_t budget = policy.LayerBudget(l, spec.n_layers);
    // The prompt: everything staged, up to the eviction threshold plus a step,
    // per stream.
    const int64_t limit = policy.kind == PolicyKind::kSnapKv ? tokens : 2 * budget;
    const int64_t prompt_tokens = std::min(tokens, limit + step) * H;
    const int64_t prompt_blocks = CeilDiv(prompt_tokens, bt) + H;
    // After it: budget + a block of tokens per stream, an open and a shortened
    // block each.
    const int64_t held_tokens = std::min(tokens, budget + bt + step) * H;
    const int64_t held_blocks = CeilDiv(held_tokens, bt) + 2 * H;
    const int64_t staged_blocks = std::min(held_blocks, (CeilDiv(config.residual + step, bt) + 1) * H);
    bytes += std::max(static_cast<size_t>(prompt_blocks) * staged,
                      static_cast<size_t>(held_blocks) * sealed + static_cast<size_t>(staged_blocks) * extra);
  }
  return bytes;
}

double DataBytesPerToken(const KvSpec& spec, const KvConfig& c) {
  const PartLayout k = KLayout(c.k, c.block_tokens, spec.head_dim),
                   v = VLayout(c.v, c.block_tokens, spec.head_dim);
  return static_cast<double>(k.data_bytes + v.data_bytes) * spec.n_layers * spec.n_kv_heads / c.block_tokens;
}
double MetaBytesPerToken(const KvSpec& spec, const KvConfig& c) {
  const PartLayout k = KLayout(c.k, c.block_tokens, spec.head_dim),
                   v = VLayout(c.v, c.block_tokens, spec.head_dim);
  return static_cast<double>(k.meta_bytes + v.meta_bytes) * spec.n_layers * spec.n_kv_heads / c.block_tokens;
}

}  // namespace slimkv::kv
