#include "engine/engine.h"

#include <cmath>

#include <xxhash.h>

#include "base/log.h"
#include "kv/tiers/disk_tier.h"
#include "kv/tiers/redis_tier.h"

namespace slimkv::engine {
namespace {

// What identifies the weights in the fingerprint of stored KV blocks: XXH3 of every
// tensor's name, type, shape and bytes (a fine-tune of the same shape differs; 0.1 s per
// 300 MB, paid only when a lower tier is on).
uint64_t ModelIdentity(const gguf::GgufFile& file) {
  XXH3_state_t* st = XXH3_createState();
  XXH3_64bits_reset(st);
  for (const gguf::TensorInfo& t : file.tensors()) {
    const std::string head = fmt::format("{} {} {}", t.name, static_cast<int>(t.type), t.ShapeString());
    XXH3_64bits_update(st, head.data(), head.size() + 1);
    XXH3_64bits_update(st, t.data, t.n_bytes);
  }
  const uint64_t h = XXH3_64bits_digest(st);
  XXH3_freeState(st);
  return h;
}

Result<std::unique_ptr<kv::tiers::TierStack>> MakeTiers(const EngineOptions& o, const model::Model& model,
                                                         const kv::KvSpec& spec) {
  std::vector<std::unique_ptr<kv::tiers::BlockTier>> tiers;
  if (!o.kv_disk_dir.empty()) {
    if (o.kv_disk_bytes == 0) return InvalidArgument("--kv-disk {} needs a budget (--kv-disk-mem GiB > 0)", o.kv_disk_dir);
    ASSIGN_OR_RETURN(auto disk, kv::tiers::DiskTier::Open({.dir = o.kv_disk_dir, .budget_bytes = o.kv_disk_bytes}));
    tiers.push_back(std::move(disk));
  }
  if (!o.kv_redis.empty()) {
    ASSIGN_OR_RETURN(const kv::tiers::RedisTierOptions ro, kv::tiers::ParseRedisAddress(o.kv_redis));
    tiers.push_back(std::make_unique<kv::tiers::RedisTier>(ro));
  }
  if (tiers.empty()) return std::unique_ptr<kv::tiers::TierStack>();
  return std::make_unique<kv::tiers::TierStack>(spec, o.kv, kv::tiers::TierStackOptions{.model_id = ModelIdentity(model.file())},
                                                std::move(tiers));
}

}  // namespace

Result<std::unique_ptr<Engine>> Engine::Create(const EngineOptions& o) {
  if (o.n_ctx <= 0) return InvalidArgument("context size must be positive, got {}", o.n_ctx);
  if (o.threads <= 0) return InvalidArgument("threads must be positive, got {}", o.threads);
  if (o.prefill_chunk <= 0) return InvalidArgument("prefill chunk must be positive, got {}", o.prefill_chunk);
  std::unique_ptr<Engine> e(new Engine(o, o.threads));
  ASSIGN_OR_RETURN(e->model_, model::Model::Load(o.model_path));
  ASSIGN_OR_RETURN(e->tokenizer_, tokenizer::Tokenizer::FromGguf(e->model_->file()));
  const kv::KvSpec spec = e->model_->KvSpec();
  // With an eviction policy a sequence holds at most about twice its token budget (prompt
  // chunks are compacted at the end of each chunk), whatever its length.
  int64_t held = o.n_ctx;
  if (o.policy.active() && o.policy.kind != kv::PolicyKind::kSnapKv) {  // SnapKV holds the whole prompt
    const int64_t most = static_cast<int64_t>(std::ceil(o.policy.budget * (o.policy.pyramid ? 1.5 : 1.0)));
    held = std::min<int64_t>(held, 2 * most + 2 * o.kv.block_tokens + o.prefill_chunk);
  }
  const size_t budget = o.kv_budget_bytes ? o.kv_budget_bytes
                                          : kv::KvCache::BudgetFor(spec, o.kv, held, o.n_seq, o.prefill_chunk);
  ASSIGN_OR_RETURN(e->kv_, kv::KvCache::Create(spec, o.kv, budget));
  RETURN_IF_ERROR(e->kv_->SetPolicy(o.policy));
  ASSIGN_OR_RETURN(e->tiers_, MakeTiers(o, *e->model_, spec));
  if (e->tiers_) e->kv_->SetTiers(e->tiers_.get());
  return e;
}

Status Engine::Prefill(kv::KvCache& kv, kv::SeqId seq, std::span<const TokenId> tokens,
                       int64_t logits_from, std::vector<float>* logits, int step) {
  if (step <= 0) return InvalidArgument("prefill step must be positive, got {}", step);
  const int64_t n_tok = static_cast<int64_t>(tokens.size());
  if (logits_from < 0) logits_from = n_tok - 1;
  std::vector<float> out;
  logits->clear();
  for (int64_t i = 0; i < n_tok; i += step) {
    const int64_t n = std::min<int64_t>(step, n_tok - i);
    const bool wants = i + n > logits_from;
    const model::BatchEntry entry{seq, tokens.subspan(i, n),
                                  wants ? static_cast<int>(std::max<int64_t>(0, logits_from - i)) : -1};
    RETURN_IF_ERROR(model_->Forward(pool_, kv, {&entry, 1}, &out));
    if (wants) logits->insert(logits->end(), out.begin(), out.end());
  }
  return Status::Ok();
}

Result<GenerationStats> Engine::Generate(const std::vector<TokenId>& prompt,
                                         const GenerateOptions& go, const TokenCallback& on_token) {
  RETURN_IF_ERROR(go.sampling.Validate());
  if (prompt.empty()) return InvalidArgument("empty prompt");
  const bool streaming = kv_->policy().reindexes();  // constant memory: no context limit
  if (!streaming && static_cast<int>(prompt.size()) >= options_.n_ctx) {
    return OutOfRange("prompt of {} tokens does not fit in the context of {} tokens (-c)",
                      prompt.size(), options_.n_ctx);
  }
  GenerationStats st;
  st.prompt_tokens = static_cast<int>(prompt.size());
  const kv::SeqId seq = kv_->AddSequence();
  struct Release {
    kv::KvCache* kv;
    kv::SeqId s;
    ~Release() { kv->RemoveSequence(s); }
  } release{kv_.get(), seq};

  std::vector<TokenId> history = prompt;
  std::vector<float> logits;
  double t0 = NowSeconds();
  RETURN_IF_ERROR(Prefill(seq, prompt, -1, &logits));
  kv_->Compress(seq);  // policies that decide at the end of the prompt (SnapKV) act now
  st.prefill_seconds = NowSeconds() - t0;
  Sampler sampler(go.sampling);
  tokenizer::StreamDecoder decoder(*tokenizer_);
  t0 = NowSeconds();
  st.stop_reason = "length";
  for (int i = 0; i < go.max_tokens; ++i) {
    const TokenId tok = sampler.Sample(logits, history);
    history.push_back(tok);
    ++st.generated_tokens;
    const bool eog = go.stop_at_end_of_generation && tokenizer_->IsEndOfGeneration(tok);
    const std::string text = eog ? decoder.Flush() : decoder.Push(tok);
    if (on_token && !on_token(tok, text)) {
      st.stop_reason = "cancelled";
      break;
    }
    if (eog) {
      st.stop_reason = "eog";
      break;
    }
    if (i + 1 == go.max_tokens) break;
    if (!streaming && kv_->Length(seq) + 1 >= options_.n_ctx) {
      st.stop_reason = "context";
      break;
    }
    const model::BatchEntry entry{seq, {&history.back(), 1}};
    RETURN_IF_ERROR(model_->Forward(pool_, *kv_, {&entry, 1}, &logits));
  }
  st.decode_seconds = NowSeconds() - t0;
  if (on_token) {
    const std::string rest = decoder.Flush();
    if (!rest.empty()) on_token(-1, rest);
  }
  st.kv_usage = kv_->SequenceUsage(seq);
  const kv::KvSpec& spec = kv_->spec();
  bool has_window = false;
  for (int l = 0; l < spec.n_layers; ++l) has_window |= spec.window(l) > 0;
  if (has_window) {
    kv::KvUsage global, window;
    for (int l = 0; l < spec.n_layers; ++l) {
      const kv::KvUsage u = kv_->LayerUsage(seq, l);
      kv::KvUsage& acc = spec.window(l) > 0 ? window : global;
      acc.tokens = std::max(acc.tokens, u.tokens);
      acc.blocks += u.blocks;
      acc.bytes_data += u.bytes_data;
      acc.bytes_meta += u.bytes_meta;
      acc.bytes_waste += u.bytes_waste;
      acc.bytes_allocated += u.bytes_allocated;
    }
    st.kv_usage_by_kind = {{"global", global}, {"window", window}};
  }
  return st;
}

}  // namespace slimkv::engine
