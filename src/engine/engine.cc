#include "engine/engine.h"

#include <xxhash.h>

#include <cmath>

#include "base/log.h"
#include "engine/kv_sharer.h"
#include "engine/scheduler.h"
#include "kv/footprint.h"
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
    if (o.kv_disk_bytes == 0)
      return InvalidArgument("--kv-disk {} needs a budget (--kv-disk-mem GiB > 0)", o.kv_disk_dir);
    ASSIGN_OR_RETURN(auto disk,
                     kv::tiers::DiskTier::Open({.dir = o.kv_disk_dir, .budget_bytes = o.kv_disk_bytes}));
    tiers.push_back(std::move(disk));
  }
  if (!o.kv_redis.empty()) {
    ASSIGN_OR_RETURN(const kv::tiers::RedisTierOptions ro, kv::tiers::ParseRedisAddress(o.kv_redis));
    tiers.push_back(std::make_unique<kv::tiers::RedisTier>(ro));
  }
  if (tiers.empty()) return std::unique_ptr<kv::tiers::TierStack>();
  return std::make_unique<kv::tiers::TierStack>(
      spec, o.kv, kv::tiers::TierStackOptions{.model_id = ModelIdentity(model.file())}, std::move(tiers));
}

// model::Model behind the scheduler's step interface.
class ModelStep : public StepModel {
 public:
  explicit ModelStep(model::Model* m) : m_(m) {}
  int vocab_size() const override { return m_->config().n_vocab; }
  Status Forward(ThreadPool& pool, kv::KvCache& kv, std::span<const model::BatchEntry> batch,
                 std::vector<float>* logits) override {
    return m_->Forward(pool, kv, batch, logits);
  }

 private:
  model::Model* m_;
};

}  // namespace

Result<std::unique_ptr<Engine>> Engine::Create(const EngineOptions& o) {
  if (o.n_ctx <= 0) return InvalidArgument("context size must be positive, got {}", o.n_ctx);
  if (o.threads <= 0) return InvalidArgument("threads must be positive, got {}", o.threads);
  if (o.prefill_chunk <= 0) return InvalidArgument("prefill chunk must be positive, got {}", o.prefill_chunk);
  std::unique_ptr<Engine> e(new Engine(o, o.threads));
  ASSIGN_OR_RETURN(e->model_, model::Model::Load(o.model_path, o.n_ctx));
  e->step_model_ = std::make_unique<ModelStep>(e->model_.get());
  ASSIGN_OR_RETURN(e->tokenizer_, tokenizer::Tokenizer::FromGguf(e->model_->file()));
  if (!o.kv_share.empty()) {
    ASSIGN_OR_RETURN(model::KvShare share,
                     ResolveKvShare(o.kv_share, *e->model_, e->pool_, *e->tokenizer_, o.kv_share_text));
    RETURN_IF_ERROR(e->model_->SetKvShare(share));
  }
  const kv::KvSpec spec = e->model_->KvSpec();
  // With an eviction policy a sequence holds what the policy bounds (footprint.h), whatever its length.
  const size_t budget =
      o.kv_budget_bytes
          ? o.kv_budget_bytes
          : kv::PolicyPeakSequenceBytes(spec, o.kv, o.policy, o.n_ctx, o.prefill_chunk) * o.n_seq;
  ASSIGN_OR_RETURN(e->kv_, kv::KvCache::Create(spec, o.kv, budget));
  RETURN_IF_ERROR(e->kv_->SetPolicy(o.policy));
  ASSIGN_OR_RETURN(e->tiers_, MakeTiers(o, *e->model_, spec));
  if (e->tiers_) e->kv_->SetTiers(e->tiers_.get());
  return e;
}

Status Engine::Step(kv::KvCache& kv, std::span<const model::BatchEntry> batch, std::vector<float>* logits) {
  const std::vector<kv::StepChunk> chunks = model::StepChunks(batch);
  RETURN_IF_ERROR(kv.BeginStep(chunks));
  const Status st = model_->Forward(pool_, kv, batch, logits);
  if (!st.ok()) kv.CancelStep(chunks);
  return st;
}

Status Engine::Prefill(kv::KvCache& kv, kv::SeqId seq, std::span<const TokenId> tokens, int64_t logits_from,
                       std::vector<float>* logits, int step) {
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
    RETURN_IF_ERROR(Step(kv, {&entry, 1}, &out));
    if (wants) logits->insert(logits->end(), out.begin(), out.end());
  }
  return Status::Ok();
}

Result<GenerationStats> Engine::Generate(const std::vector<TokenId>& prompt, const GenerateOptions& go,
                                         const TokenCallback& on_token) {
  RETURN_IF_ERROR(go.sampling.Validate());
  if (prompt.empty()) return InvalidArgument("empty prompt");
  GenerationStats st;
  st.prompt_tokens = static_cast<int>(prompt.size());
  st.stop_reason = "length";
  const double t0 = NowSeconds();
  ASSIGN_OR_RETURN(auto sched, Scheduler::Create(this, {.max_running = 1,
                                                        .max_waiting = 1,
                                                        .max_batch_tokens = options_.prefill_chunk,
                                                        .prefix_sharing = false}));
  RequestParams p;
  p.prompt = prompt;
  p.max_tokens = go.max_tokens;
  p.sampling = go.sampling;
  p.ignore_eos = !go.stop_at_end_of_generation;
  p.json_object = go.json_object;
  p.report_kv = true;
  p.prompt_only = go.max_tokens <= 0;
  bool stop = false;
  double first_token = -1;
  RequestOutput final;
  p.on_output = [&](const RequestOutput& o) {
    if (o.finished) {
      final = o;
      return;
    }
    if (first_token < 0) first_token = NowSeconds();
    ++st.generated_tokens;
    if (on_token && !stop && !on_token(o.token, o.text)) stop = true;
  };
  ASSIGN_OR_RETURN(const RequestId id, sched->Submit(std::move(p)));
  while (!sched->Idle()) {
    sched->Step();
    if (stop) sched->Cancel(id);
  }
  const double t1 = NowSeconds();
  if (final.finish_reason == FinishReason::kError) return final.error;
  if (first_token < 0) first_token = t1;
  st.prefill_seconds = first_token - t0;
  st.decode_seconds = t1 - first_token;
  switch (final.finish_reason) {
    case FinishReason::kCancelled:
      st.stop_reason = "cancelled";
      break;
    case FinishReason::kStop:
      st.stop_reason = go.json_object ? "json" : "eog";
      break;
    default:
      st.stop_reason = go.max_tokens > 0 && st.generated_tokens < go.max_tokens ? "context" : "length";
      break;
  }
  const kv::KvSpec& spec = kv_->spec();
  st.kv_usage = final.kv_usage;
  if (final.kv_layers.size() == static_cast<size_t>(spec.n_layers)) {
    kv::KvUsage global, window;
    bool has_window = false;
    for (int l = 0; l < spec.n_layers; ++l) {
      (spec.window(l) > 0 ? window : global) += final.kv_layers[l];
      has_window |= spec.window(l) > 0;
    }
    if (has_window) st.kv_usage_by_kind = {{"global", global}, {"window", window}};
  }
  return st;
}

}  // namespace slimkv::engine
