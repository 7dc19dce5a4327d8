#include "eval/perplexity.h"

#include <algorithm>
#include <cmath>
#include <functional>

#include "base/log.h"
#include "engine/scheduler.h"
#include "ops/elementwise.h"

namespace slimkv::eval {
namespace {

// log-softmax statistics of one row: log partition and argmax.
struct RowStats {
  double log_z;
  int argmax;
};
RowStats Stats(const float* row, int n) {
  return {ops::LogSumExp(row, n), static_cast<int>(std::max_element(row, row + n) - row)};
}

}  // namespace

namespace {

// Runs one request through `sched` to its end: `prompt` then `forced` teacher-forced, the logits rows
// ([n_vocab] each, from the prompt's last token on) appended to *rows.
Status Score(engine::Scheduler& sched, std::span<const int32_t> prompt, std::span<const int32_t> forced,
             std::vector<float>* rows, const std::function<void()>& after_step = {}) {
  engine::RequestParams p;
  p.prompt.assign(prompt.begin(), prompt.end());
  p.forced.assign(forced.begin(), forced.end());
  p.prompt_only = forced.empty();
  rows->clear();
  p.on_logits = [rows](std::span<const float> row) { rows->insert(rows->end(), row.begin(), row.end()); };
  Status error;
  p.on_output = [&](const engine::RequestOutput& o) {
    if (o.finished && o.finish_reason == engine::FinishReason::kError) error = o.error;
  };
  RETURN_IF_ERROR(sched.Submit(std::move(p)).status());
  while (!sched.Idle()) {
    sched.Step();
    if (after_step) after_step();
  }
  return error;
}

Result<std::unique_ptr<engine::Scheduler>> ScoringScheduler(engine::Engine& engine, kv::KvCache& kv,
                                                            int n_ctx, int step) {
  return engine::Scheduler::Create(
      engine::SchedulerParts{.model = &engine.step_model(),
                             .kv = &kv,
                             .pool = &engine.pool(),
                             .tokenizer = &engine.tokenizer(),
                             .n_ctx = n_ctx},
      {.max_running = 1, .max_waiting = 1, .max_batch_tokens = step, .prefix_sharing = false});
}

}  // namespace

Result<PerplexityResult> Perplexity(engine::Engine& engine, const std::vector<int32_t>& tokens,
                                    const PerplexityOptions& o) {
  const int n_ctx = o.n_ctx;
  if (n_ctx < 16) return InvalidArgument("perplexity context must be at least 16, got {}", n_ctx);
  if (static_cast<int64_t>(tokens.size()) < 2LL * n_ctx) {
    return InvalidArgument("the text has {} tokens; perplexity at context {} needs at least {}",
                           tokens.size(), n_ctx, 2 * n_ctx);
  }
  int n_chunks = static_cast<int>(tokens.size() / n_ctx);
  if (o.max_chunks > 0) n_chunks = std::min(n_chunks, o.max_chunks);
  const auto& tok = engine.tokenizer();
  const bool add_bos = tok.add_bos_default() && tok.bos() >= 0;
  const int V = engine.model().config().n_vocab;
  const int first = n_ctx / 2;
  kv::KvCache& kv = engine.kv();
  const int step =
      o.step > 0 ? o.step
                 : (kv.config().needs_staging() ? kv.config().block_tokens : engine.options().prefill_chunk);
  // Each window is one request: its first half (and the token at `first`) the prompt, the rest
  // teacher-forced, through the scheduler `serve` uses.
  ASSIGN_OR_RETURN(auto sched, ScoringScheduler(engine, kv, n_ctx + 1, step));
  std::unique_ptr<kv::KvCache> base;
  std::unique_ptr<engine::Scheduler> base_sched;
  if (o.kl_base) {
    ASSIGN_OR_RETURN(base,
                     kv::KvCache::Create(kv.spec(), *o.kl_base,
                                         kv::KvCache::BudgetFor(kv.spec(), *o.kl_base, n_ctx, 1, step)));
    ASSIGN_OR_RETURN(base_sched, ScoringScheduler(engine, *base, n_ctx + 1, step));
  }

  PerplexityResult r;
  r.step = step;
  double nll = 0, nll2 = 0, base_nll = 0, kl = 0, kl2 = 0;
  int64_t agree = 0;
  const double t0 = NowSeconds();
  Progress progress("perplexity", n_chunks, "chunks", false);
  std::vector<int32_t> window(n_ctx);
  std::vector<float> logits, base_logits;
  for (int c = 0; c < n_chunks; ++c) {
    std::copy(tokens.begin() + static_cast<int64_t>(c) * n_ctx,
              tokens.begin() + static_cast<int64_t>(c + 1) * n_ctx, window.begin());
    if (add_bos) window[0] = tok.bos();
    // Rows: the logits after tokens first .. n_ctx - 2, predicting tokens first + 1 .. n_ctx - 1.
    const std::span<const int32_t> w(window);
    RETURN_IF_ERROR(Score(*sched, w.first(first + 1), w.subspan(first + 1, n_ctx - first - 2), &logits));
    if (base) {
      RETURN_IF_ERROR(
          Score(*base_sched, w.first(first + 1), w.subspan(first + 1, n_ctx - first - 2), &base_logits));
    }
    // Row j of logits predicts token first + j + 1 (the original tokens, not the BOS).
    for (int j = 0; j + first < n_ctx - 1; ++j) {
      const float* row = logits.data() + static_cast<int64_t>(j) * V;
      const int32_t target = tokens[static_cast<int64_t>(c) * n_ctx + first + j + 1];
      const RowStats rs = Stats(row, V);
      const double v = rs.log_z - row[target];
      nll += v;
      nll2 += v * v;
      if (base) {
        const float* brow = base_logits.data() + static_cast<int64_t>(j) * V;
        const RowStats bs = Stats(brow, V);
        base_nll += bs.log_z - brow[target];
        // KL(base || tested) = sum_i p_i (log p_i - log q_i)
        double d = 0;
        for (int i = 0; i < V; ++i) {
          const double lp = brow[i] - bs.log_z, lq = row[i] - rs.log_z;
          d += std::exp(lp) * (lp - lq);
        }
        d = std::max(0.0, d);
        kl += d;
        kl2 += d * d;
        agree += rs.argmax == bs.argmax;
      }
      ++r.scored_tokens;
    }
    r.running_ppl.push_back(std::exp(nll / r.scored_tokens));
    if (o.progress) {
      progress.Update(c + 1, base ? fmt::format("ppl {:.4f} KL {:.5f}", r.running_ppl.back(), kl / r.scored_tokens)
                                  : fmt::format("ppl {:.4f}", r.running_ppl.back()));
    }
  }
  progress.Finish();
  const double n = static_cast<double>(r.scored_tokens);
  r.chunks = n_chunks;
  r.seconds = NowSeconds() - t0;
  r.mean_nll = nll / n;
  r.ppl = std::exp(r.mean_nll);
  const double var = nll2 / n - r.mean_nll * r.mean_nll;
  r.ppl_stderr = n > 1 ? r.ppl * std::sqrt(std::max(0.0, var) / (n - 1)) : 0;
  if (base) {
    r.base_ppl = std::exp(base_nll / n);
    r.mean_kl = kl / n;
    r.kl_stderr = n > 1 ? std::sqrt(std::max(0.0, kl2 / n - r.mean_kl * r.mean_kl) / (n - 1)) : 0;
    r.top1_agreement = agree / n;
  }
  return r;
}

Result<StreamResult> StreamPerplexity(engine::Engine& engine, const std::vector<int32_t>& tokens,
                                      bool progress) {
  if (tokens.size() < 2) return InvalidArgument("streaming perplexity needs at least 2 tokens");
  const int V = engine.model().config().n_vocab;
  kv::KvCache& kv = engine.kv();
  // One request: the first token its prompt, every other teacher-forced, one per step.
  const int64_t n = static_cast<int64_t>(tokens.size());
  ASSIGN_OR_RETURN(auto sched,
                   ScoringScheduler(engine, kv, std::max<int64_t>(engine.options().n_ctx, n + 1), 1));
  StreamResult r;
  Progress prog("stream perplexity", n - 1, "tokens", false);
  double nll = 0;
  const double t0 = NowSeconds();
  std::vector<float> rows;
  engine::RequestParams p;
  p.prompt = {tokens[0]};
  p.forced.assign(tokens.begin() + 1, tokens.end() - 1);
  p.on_logits = [&](std::span<const float> row) {
    const int64_t i = r.scored_tokens;  // this row predicts tokens[i + 1]
    nll += ops::LogSumExp(row.data(), V) - row[tokens[i + 1]];
    ++r.scored_tokens;
    if (r.scored_tokens % 1024 == 0) r.curve.emplace_back(r.scored_tokens, std::exp(nll / r.scored_tokens));
    if (progress && (i & 63) == 0)
      prog.Update(i + 1, fmt::format("ppl {:.3f}", std::exp(nll / r.scored_tokens)));
  };
  Status error;
  p.on_output = [&](const engine::RequestOutput& o) {
    if (o.finished && o.finish_reason == engine::FinishReason::kError) error = o.error;
  };
  RETURN_IF_ERROR(sched->Submit(std::move(p)).status());
  while (!sched->Idle()) {
    sched->Step();
    // The sequence is the pool's only one: its blocks are the pool's bytes in use.
    if (!sched->Idle()) r.kv_bytes_end = kv.bytes_in_use();
    r.kv_bytes_max = std::max(r.kv_bytes_max, kv.bytes_in_use());
  }
  RETURN_IF_ERROR(error);
  prog.Finish();
  r.seconds = NowSeconds() - t0;
  r.ppl = std::exp(nll / r.scored_tokens);
  return r;
}

}  // namespace slimkv::eval
