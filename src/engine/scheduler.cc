#include "engine/scheduler.h"

#include <algorithm>
#include <climits>
#include <optional>

#include "base/check.h"
#include "kv/footprint.h"
#include "kv/format.h"

namespace slimkv::engine {
namespace {

// Seconds of history behind the tokens/s figures.
constexpr double kRateWindowSeconds = 5.0;

// Prefix-cache statistics walk the whole pool: refresh them at most this often.
constexpr double kPrefixStatsSeconds = 0.25;

}  // namespace

struct Scheduler::Seq {
  Seq(RequestParams p, const tokenizer::Tokenizer* tok, const ConstraintVocab* json_vocab)
      : params(std::move(p)), sampler(params.sampling, params.prompt.size()) {
    if (tok) decoder.emplace(*tok);
    if (params.json_object) json.emplace(json_vocab);
    tokens = params.prompt;
    n_prompt = static_cast<int>(tokens.size());
    tokens.insert(tokens.end(), params.forced.begin(), params.forced.end());
  }
  int remaining() const { return static_cast<int>(tokens.size()) - n_computed; }
  bool forced() const { return !params.forced.empty() || params.prompt_only; }
  std::string Push(TokenId t) { return decoder ? decoder->Push(t) : std::string(); }
  std::string Flush() { return decoder ? decoder->Flush() : std::string(); }

  RequestId id = 0;
  RequestParams params;
  double arrival = 0;
  std::vector<TokenId> tokens;  // the prompt, then the generated tokens
  int n_prompt = 0;
  int n_computed = 0;     // tokens [0, n_computed) are in the KV cache
  int n_published = 0;    // tokens indexed in the prefix cache
  kv::SeqId kv_seq = -1;  // -1 while waiting
  Sampler sampler;
  std::optional<JsonConstraint> json;               // with params.json_object
  std::optional<tokenizer::StreamDecoder> decoder;  // without a tokenizer: no text
  std::string held;  // text not sent yet: it could be the start of a stop string
  int generated = 0;
  int cached_tokens = 0;  // from the prefix cache at the first admission
  bool compressed = false;  // its prompt's end went through KvCache::Compress
  int preemptions = 0;
  int preempted_computed = 0;  // tokens it had computed when last preempted, until readmitted
  double admitted_time = -1;  // its first admission into a step (the end of its queue time); -1: not yet
  bool admitted_before() const { return admitted_time >= 0; }
  double first_token_time = -1, last_token_time = -1;
  std::vector<TokenLogprob> prompt_logprobs;  // filled while the prompt is computed
  bool prompt_logprobs_sent = false;
  bool has_logprob = false;  // of the token being emitted
  TokenLogprob logprob;
  bool done = false;
  bool publish_on_exit = false;  // finished normally: keep its blocks in the prefix cache
  // Its read-ahead from the lower tiers: kNone until StartPrefetches looks at it after it
  // (re)enters the queue, kStarted, then kWaited once Admit has waited for it. `prefetch` is
  // the read-ahead's id until it attaches (0: nothing to read).
  enum class ReadAhead : uint8_t { kNone, kStarted, kWaited } read_ahead = ReadAhead::kNone;
  kv::tiers::PrefetchId prefetch = 0;
};

Scheduler::Scheduler(const SchedulerParts& parts, const SchedulerOptions& options)
    : model_(parts.model),
      kv_(parts.kv),
      pool_(parts.pool),
      tok_(parts.tokenizer),
      options_(options),
      n_ctx_(parts.n_ctx) {}

Result<std::unique_ptr<Scheduler>> Scheduler::Create(Engine* engine, const SchedulerOptions& o) {
  if (engine == nullptr) return InvalidArgument("scheduler needs an engine");
  return Create(SchedulerParts{.model = &engine->step_model(),
                               .kv = &engine->kv(),
                               .pool = &engine->pool(),
                               .tokenizer = &engine->tokenizer(),
                               .n_ctx = engine->options().n_ctx},
                o);
}

Result<std::unique_ptr<Scheduler>> Scheduler::Create(const SchedulerParts& parts, const SchedulerOptions& o) {
  if (!parts.model || !parts.kv || !parts.pool)
    return InvalidArgument("scheduler needs a model, a KV cache and threads");
  if (parts.n_ctx <= 0) return InvalidArgument("context size must be positive, got {}", parts.n_ctx);
  if (o.max_running < 1)
    return InvalidArgument("max running sequences must be at least 1, got {}", o.max_running);
  if (o.max_waiting < 0)
    return InvalidArgument("max waiting requests must not be negative, got {}", o.max_waiting);
  if (o.max_batch_tokens < 1) {
    return InvalidArgument("max batch tokens must be at least 1, got {}", o.max_batch_tokens);
  }
  std::unique_ptr<Scheduler> s(new Scheduler(parts, o));
  const kv::KvCache& kv = *parts.kv;
  s->stats_.prefix_sharing = o.prefix_sharing;
  s->stats_.kv_budget_bytes = kv.budget_bytes();
  s->stats_.kv_block_bytes = kv.sealed_block_bytes();
  s->stats_.kv_bytes_per_token = static_cast<double>(kv.DataBytesPerToken() + kv.MetaBytesPerToken());
  s->stats_.kv_format = kv::ConfigName(kv.config());
  // The largest length whose bytes fit the pool (SequenceKvBytes grows with the length,
  // give or take a block on window layers: the last step of a too-long request still ends
  // it with kLength, see Step).
  int64_t lo = 0, hi = s->n_ctx_;
  if (!kv.policy().active()) {
    while (lo < hi) {
      const int64_t mid = lo + (hi - lo + 1) / 2;
      if (SequenceKvBytes(kv, mid) <= kv.budget_bytes()) {
        lo = mid;
      } else {
        hi = mid - 1;
      }
    }
    s->max_sequence_tokens_ = lo;
  } else {
    // A policy bounds what a sequence holds; one that re-indexes (window, sinks) also lifts the
    // context: a conversation runs past it in constant memory.
    s->max_sequence_tokens_ = s->Streaming() ? kUnboundedTokens : s->n_ctx_;
  }
  s->UpdateStats(s->Now());
  return s;
}

Scheduler::~Scheduler() { Stop(); }

size_t SequenceKvBytes(const kv::KvCache& kv, int64_t tokens) {
  return kv::SequenceFootprint(kv.spec(), kv.config(), tokens).bytes_allocated;
}

size_t Scheduler::SequenceBudget(int64_t tokens) const {
  const kv::KvCache& kv = *kv_;
  if (!kv.policy().active()) return SequenceKvBytes(kv, tokens);
  return kv::PolicyPeakSequenceBytes(kv.spec(), kv.config(), kv.policy(), tokens, options_.max_batch_tokens);
}

bool Scheduler::Streaming() const { return kv_->policy().reindexes(); }

int Scheduler::StreamingAttachLimit() const {
  const kv::KvCache& kv = *kv_;
  const int n_layers = kv.spec().n_layers, bt = kv.config().block_tokens;
  int budget = INT_MAX;
  for (int l = 0; l < n_layers; ++l) {
    if (kv.PolicyLayer(l)) budget = std::min(budget, kv.policy().LayerBudget(l, n_layers));
  }
  return budget == INT_MAX ? INT_MAX : budget / bt * bt;
}

Result<RequestId> Scheduler::Submit(RequestParams p) {
  RETURN_IF_ERROR(p.sampling.Validate());
  if (p.prompt.empty()) return InvalidArgument("empty prompt");
  if (p.max_tokens < 1 && p.forced.empty() && !p.prompt_only) {
    return InvalidArgument("max_tokens must be at least 1, got {}", p.max_tokens);
  }
  if (p.logprobs < -1 || p.logprobs > kMaxTopLogprobs) {
    return InvalidArgument("logprobs must be in [0, {}], got {}", kMaxTopLogprobs, p.logprobs);
  }
  if (p.json_object) {
    if (tok_ == nullptr) return InvalidArgument("json_object needs a tokenizer");
    if (!p.forced.empty() || p.prompt_only) {
      return InvalidArgument(
          "json_object constrains generated tokens: not with forced tokens or prompt_only");
    }
    std::call_once(json_vocab_once_, [&] { json_vocab_ = ConstraintVocab::FromTokenizer(*tok_); });
  }
  const int n_vocab = model_->vocab_size();
  for (const auto* list : {&p.prompt, &p.forced}) {
    for (TokenId t : *list) {
      if (t < 0 || t >= n_vocab)
        return InvalidArgument("token id {} is out of range (vocabulary of {})", t, n_vocab);
    }
  }
  const int64_t n = static_cast<int64_t>(p.prompt.size() + p.forced.size());
  if (n >= n_ctx_ && !Streaming()) {
    return OutOfRange("prompt of {} tokens does not fit in the context of {} tokens", n, n_ctx_);
  }
  const size_t need = SequenceBudget(n + 1), budget = kv_->budget_bytes();
  if (need > budget) {
    return OutOfRange(
        "prompt of {} tokens needs {} bytes of KV cache; the pool (the KV budget, --kv-mem) holds {} bytes",
        n, need, budget);
  }
  // The whole request must fit the pool alone, or it would fail part way through.
  const int64_t generated = p.forced.empty() && !p.prompt_only ? p.max_tokens : 0;
  const int64_t total = std::min<int64_t>(n + generated, n_ctx_);
  if (total > max_sequence_tokens_) {
    return OutOfRange(
        "prompt ({} tokens) + max_tokens ({}) = {} tokens need {} bytes of KV cache; the pool holds {} "
        "bytes, "
        "at most {} tokens for one request",
        n, total - n, total, SequenceBudget(total), budget, max_sequence_tokens_);
  }
  auto seq = std::make_unique<Seq>(std::move(p), tok_, json_vocab_.get());
  std::lock_guard<std::mutex> lock(mu_);
  if (!accepting_ || stop_) return Status(StatusCode::kCancelled, "the server is shutting down");
  if (static_cast<int>(waiting_.size()) >= options_.max_waiting) {
    std::lock_guard<std::mutex> stats_lock(stats_mu_);
    ++stats_.rejected;
    return ResourceExhausted("the queue is full ({} requests waiting)", waiting_.size());
  }
  seq->id = next_id_++;
  seq->arrival = Now();
  const RequestId id = seq->id;
  waiting_.push_back(std::move(seq));
  {
    std::lock_guard<std::mutex> stats_lock(stats_mu_);
    ++stats_.submitted;
    stats_.waiting = static_cast<int>(waiting_.size());
  }
  cv_.notify_all();
  return id;
}

void Scheduler::Cancel(RequestId id) {
  std::lock_guard<std::mutex> lock(mu_);
  cancels_.insert(id);
  cv_.notify_all();
}

void Scheduler::StopAccepting() {
  std::lock_guard<std::mutex> lock(mu_);
  accepting_ = false;
}

bool Scheduler::Idle() const {
  std::lock_guard<std::mutex> lock(mu_);
  return waiting_.empty() && n_running_shared_ == 0;
}

void Scheduler::TakeCancellations() {
  std::unordered_set<RequestId> ids;
  std::vector<std::unique_ptr<Seq>> dropped;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (cancels_.empty()) return;
    ids.swap(cancels_);
    for (auto it = waiting_.begin(); it != waiting_.end();) {
      if (ids.count((*it)->id)) {
        dropped.push_back(std::move(*it));
        it = waiting_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (auto& s : dropped) {
    if (s->kv_seq >= 0) kv_->RemoveSequence(s->kv_seq);  // never: waiting ones hold none
    Finish(s.get(), FinishReason::kCancelled);
  }
  for (auto& s : running_) {
    if (ids.count(s->id)) Finish(s.get(), FinishReason::kCancelled);
  }
  RemoveFinished();  // the blocks of cancelled sequences are free from here on
}

std::vector<Scheduler::Chunk> Scheduler::PlanBatch(int* tokens_left) {
  std::vector<Chunk> batch;
  for (auto& s : running_) {  // decode tokens first: they hold the most latency-sensitive work
    if (*tokens_left > 0 && s->remaining() == 1) {
      batch.push_back({s.get(), 1});
      --*tokens_left;
    }
  }
  for (auto& s : running_) {  // then prompt chunks, oldest first
    if (*tokens_left > 0 && s->remaining() > 1) {
      const int n = ChunkOf(s.get(), *tokens_left);
      if (n == 0) continue;  // its next chunk does not fit this step
      batch.push_back({s.get(), n});
      *tokens_left -= n;
    }
  }
  return batch;
}

bool Scheduler::WantsPromptLogits(const Seq& s) {
  return s.params.prompt_logprobs && !s.prompt_logprobs_sent && s.n_computed < s.n_prompt;
}

int Scheduler::FirstLogitRow(const Seq& s, int n) {
  if (WantsPromptLogits(s)) return 0;
  if (s.forced()) return std::min(std::max(0, s.n_prompt - 1 - s.n_computed), n - 1);
  return n - 1;
}

int Scheduler::ChunkOf(Seq* s, int tokens_left) const {
  if (!kv_->policy().active()) return std::min(s->remaining(), tokens_left);
  // With an eviction policy the prompt goes in fixed chunks, whatever else runs in the step: the policy acts
  // between chunks, and the same chunks give the same evictions (a preempted sequence replays them). A chunk
  // ends at the next multiple of the batch tokens less the decode tokens the other running sequences may take
  // (so it always fits in some step; at least half the batch, so many running sequences do not shrink prompts
  // to a token a step), or at the prompt's end, where it is compressed. Every later token takes the decode
  // path.
  if (s->n_computed >= s->n_prompt) return std::min(1, tokens_left);
  int chunk =
      std::max({1, options_.max_batch_tokens / 2, options_.max_batch_tokens - (options_.max_running - 1)});
  // Whole blocks, so a chunk's end publishes all it read: a request admitted while another reads the same
  // prompt attaches what that one has published, and a boundary one token past it (481 of a 512-token batch
  // with 32 running) let followers in with a one-token chunk that locked their attach at the first chunk.
  const int bt = kv_->config().block_tokens;
  if (chunk >= bt) chunk = chunk / bt * bt;
  const int n = std::min(s->n_prompt, (s->n_computed / chunk + 1) * chunk) - s->n_computed;
  return n <= tokens_left ? n : 0;
}

void Scheduler::StartSequence(Seq* s) {
  kv::KvCache& kv = *kv_;
  s->kv_seq = kv.AddSequence();
  s->n_computed = 0;
  s->n_published = 0;
  s->compressed = false;
  // Prompt log-probabilities need the logits of every prompt token: computed, not attached (after a
  // preemption, once they were sent, the prefix cache may serve again).
  const bool needs_prompt_logits = s->params.prompt_logprobs && !s->prompt_logprobs_sent;
  if (needs_prompt_logits) s->prompt_logprobs.clear();
  std::span<const TokenId> tokens;
  int most = 0;
  if (AttachArgs(*s, &tokens, &most)) {
    const int attached = kv.AttachPrefix(s->kv_seq, s->params.cache_salt, tokens, most);
    CHECK(attached >= 0 && attached < static_cast<int>(s->tokens.size()) &&
              attached % kv.config().block_tokens == 0,
          "AttachPrefix returned {} for {} tokens", attached, s->tokens.size());
    s->n_computed = attached;
    s->n_published = attached;
  }
  EndPrefetch(s);
}

bool Scheduler::AttachArgs(const Seq& s, std::span<const TokenId>* tokens, int* most) const {
  const bool needs_prompt_logits = s.params.prompt_logprobs && !s.prompt_logprobs_sent;
  if (!options_.prefix_sharing || needs_prompt_logits) return false;
  // With a policy, a readmitted sequence attaches no more than it did the first time, so it replays the
  // same evictions (attached blocks are pinned).
  *most = kv_->policy().active() && s.admitted_before() ? s.cached_tokens : INT_MAX;
  // Attached blocks are pinned, so a streaming policy holds constant memory only if it attaches a bounded
  // prefix: a conversation that resends its history each turn would otherwise pin all of it (and attend
  // over it). It attaches at most its budget.
  if (Streaming()) *most = std::min(*most, StreamingAttachLimit());
  // Logits from the prompt's last token on must be computed: forced requests attach within the prompt, as
  // policy sequences do (generated tokens go the decode path).
  const size_t span = kv_->policy().active() || s.forced() ? s.n_prompt : s.tokens.size();
  *tokens = std::span<const TokenId>(s.tokens).first(span);
  return true;
}

void Scheduler::StartPrefetches() {
  if (!kv_->tiers()) return;
  for (auto& w : waiting_) {
    Seq* s = w.get();
    if (s->read_ahead != Seq::ReadAhead::kNone) continue;
    s->read_ahead = Seq::ReadAhead::kStarted;
    std::span<const TokenId> tokens;
    int most = 0;
    if (AttachArgs(*s, &tokens, &most)) s->prefetch = kv_->StartPrefetch(s->params.cache_salt, tokens, most);
  }
}

bool Scheduler::WaitsForPrefetch(Seq* s) {
  // Once read, StartSequence attaches from what was read, then ends it. The wait is paid once, by the
  // step in which the read-ahead started.
  if (s->prefetch == 0) return false;
  const double wait = s->read_ahead == Seq::ReadAhead::kWaited ? 0 : options_.read_ahead_wait_s;
  s->read_ahead = Seq::ReadAhead::kWaited;
  return kv_->PrefetchPending(s->prefetch, wait);
}

void Scheduler::EndPrefetch(Seq* s) {
  kv_->EndPrefetch(s->prefetch);
  s->prefetch = 0;
}

size_t Scheduler::CommittedBytes() const {
  // What running sequences hold, plus what their prompts still have to allocate. Blocks a sequence shares are
  // counted once per holder (an overestimate); blocks only the prefix cache holds are not counted: the pool
  // evicts them when it needs room.
  const kv::KvCache& kv = *kv_;
  size_t out = 0;
  for (const auto& s : running_) {
    const size_t have = kv.SequenceUsage(s->kv_seq).bytes_allocated;
    const size_t want = s->remaining() > 1 ? SequenceBudget(static_cast<int64_t>(s->tokens.size()) + 1) : 0;
    out += std::max(have, want);
  }
  return out;
}

void Scheduler::Admit(int* tokens_left, std::vector<Chunk>* batch) {
  kv::KvCache& kv = *kv_;
  const int bt = kv.config().block_tokens;
  size_t committed = CommittedBytes();
  const size_t budget = kv.budget_bytes();
  std::lock_guard<std::mutex> lock(mu_);
  StartPrefetches();
  waiting_on_prefetch_ = false;
  size_t next = 0;  // waiting_[next] is the next to consider; those before it wait for their read-ahead
  while (next < waiting_.size() && *tokens_left > 0 && static_cast<int>(running_.size()) < options_.max_running) {
    Seq* s = waiting_[next].get();
    // Its prefix is still being read from a lower tier: the others go first, so the step does not
    // wait on a disk or a network.
    if (WaitsForPrefetch(s)) {
      waiting_on_prefetch_ = true;
      ++next;
      continue;
    }
    // The prompt (and one block to grow into) beyond the blocks it shares.
    const int64_t len = static_cast<int64_t>(s->tokens.size());
    const size_t need = SequenceBudget(len + bt);
    // Checked before the prefix lookup, which does not change `need`: a request that must wait does not
    // fetch blocks from a lower tier into the pool (evicting others) step after step.
    if (!running_.empty() && committed + need > budget) break;
    StartSequence(s);
    const int n = ChunkOf(s, *tokens_left);
    if (n == 0) {
      kv.RemoveSequence(s->kv_seq);
      s->kv_seq = -1;
      s->n_computed = s->n_published = 0;
      break;
    }
    committed += need;
    if (s->preempted_computed > 0) {  // readmitted: what it had computed came back attached, or is recomputed
      const int swapped = std::min(s->n_computed, s->preempted_computed);
      std::lock_guard<std::mutex> stats_lock(stats_mu_);
      stats_.preempted_tokens_swapped += swapped;
      stats_.preempted_tokens_recomputed += s->preempted_computed - swapped;
      s->preempted_computed = 0;
    }
    if (!s->admitted_before()) {
      s->cached_tokens = s->n_computed;
      s->admitted_time = Now();
      std::lock_guard<std::mutex> stats_lock(stats_mu_);
      stats_.queue.Observe(s->admitted_time - s->arrival);
      stats_.prompt_tokens += s->n_prompt;
      stats_.prompt_tokens_cached += s->cached_tokens;
      if (options_.prefix_sharing) {
        ++stats_.prefix_lookups;
        if (s->cached_tokens > 0) ++stats_.prefix_hits;
      }
    }
    *tokens_left -= n;
    std::unique_ptr<Seq> owned = std::move(waiting_[next]);
    waiting_.erase(waiting_.begin() + static_cast<std::ptrdiff_t>(next));
    auto pos = std::upper_bound(running_.begin(), running_.end(), owned->id,
                                [](RequestId id, const std::unique_ptr<Seq>& r) { return id < r->id; });
    running_.insert(pos, std::move(owned));
    batch->push_back({s, n});
  }
  n_running_shared_ = static_cast<int>(running_.size());
}

void Scheduler::Preempt(Seq* s) {
  kv::KvCache& kv = *kv_;
  // Its computed blocks go to the prefix cache, so a readmission finds them unless the pool needed them in
  // the meantime (then it recomputes). All of them again, not only those past n_published: the pool may have
  // evicted index entries of blocks the sequence still held (they free nothing while it runs, but the entry
  // is gone), and without republishing them the readmission would find nothing.
  s->n_published = 0;
  PublishPrefix(s);
  s->preempted_computed = s->n_computed;
  kv.RemoveSequence(s->kv_seq);
  s->kv_seq = -1;
  s->n_computed = s->n_published = 0;
  s->read_ahead = Seq::ReadAhead::kNone;  // what RAM loses before its readmission can be read ahead again
  ++s->preemptions;
  auto it = std::find_if(running_.begin(), running_.end(), [&](const auto& r) { return r.get() == s; });
  CHECK(it != running_.end());
  std::unique_ptr<Seq> owned = std::move(*it);
  running_.erase(it);
  {
    std::lock_guard<std::mutex> stats_lock(stats_mu_);
    ++stats_.preemptions;
  }
  std::lock_guard<std::mutex> lock(mu_);
  auto pos = std::upper_bound(waiting_.begin(), waiting_.end(), owned->id,
                              [](RequestId id, const std::unique_ptr<Seq>& w) { return id < w->id; });
  waiting_.insert(pos, std::move(owned));
  n_running_shared_ = static_cast<int>(running_.size());
}

Status Scheduler::RunBatch(std::vector<Chunk>* batch) {
  std::vector<model::BatchEntry> entries;
  std::vector<kv::StepChunk> chunks;
  for (;;) {
    if (batch->empty()) return Status::Ok();
    entries.clear();
    for (const Chunk& c : *batch) {
      Seq* s = c.seq;
      entries.push_back({s->kv_seq, std::span<const TokenId>(s->tokens).subspan(s->n_computed, c.n_tokens),
                         FirstLogitRow(*s, c.n_tokens)});
    }
    chunks = model::StepChunks(entries);
    // Reserve the step's slots first (allocate-slots); only a step that fits runs.
    Status st = kv_->BeginStep(chunks);
    if (st.ok()) {
      const double t0 = Now();
      st = model_->Forward(*pool_, *kv_, entries, &logits_);
      if (!st.ok()) {
        kv_->CancelStep(chunks);
        return st;
      }
      // The prefill rate the swap-or-recompute rule weighs tier fetches against: steps that carry a prompt
      // chunk (decode-only steps run one token per sequence, a rate recomputation never sees).
      int64_t n_tokens = 0;
      bool prefill = false;
      for (const Chunk& c : *batch) {
        n_tokens += c.n_tokens;
        prefill |= c.n_tokens > 1;
      }
      if (prefill) kv_->swap_cost().ObservePrefill(n_tokens, Now() - t0);
      return st;
    }
    if (st.code() != StatusCode::kResourceExhausted) return st;
    // The pool cannot hold this step; nothing changed. Make room, least valuable work first.
    int last_prompt = -1;
    for (int i = 0; i < static_cast<int>(batch->size()); ++i) {
      if ((*batch)[i].seq->remaining() > 1 &&
          (last_prompt < 0 || (*batch)[i].seq->id > (*batch)[last_prompt].seq->id)) {
        last_prompt = i;
      }
    }
    if (batch->size() > 1 && last_prompt >= 0) {  // defer the newest prompt chunk
      batch->erase(batch->begin() + last_prompt);
      continue;
    }
    if (running_.size() > 1) {  // preempt the newest sequence
      Seq* victim = running_.back().get();
      std::erase_if(*batch, [&](const Chunk& c) { return c.seq == victim; });
      Preempt(victim);
      continue;
    }
    if ((*batch)[0].n_tokens > 1) {  // alone: a smaller chunk may fit
      (*batch)[0].n_tokens /= 2;
      continue;
    }
    return st;
  }
}

void Scheduler::EmitText(Seq* s, std::string text, bool final) {
  // Held text plus the new piece; cut at the first stop string, and hold back the longest
  // tail that could still grow into one.
  s->held += text;
  size_t stop_at = std::string::npos;
  for (const std::string& stop : s->params.stop) {
    if (stop.empty()) continue;
    stop_at = std::min(stop_at, s->held.find(stop));
  }
  RequestOutput out;
  out.token = s->tokens.back();
  out.has_logprob = s->has_logprob;
  out.logprob = s->logprob;
  s->has_logprob = false;
  if (s->params.prompt_logprobs && !s->prompt_logprobs_sent) {
    out.prompt_logprobs = std::move(s->prompt_logprobs);
    s->prompt_logprobs_sent = true;
  }
  if (stop_at != std::string::npos) {
    out.text = s->held.substr(0, stop_at);
    s->held.clear();
    if (s->params.on_output) s->params.on_output(out);
    s->publish_on_exit = true;
    Finish(s, FinishReason::kStop);
    return;
  }
  size_t keep = 0;
  if (!final) {
    for (const std::string& stop : s->params.stop) {
      for (size_t k = std::min(stop.size() - (stop.empty() ? 0 : 1), s->held.size()); k > keep; --k) {
        if (s->held.compare(s->held.size() - k, k, stop, 0, k) == 0) {
          keep = k;
          break;
        }
      }
    }
  }
  out.text = s->held.substr(0, s->held.size() - keep);
  s->held.erase(0, s->held.size() - keep);
  if (s->params.on_output) s->params.on_output(out);
}

void Scheduler::OnToken(Seq* s, TokenId token, double now) {
  s->tokens.push_back(token);
  ++s->generated;
  {
    std::lock_guard<std::mutex> stats_lock(stats_mu_);
    ++stats_.generated_tokens;
    if (s->first_token_time < 0) {
      stats_.ttft.Observe(now - s->arrival);
      stats_.prefill.Observe(now - s->admitted_time);
    } else {
      stats_.itl.Observe(now - s->last_token_time);
    }
  }
  if (s->first_token_time < 0) s->first_token_time = now;
  s->last_token_time = now;
  const bool eog = !s->params.ignore_eos && tok_ && tok_->IsEndOfGeneration(token);
  // A JSON object is complete: nothing but whitespace could follow, so the request stops.
  bool json_done = false;
  if (s->json) {
    s->json->Accept(token);
    json_done = s->json->Complete();
  }
  const bool stop = eog || json_done;
  const bool length =
      s->generated >= s->params.max_tokens || (static_cast<int>(s->tokens.size()) >= n_ctx_ && !Streaming());
  const bool last = stop || length;
  // An end-of-generation token is not rendered; what the decoder still holds is sent.
  std::string text = eog ? s->Flush() : s->Push(token);
  if (last && !eog) text += s->Flush();
  EmitText(s, std::move(text), last);
  if (s->done) return;  // a stop string
  if (last) {
    s->publish_on_exit = true;
    Finish(s, stop ? FinishReason::kStop : FinishReason::kLength);
  }
}

void Scheduler::Finish(Seq* s, FinishReason reason, Status error) {
  if (s->done) return;
  s->done = true;
  EndPrefetch(s);
  RequestOutput out;
  out.finished = true;
  out.finish_reason = reason;
  out.error = std::move(error);
  out.usage = {s->n_prompt, s->generated, s->cached_tokens, s->preemptions};
  if (s->params.report_kv && s->kv_seq >= 0) {
    out.kv_usage = kv_->SequenceUsage(s->kv_seq);
    for (int l = 0; l < kv_->spec().n_layers; ++l) out.kv_layers.push_back(kv_->LayerUsage(s->kv_seq, l));
  }
  {
    std::lock_guard<std::mutex> stats_lock(stats_mu_);
    switch (reason) {
      case FinishReason::kCancelled:
        ++stats_.cancelled;
        break;
      case FinishReason::kError:
        ++stats_.failed;
        break;
      default:
        ++stats_.finished;
        break;
    }
    const double end = Now();
    stats_.e2e.Observe(end - s->arrival);
    if (s->admitted_before()) stats_.inference.Observe(end - s->admitted_time);
    if (s->first_token_time >= 0) stats_.decode.Observe(end - s->first_token_time);
  }
  if (s->params.on_output) s->params.on_output(out);
}

void Scheduler::PublishPrefix(Seq* s) {
  if (!options_.prefix_sharing || s->kv_seq < 0) return;
  const int bt = kv_->config().block_tokens;
  if (s->n_computed / bt <= s->n_published / bt) return;  // no new full block
  kv_->PublishPrefix(s->kv_seq, s->params.cache_salt,
                     std::span<const TokenId>(s->tokens).first(s->n_computed));
  s->n_published = s->n_computed;
}

void Scheduler::RemoveFinished() {
  kv::KvCache& kv = *kv_;
  for (auto& s : running_) {
    if (!s->done) continue;
    if (s->publish_on_exit) PublishPrefix(s.get());
    kv.RemoveSequence(s->kv_seq);
    s->kv_seq = -1;
  }
  std::erase_if(running_, [](const auto& s) { return s->done; });
  std::lock_guard<std::mutex> lock(mu_);
  n_running_shared_ = static_cast<int>(running_.size());
}

bool Scheduler::Step() {
  TakeCancellations();
  int tokens_left = options_.max_batch_tokens;
  std::vector<Chunk> batch = PlanBatch(&tokens_left);
  Admit(&tokens_left, &batch);
  if (batch.empty()) {
    UpdateStats(Now());
    return false;
  }
  const Status st = RunBatch(&batch);
  const double now = Now();
  if (!st.ok()) {
    // A lone request the pool cannot hold, or a failure of the forward pass itself. One that
    // has already generated ends as if it reached its length, so its text is not lost
    // (Submit refuses requests that cannot fit, so this is a last resort).
    for (const Chunk& c : batch) {
      if (st.code() == StatusCode::kResourceExhausted && c.seq->generated > 0) {
        EmitText(c.seq, c.seq->Flush(), /*final=*/true);
        Finish(c.seq, FinishReason::kLength);
      } else {
        Finish(c.seq, FinishReason::kError, st);
      }
    }
  } else {
    int batch_tokens = 0;
    const size_t n_vocab = static_cast<size_t>(model_->vocab_size());
    std::vector<size_t> sample;    // batch entries whose sequence reached its end: sample
    std::vector<size_t> last_row;  // [entry] row of its last token's logits
    size_t row = 0;                // the entry's first row in logits_
    for (size_t i = 0; i < batch.size(); ++i) {
      Seq* s = batch[i].seq;
      const int n = batch[i].n_tokens;
      // The entry has rows for its tokens [first_row, n) (FirstLogitRow); chunk row r is logits_ row
      // row + r - first_row.
      const int first_row = FirstLogitRow(*s, n);
      const auto logits_of = [&](int r) {
        return std::span<const float>(logits_.data() + (row + r - first_row) * n_vocab, n_vocab);
      };
      if (WantsPromptLogits(*s)) {
        // Chunk row r predicts token n_computed + r + 1: a prompt token's log-probability.
        for (int r = 0; r < n && s->n_computed + r + 1 < s->n_prompt; ++r) {
          s->prompt_logprobs.push_back(ComputeLogprob(logits_of(r), s->tokens[s->n_computed + r + 1],
                                                      std::max(0, s->params.logprobs)));
        }
      }
      // A forced request sees every row from its prompt's last token on.
      if (s->forced() && s->params.on_logits && s->n_computed + n >= s->n_prompt) {
        for (int r = std::max(0, s->n_prompt - 1 - s->n_computed); r < n; ++r)
          s->params.on_logits(logits_of(r));
      }
      row += n - first_row;
      last_row.push_back(row - 1);
      s->n_computed += n;
      batch_tokens += n;
      // Published before the policy acts, so that requests with the same prompt can start from it.
      PublishPrefix(s);
      if (!s->compressed && s->n_computed >= s->n_prompt) {
        kv_->Compress(s->kv_seq);  // the prompt has ended: the policy cuts it to
                                   // its budget
        s->compressed = true;
      }
      if (s->remaining() > 0) continue;
      if (s->forced()) {
        s->generated = static_cast<int>(s->params.forced.size());
        Finish(s, FinishReason::kLength);
        continue;
      }
      sample.push_back(i);
    }
    // Samplers are independent (each has its own generator): draw in parallel, then emit in
    // batch order.
    std::vector<TokenId> drawn(sample.size());
    pool_->Run(static_cast<int>(sample.size()), [&](int j, int) {
      const size_t i = sample[j];
      Seq* s = batch[i].seq;
      const std::span<const float> logits(logits_.data() + last_row[i] * n_vocab, n_vocab);
      if (s->json) {
        const JsonConstraint& json = *s->json;
        drawn[j] = s->sampler.Sample(
            logits, s->tokens, [&json](TokenId t) { return json.Allows(t); },
            [&json](std::vector<TokenId>* out) { json.AllowedTokens(out); });
        if (drawn[j] == kNoToken) return;
      } else {
        drawn[j] = s->sampler.Sample(logits, s->tokens);
      }
      if (s->params.logprobs >= 0) {
        s->logprob = ComputeLogprob(logits, drawn[j], s->params.logprobs);
        s->has_logprob = true;
      }
    });
    for (size_t j = 0; j < sample.size(); ++j) {
      Seq* s = batch[sample[j]].seq;
      if (drawn[j] == kNoToken) {  // only a constraint rejects every token
        Finish(s, FinishReason::kError,
               InvalidArgument("json_object: no token of the vocabulary continues the JSON object"));
        continue;
      }
      OnToken(s, drawn[j], now);
    }
    std::lock_guard<std::mutex> stats_lock(stats_mu_);
    ++stats_.steps;
    stats_.computed_tokens += batch_tokens;
    stats_.last_batch_tokens = batch_tokens;
    stats_.last_batch_sequences = static_cast<int>(batch.size());
  }
  RemoveFinished();
  UpdateStats(now);
  return true;
}

void Scheduler::UpdateStats(double now) {
  const kv::KvCache& kv = *kv_;
  std::vector<SequenceStats> seqs;
  seqs.reserve(running_.size());
  for (const auto& s : running_) {
    const kv::KvUsage u = kv.SequenceUsage(s->kv_seq);
    seqs.push_back({s->id, s->remaining() > 1 ? "prefill" : "decode", s->n_prompt, s->generated,
                    s->cached_tokens, u.tokens, u.blocks, u.bytes_allocated});
  }
  int waiting = 0, preempted = 0;
  bool idle = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    waiting = static_cast<int>(waiting_.size());
    for (const auto& w : waiting_) preempted += w->preemptions > 0;
    idle = waiting_.empty() && running_.empty();
  }
  {
    std::lock_guard<std::mutex> stats_lock(stats_mu_);
    stats_.time = now;
    stats_.running = static_cast<int>(running_.size());
    stats_.waiting = waiting;
    stats_.preempted_waiting = preempted;
    stats_.kv_bytes_used = kv.bytes_in_use();
    stats_.kv_blocks_used = kv.blocks_in_use();
    const size_t free_bytes =
        kv.budget_bytes() > kv.bytes_in_use() ? kv.budget_bytes() - kv.bytes_in_use() : 0;
    stats_.kv_blocks_free = static_cast<int64_t>(free_bytes / std::max<size_t>(1, kv.sealed_block_bytes()));
    stats_.sequences = std::move(seqs);
    if (now - slow_stats_time_ >= kPrefixStatsSeconds || idle) {
      if (options_.prefix_sharing) {
        const kv::PrefixStats p = kv.prefix_stats();
        stats_.kv_blocks_shared = p.shared_blocks;
        stats_.prefix_cache_entries = p.cached_blocks;
        stats_.prefix_evictions = p.evicted;
        stats_.prefix = p;
      }
      stats_.swap = kv.swap_cost().stats();  // the tiers' own counters are read by Stats()
      stats_.evicting = kv.policy().active();
      stats_.recall = kv.policy().recall;
      stats_.eviction = kv.eviction_stats();
      slow_stats_time_ = now;
    }
    rate_window_.push_back({now, {stats_.generated_tokens, stats_.computed_tokens}});
    while (rate_window_.size() > 2 && rate_window_[1].first < now - kRateWindowSeconds)
      rate_window_.pop_front();
  }
  if (idle) idle_cv_.notify_all();
}

SchedulerStats Scheduler::Stats() const {
  SchedulerStats s;
  {
    const double now = Now();
    std::lock_guard<std::mutex> stats_lock(stats_mu_);
    s = stats_;
    // Rates over the window up to now (an idle scheduler decays to 0).
    if (!rate_window_.empty()) {
      const auto& [t0, c0] = rate_window_.front();
      const auto& c1 = rate_window_.back().second;
      const double dt = std::max(now - t0, 1e-3);
      s.generated_tokens_per_s = static_cast<double>(c1.first - c0.first) / dt;
      s.computed_tokens_per_s = static_cast<double>(c1.second - c0.second) / dt;
    }
  }
  // The tiers' counters are read here, by the caller, after stats_mu_ is released: their
  // writer and reader threads go on after the last request has ended, and a tier's lock can
  // be held through a Redis round trip, which neither the step loop nor stats_mu_ should wait
  // on. (TierStack and every tier lock their own stats; the stack is attached when the engine
  // is built, before any scheduler exists.)
  if (const kv::tiers::TierStack* t = kv_->tiers()) {
    s.tier_stack = t->Stats();
    s.tiers = t->TierStatsList();
  }
  return s;
}

void Scheduler::Loop() {
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock,
               [&] { return stop_ || !waiting_.empty() || !cancels_.empty() || n_running_shared_ > 0; });
      if (stop_) return;
    }
    if (!Step() && waiting_on_prefetch_) {
      // Nothing to run but requests whose prefix is being read ahead: look again shortly.
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait_for(lock, std::chrono::milliseconds(1), [&] { return stop_ || !cancels_.empty(); });
    }
  }
}

void Scheduler::Start() {
  CHECK(!thread_.joinable(), "scheduler already started");
  thread_ = std::thread([this] { Loop(); });
}

void Scheduler::WaitIdle() {
  std::unique_lock<std::mutex> lock(mu_);
  idle_cv_.wait(lock, [&] { return waiting_.empty() && n_running_shared_ == 0; });
}

void Scheduler::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    accepting_ = false;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  // No step runs any more: cancel what is left and give its blocks back.
  std::deque<std::unique_ptr<Seq>> left;
  {
    std::lock_guard<std::mutex> lock(mu_);
    left.swap(waiting_);
    cancels_.clear();
  }
  for (auto& s : left) Finish(s.get(), FinishReason::kCancelled);
  for (auto& s : running_) Finish(s.get(), FinishReason::kCancelled);
  for (auto& s : running_) s->publish_on_exit = false;
  RemoveFinished();
  idle_cv_.notify_all();
}

}  // namespace slimkv::engine
