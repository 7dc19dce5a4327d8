#include "engine/scheduler.h"

#include <algorithm>

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
  Seq(RequestParams p, const tokenizer::Tokenizer& tok)
      : params(std::move(p)), sampler(params.sampling), decoder(tok) {
    tokens = params.prompt;
    n_prompt = static_cast<int>(tokens.size());
  }
  int remaining() const { return static_cast<int>(tokens.size()) - n_computed; }

  RequestId id = 0;
  RequestParams params;
  double arrival = 0;
  std::vector<TokenId> tokens;  // the prompt, then the generated tokens
  int n_prompt = 0;
  int n_computed = 0;           // tokens [0, n_computed) are in the KV cache
  int n_published = 0;          // tokens indexed in the prefix cache
  kv::SeqId kv_seq = -1;        // -1 while waiting
  Sampler sampler;
  tokenizer::StreamDecoder decoder;
  std::string held;             // text not sent yet: it could be the start of a stop string
  int generated = 0;
  int cached_tokens = 0;        // from the prefix cache at the first admission
  bool admitted_before = false;
  int preemptions = 0;
  double first_token_time = -1, last_token_time = -1;
  bool done = false;
  bool publish_on_exit = false;  // finished normally: keep its blocks in the prefix cache
};

Scheduler::Scheduler(Engine* engine, const SchedulerOptions& options)
    : engine_(engine), options_(options), n_ctx_(engine->options().n_ctx) {}

Result<std::unique_ptr<Scheduler>> Scheduler::Create(Engine* engine, const SchedulerOptions& o) {
  if (engine == nullptr) return InvalidArgument("scheduler needs an engine");
  if (o.max_running < 1) return InvalidArgument("max running sequences must be at least 1, got {}", o.max_running);
  if (o.max_waiting < 0) return InvalidArgument("max waiting requests must not be negative, got {}", o.max_waiting);
  if (o.max_batch_tokens < 1) {
    return InvalidArgument("max batch tokens must be at least 1, got {}", o.max_batch_tokens);
  }
  std::unique_ptr<Scheduler> s(new Scheduler(engine, o));
  const kv::KvCache& kv = engine->kv();
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
    s->max_sequence_tokens_ = s->n_ctx_;
  }
  s->UpdateStats(s->Now());
  return s;
}

Scheduler::~Scheduler() { Stop(); }

size_t SequenceKvBytes(const kv::KvCache& kv, int64_t tokens) {
  return kv::SequenceFootprint(kv.spec(), kv.config(), tokens).bytes_allocated;
}

size_t Scheduler::SequenceBudget(int64_t tokens) const { return SequenceKvBytes(engine_->kv(), tokens); }

Result<RequestId> Scheduler::Submit(RequestParams p) {
  RETURN_IF_ERROR(p.sampling.Validate());
  if (p.prompt.empty()) return InvalidArgument("empty prompt");
  if (p.max_tokens < 1) return InvalidArgument("max_tokens must be at least 1, got {}", p.max_tokens);
  const int n_vocab = engine_->model().config().n_vocab;
  for (TokenId t : p.prompt) {
    if (t < 0 || t >= n_vocab) return InvalidArgument("token id {} is out of range (vocabulary of {})", t, n_vocab);
  }
  const int64_t n = static_cast<int64_t>(p.prompt.size());
  if (n >= n_ctx_) {
    return OutOfRange("prompt of {} tokens does not fit in the context of {} tokens", n, n_ctx_);
  }
  const size_t need = SequenceBudget(n + 1), budget = engine_->kv().budget_bytes();
  if (need > budget) {
    return OutOfRange("prompt of {} tokens needs {} bytes of KV cache; the pool holds {} bytes", n, need, budget);
  }
  // The whole request must fit the pool alone, or it would fail part way through.
  const int64_t total = std::min<int64_t>(n + p.max_tokens, n_ctx_);
  if (total > max_sequence_tokens_) {
    return OutOfRange(
        "prompt ({} tokens) + max_tokens ({}) = {} tokens need {} bytes of KV cache; the pool holds {} bytes, "
        "at most {} tokens for one request",
        n, total - n, total, SequenceBudget(total), budget, max_sequence_tokens_);
  }
  auto seq = std::make_unique<Seq>(std::move(p), engine_->tokenizer());
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
    if (s->kv_seq >= 0) engine_->kv().RemoveSequence(s->kv_seq);  // never: waiting ones hold none
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
      const int n = std::min(s->remaining(), *tokens_left);
      batch.push_back({s.get(), n});
      *tokens_left -= n;
    }
  }
  return batch;
}

void Scheduler::StartSequence(Seq* s) {
  kv::KvCache& kv = engine_->kv();
  s->kv_seq = kv.AddSequence();
  s->n_computed = 0;
  s->n_published = 0;
  if (options_.prefix_sharing) {
    const int attached = kv.AttachPrefix(s->kv_seq, s->params.cache_salt, s->tokens);
    CHECK(attached >= 0 && attached < static_cast<int>(s->tokens.size()) &&
              attached % kv.config().block_tokens == 0,
          "AttachPrefix returned {} for {} tokens", attached, s->tokens.size());
    s->n_computed = attached;
    s->n_published = attached;
  }
}

size_t Scheduler::CommittedBytes() const {
  // What running sequences hold, plus what their prompts still have to allocate. Blocks a
  // sequence shares are counted once per holder (an overestimate); blocks only the prefix
  // cache holds are not counted: the pool evicts them when it needs room.
  const kv::KvCache& kv = engine_->kv();
  size_t out = 0;
  for (const auto& s : running_) {
    const size_t have = kv.SequenceUsage(s->kv_seq).bytes_allocated;
    const size_t want = s->remaining() > 1 ? SequenceBudget(static_cast<int64_t>(s->tokens.size()) + 1) : 0;
    out += std::max(have, want);
  }
  return out;
}

void Scheduler::Admit(int* tokens_left, std::vector<Chunk>* batch) {
  kv::KvCache& kv = engine_->kv();
  const int bt = kv.config().block_tokens;
  size_t committed = CommittedBytes();
  const size_t budget = kv.budget_bytes();
  std::lock_guard<std::mutex> lock(mu_);
  while (!waiting_.empty() && *tokens_left > 0 && static_cast<int>(running_.size()) < options_.max_running) {
    Seq* s = waiting_.front().get();
    StartSequence(s);
    // The prompt (and one block to grow into) beyond the blocks it shares.
    const int64_t len = static_cast<int64_t>(s->tokens.size());
    const size_t need = SequenceBudget(len + bt);
    if (!running_.empty() && committed + need > budget) {
      kv.RemoveSequence(s->kv_seq);
      s->kv_seq = -1;
      s->n_computed = s->n_published = 0;
      break;
    }
    committed += need;
    if (!s->admitted_before) {
      s->admitted_before = true;
      s->cached_tokens = s->n_computed;
      std::lock_guard<std::mutex> stats_lock(stats_mu_);
      stats_.prompt_tokens += s->n_prompt;
      stats_.prompt_tokens_cached += s->cached_tokens;
      if (options_.prefix_sharing) {
        ++stats_.prefix_lookups;
        if (s->cached_tokens > 0) ++stats_.prefix_hits;
      }
    }
    const int n = std::min(s->remaining(), *tokens_left);
    *tokens_left -= n;
    std::unique_ptr<Seq> owned = std::move(waiting_.front());
    waiting_.pop_front();
    auto pos = std::upper_bound(running_.begin(), running_.end(), owned->id,
                                [](RequestId id, const std::unique_ptr<Seq>& r) { return id < r->id; });
    running_.insert(pos, std::move(owned));
    batch->push_back({s, n});
  }
  n_running_shared_ = static_cast<int>(running_.size());
}

void Scheduler::Preempt(Seq* s) {
  kv::KvCache& kv = engine_->kv();
  // Its computed blocks go to the prefix cache, so a readmission finds them unless the pool
  // needed them in the meantime (then it recomputes).
  PublishPrefix(s);
  kv.RemoveSequence(s->kv_seq);
  s->kv_seq = -1;
  s->n_computed = s->n_published = 0;
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
  for (;;) {
    if (batch->empty()) return Status::Ok();
    entries.clear();
    for (const Chunk& c : *batch) {
      entries.push_back({c.seq->kv_seq, std::span<const TokenId>(c.seq->tokens).subspan(c.seq->n_computed, c.n_tokens)});
    }
    Status st = engine_->model().Forward(engine_->pool(), engine_->kv(), entries, &logits_);
    if (st.ok() || st.code() != StatusCode::kResourceExhausted) return st;
    // The pool cannot hold this step; nothing changed. Make room, least valuable work first.
    int last_prompt = -1;
    for (int i = 0; i < static_cast<int>(batch->size()); ++i) {
      if ((*batch)[i].seq->remaining() > 1 && (last_prompt < 0 || (*batch)[i].seq->id > (*batch)[last_prompt].seq->id)) {
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
    } else {
      stats_.itl.Observe(now - s->last_token_time);
    }
  }
  if (s->first_token_time < 0) s->first_token_time = now;
  s->last_token_time = now;
  const bool eog = !s->params.ignore_eos && engine_->tokenizer().IsEndOfGeneration(token);
  const bool length = s->generated >= s->params.max_tokens || static_cast<int>(s->tokens.size()) >= n_ctx_;
  const bool last = eog || length;
  // An end-of-generation token is not rendered; what the decoder still holds is sent.
  std::string text = eog ? s->decoder.Flush() : s->decoder.Push(token);
  if (length && !eog) text += s->decoder.Flush();
  EmitText(s, std::move(text), last);
  if (s->done) return;  // a stop string
  if (last) {
    s->publish_on_exit = true;
    Finish(s, eog ? FinishReason::kStop : FinishReason::kLength);
  }
}

void Scheduler::Finish(Seq* s, FinishReason reason, Status error) {
  if (s->done) return;
  s->done = true;
  RequestOutput out;
  out.finished = true;
  out.finish_reason = reason;
  out.error = std::move(error);
  out.usage = {s->n_prompt, s->generated, s->cached_tokens, s->preemptions};
  {
    std::lock_guard<std::mutex> stats_lock(stats_mu_);
    switch (reason) {
      case FinishReason::kCancelled: ++stats_.cancelled; break;
      case FinishReason::kError: ++stats_.failed; break;
      default: ++stats_.finished; break;
    }
    stats_.e2e.Observe(Now() - s->arrival);
  }
  if (s->params.on_output) s->params.on_output(out);
}

void Scheduler::PublishPrefix(Seq* s) {
  if (!options_.prefix_sharing || s->kv_seq < 0) return;
  const int bt = engine_->kv().config().block_tokens;
  if (s->n_computed / bt <= s->n_published / bt) return;  // no new full block
  engine_->kv().PublishPrefix(s->kv_seq, s->params.cache_salt,
                              std::span<const TokenId>(s->tokens).first(s->n_computed));
  s->n_published = s->n_computed;
}

void Scheduler::RemoveFinished() {
  kv::KvCache& kv = engine_->kv();
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
        EmitText(c.seq, c.seq->decoder.Flush(), /*final=*/true);
        Finish(c.seq, FinishReason::kLength);
      } else {
        Finish(c.seq, FinishReason::kError, st);
      }
    }
  } else {
    int batch_tokens = 0;
    const int n_vocab = engine_->model().config().n_vocab;
    std::vector<size_t> sample;  // batch entries whose sequence reached its end: sample
    for (size_t i = 0; i < batch.size(); ++i) {
      Seq* s = batch[i].seq;
      s->n_computed += batch[i].n_tokens;
      batch_tokens += batch[i].n_tokens;
      if (s->remaining() > 0) {
        PublishPrefix(s);  // so that requests with the same prompt can start from it
        continue;
      }
      sample.push_back(i);
    }
    // Samplers are independent (each has its own generator): draw in parallel, then emit in
    // batch order.
    std::vector<TokenId> drawn(sample.size());
    engine_->pool().Run(static_cast<int>(sample.size()), [&](int j, int) {
      const size_t i = sample[j];
      const std::span<const float> row(logits_.data() + i * static_cast<size_t>(n_vocab), n_vocab);
      drawn[j] = batch[i].seq->sampler.Sample(row, batch[i].seq->tokens);
    });
    for (size_t j = 0; j < sample.size(); ++j) OnToken(batch[sample[j]].seq, drawn[j], now);
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
  const kv::KvCache& kv = engine_->kv();
  std::vector<SequenceStats> seqs;
  seqs.reserve(running_.size());
  for (const auto& s : running_) {
    const kv::KvUsage u = kv.SequenceUsage(s->kv_seq);
    seqs.push_back({s->id, s->remaining() > 1 ? "prefill" : "decode", s->n_prompt, s->generated, s->cached_tokens,
                    u.tokens, u.blocks, u.bytes_allocated});
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
    const size_t free_bytes = kv.budget_bytes() > kv.bytes_in_use() ? kv.budget_bytes() - kv.bytes_in_use() : 0;
    stats_.kv_blocks_free = static_cast<int64_t>(free_bytes / std::max<size_t>(1, kv.sealed_block_bytes()));
    stats_.sequences = std::move(seqs);
    if (options_.prefix_sharing && (now - prefix_stats_time_ >= kPrefixStatsSeconds || idle)) {
      const kv::PrefixStats p = kv.prefix_stats();
      stats_.kv_blocks_shared = p.shared_blocks;
      stats_.prefix_cache_entries = p.cached_blocks;
      stats_.prefix_evictions = p.evicted;
      prefix_stats_time_ = now;
    }
    rate_window_.push_back({now, {stats_.generated_tokens, stats_.computed_tokens}});
    while (rate_window_.size() > 2 && rate_window_[1].first < now - kRateWindowSeconds) rate_window_.pop_front();
  }
  if (idle) idle_cv_.notify_all();
}

SchedulerStats Scheduler::Stats() const {
  const double now = Now();
  std::lock_guard<std::mutex> stats_lock(stats_mu_);
  SchedulerStats s = stats_;
  // Rates over the window up to now (an idle scheduler decays to 0).
  if (!rate_window_.empty()) {
    const auto& [t0, c0] = rate_window_.front();
    const auto& c1 = rate_window_.back().second;
    const double dt = std::max(now - t0, 1e-3);
    s.generated_tokens_per_s = static_cast<double>(c1.first - c0.first) / dt;
    s.computed_tokens_per_s = static_cast<double>(c1.second - c0.second) / dt;
  }
  return s;
}

void Scheduler::Loop() {
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stop_ || !waiting_.empty() || !cancels_.empty() || n_running_shared_ > 0; });
      if (stop_) return;
    }
    Step();
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
