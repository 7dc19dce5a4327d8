#include "eval/bench.h"

#include <cmath>
#include <random>
#include <regex>

#include "base/log.h"
#include "kv/footprint.h"

namespace slimkv::eval {

Result<BenchCase> ParseBenchCase(const std::string& spec) {
  static const std::regex re(R"((pp|tg)(\d+)(@d(\d+))?)");
  std::smatch m;
  if (!std::regex_match(spec, m, re)) {
    return InvalidArgument(
        "bad benchmark '{}': expected ppN, tgN or tgN@dD "
        "(e.g. pp512, tg128@d2048)",
        spec);
  }
  BenchCase c;
  c.name = spec;
  // Counts are bounded before conversion (std::stoi throws past INT_MAX) and so
  // that prompt + generated + 1 still fits in an int.
  constexpr int kMaxTokens = 1 << 24;
  for (int g : {2, 4}) {
    if (m[g].matched && (m[g].length() > 8 || std::stoi(m[g]) > kMaxTokens)) {
      return InvalidArgument("benchmark '{}': {} tokens at most", spec, kMaxTokens);
    }
  }
  const int n = std::stoi(m[2]);
  const int d = m[4].matched ? std::stoi(m[4]) : 0;
  if (n <= 0) return InvalidArgument("benchmark '{}' has no tokens", spec);
  if (m[1] == "pp") {
    if (d) return InvalidArgument("'{}': a depth applies to tg only", spec);
    c.prompt_tokens = n;
  } else {
    c.prompt_tokens = d;
    c.gen_tokens = n;
  }
  return c;
}

namespace {

// Mean and sample standard deviation of the timed repetitions' rates.
void Summarize(const std::vector<double>& rates, BenchResult* r) {
  double mean = 0;
  for (double x : rates) mean += x / static_cast<double>(rates.size());
  double var = 0;
  for (double x : rates)
    var += (x - mean) * (x - mean) / static_cast<double>(std::max<size_t>(1, rates.size() - 1));
  r->tokens_per_s = mean;
  r->stddev = std::sqrt(var);
}

// KV bytes a decode step reads: what the sequence holds (data, metadata and high-precision staging) by the
// cache's own accounting, which follows the footprint rule or, under an eviction policy, the policy's bounds.
double HeldKvBytes(const kv::KvCache& kv, kv::SeqId seq) {
  return static_cast<double>(kv.SequenceUsage(seq).bytes_held());
}

// tgN@dD with the context built once: the warm-up and the timed repetitions
// decode N tokens each, one after another on the same sequence.
Result<BenchResult> RunDecodeOnOneContext(engine::Engine& engine, const BenchCase& c, int reps,
                                          uint64_t seed) {
  const int total = c.prompt_tokens + c.gen_tokens * (reps + 1);
  if (total + 1 > engine.options().n_ctx) {
    return InvalidArgument("benchmark {} on one context needs {} tokens, the engine has {} (-c)", c.name,
                           total + 1, engine.options().n_ctx);
  }
  const int V = engine.model().config().n_vocab;
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> tok(V / 8, V - 1);
  std::vector<int32_t> prompt(std::max(1, c.prompt_tokens));
  for (auto& t : prompt) t = tok(rng);
  std::vector<float> logits;
  kv::KvCache& kv = engine.kv();
  const kv::SeqId seq = kv.AddSequence();
  Status st = c.prompt_tokens > 0 ? engine.Prefill(seq, prompt, -1, &logits) : Status::Ok();
  if (st.ok()) kv.Compress(seq);  // the prompt ends: an eviction policy cuts to its budget, as in serving
  std::vector<double> rates;
  double held_first = 0;  // KV bytes held when the timed steps start
  int32_t next = tok(rng);
  for (int rep = 0; st.ok() && rep < reps + 1; ++rep) {  // the first decodes untimed: warm-up
    if (rep == 1) held_first = HeldKvBytes(kv, seq);
    const double t0 = NowSeconds();
    for (int i = 0; st.ok() && i < c.gen_tokens; ++i) {
      const model::BatchEntry e{seq, {&next, 1}};
      st = engine.Step(kv, {&e, 1}, &logits);
      next = tok(rng);
    }
    if (st.ok() && rep > 0) rates.push_back(c.gen_tokens / (NowSeconds() - t0));
  }
  const double held_last = st.ok() ? HeldKvBytes(kv, seq) : 0;
  kv.RemoveSequence(seq);
  RETURN_IF_ERROR(st);
  BenchResult r;
  r.c = c;
  Summarize(rates, &r);
  // The timed steps run at depths D + N .. D + N (reps + 1): the KV bytes held midway.
  r.bytes_per_step =
      static_cast<double>(engine.model().WeightBytesPerToken()) + (held_first + held_last) / 2;
  r.gbps = r.bytes_per_step * r.tokens_per_s / 1e9;
  return r;
}

}  // namespace

Result<BenchResult> RunBench(engine::Engine& engine, const BenchCase& c, int reps, uint64_t seed,
                             bool same_context) {
  if (same_context && c.gen_tokens > 0) return RunDecodeOnOneContext(engine, c, reps, seed);
  const int total = c.prompt_tokens + c.gen_tokens;
  if (total + 1 > engine.options().n_ctx) {
    return InvalidArgument("benchmark {} needs {} tokens of context, the engine has {} (-c)", c.name,
                           total + 1, engine.options().n_ctx);
  }
  const int V = engine.model().config().n_vocab;
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> tok(V / 8,
                                         V - 1);  // ordinary tokens, no specials
  std::vector<int32_t> prompt(std::max(1, c.prompt_tokens));
  std::vector<float> logits;
  std::vector<double> rates;
  double held = 0;  // KV bytes held at the start and end of the timed repetitions' steps, summed
  BenchResult r;
  r.c = c;
  kv::KvCache& kv = engine.kv();
  Progress progress("bench " + c.name, reps + 1, "runs");
  for (int rep = 0; rep < reps + 1; ++rep) {  // the first run warms up and is not counted
    for (auto& t : prompt) t = tok(rng);
    const kv::SeqId seq = kv.AddSequence();
    double dt = 0;
    Status st;
    if (c.gen_tokens == 0) {
      const double t0 = NowSeconds();
      st = engine.Prefill(seq, prompt, -1, &logits);
      dt = NowSeconds() - t0;
      if (st.ok() && rep > 0) rates.push_back(c.prompt_tokens / dt);
    } else {
      if (c.prompt_tokens > 0) st = engine.Prefill(seq, prompt, -1, &logits);
      if (st.ok()) kv.Compress(seq);  // as above
      const double held_first = HeldKvBytes(kv, seq);
      int32_t next = tok(rng);
      const double t0 = NowSeconds();
      for (int i = 0; st.ok() && i < c.gen_tokens; ++i) {
        const model::BatchEntry e{seq, {&next, 1}};
        st = engine.Step(kv, {&e, 1}, &logits);
        next = tok(rng);
      }
      dt = NowSeconds() - t0;
      if (st.ok() && rep > 0) {
        rates.push_back(c.gen_tokens / dt);
        held += held_first + HeldKvBytes(kv, seq);
      }
    }
    kv.RemoveSequence(seq);
    RETURN_IF_ERROR(st);
    progress.Update(rep + 1, rep == 0 ? "(warm-up)" : "");
  }
  progress.Finish();
  Summarize(rates, &r);
  if (c.gen_tokens > 0 && !rates.empty()) {  // the KV bytes held midway through the steps
    r.bytes_per_step = static_cast<double>(engine.model().WeightBytesPerToken()) +
                       held / (2.0 * static_cast<double>(rates.size()));
    r.gbps = r.bytes_per_step * r.tokens_per_s / 1e9;
  }
  return r;
}

}  // namespace slimkv::eval
