#include "eval/perplexity.h"

#include <cmath>

#include "base/log.h"
#include "ops/elementwise.h"

namespace slimkv::eval {

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

  PerplexityResult r;
  double nll = 0, nll2 = 0;
  const double t0 = NowSeconds();
  Progress progress("perplexity", n_chunks, "chunks", false);
  std::vector<int32_t> window(n_ctx);
  std::vector<float> logits;
  for (int c = 0; c < n_chunks; ++c) {
    std::copy(tokens.begin() + static_cast<int64_t>(c) * n_ctx,
              tokens.begin() + static_cast<int64_t>(c + 1) * n_ctx, window.begin());
    if (add_bos) window[0] = tok.bos();
    const kv::SeqId seq = engine.kv().AddSequence();
    const Status st = engine.Prefill(seq, window, first, &logits);
    engine.kv().RemoveSequence(seq);
    RETURN_IF_ERROR(st);
    // Row j of logits predicts token first + j + 1 (the original tokens, not the BOS).
    for (int j = 0; j + first < n_ctx - 1; ++j) {
      const float* row = logits.data() + static_cast<int64_t>(j) * V;
      const int32_t target = tokens[static_cast<int64_t>(c) * n_ctx + first + j + 1];
      const double v = ops::LogSumExp(row, V) - row[target];
      nll += v;
      nll2 += v * v;
      ++r.scored_tokens;
    }
    r.running_ppl.push_back(std::exp(nll / r.scored_tokens));
    if (o.progress) progress.Update(c + 1, fmt::format("ppl {:.4f}", r.running_ppl.back()));
  }
  progress.Finish();
  r.chunks = n_chunks;
  r.seconds = NowSeconds() - t0;
  r.mean_nll = nll / r.scored_tokens;
  r.ppl = std::exp(r.mean_nll);
  const double var = nll2 / r.scored_tokens - r.mean_nll * r.mean_nll;
  r.ppl_stderr = r.scored_tokens > 1 ? r.ppl * std::sqrt(std::max(0.0, var) / (r.scored_tokens - 1)) : 0;
  return r;
}

}  // namespace slimkv::eval
