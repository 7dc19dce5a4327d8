#include "eval/load.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "base/log.h"
#include "engine/scheduler.h"

namespace slimkv::eval {

double Quantile(std::vector<double> v, double q) {
  if (v.empty()) return std::nan("");
  std::sort(v.begin(), v.end());
  const double pos = std::clamp(q, 0.0, 1.0) * static_cast<double>(v.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(pos));
  const size_t hi = std::min(v.size() - 1, lo + 1);
  return v[lo] + (v[hi] - v[lo]) * (pos - static_cast<double>(lo));
}

Result<LoadResult> RunLoad(engine::Engine& engine, const LoadOptions& o) {
  if (o.clients < 1 || o.requests < o.clients) {
    return InvalidArgument(
        "load: {} clients and {} requests (need clients >= "
        "1 and requests >= clients)",
        o.clients, o.requests);
  }
  if (o.prompt_tokens < 1 || o.gen_tokens < 1) {
    return InvalidArgument("load: prompts of {} and generations of {} tokens (both must be >= 1)",
                           o.prompt_tokens, o.gen_tokens);
  }
  ASSIGN_OR_RETURN(auto sched, engine::Scheduler::Create(&engine, {.max_running = o.clients,
                                                                   .max_waiting = o.clients,
                                                                   .max_batch_tokens = o.max_batch_tokens,
                                                                   .prefix_sharing = false}));
  const auto& tok = engine.tokenizer();
  const int V = engine.model().config().n_vocab;
  std::mt19937_64 rng(o.seed);
  std::uniform_int_distribution<int> ordinary(V / 8, V - 1);
  // Per request: submit time and the times of its tokens. Callbacks run on this
  // thread (it steps the scheduler), so no lock is needed.
  struct Timing {
    double submit = 0;
    std::vector<double> tokens;
    bool done = false;
    Status error;
  };
  std::vector<Timing> timing(o.requests);
  int next = 0, finished = 0, in_flight = 0;
  auto submit = [&]() -> Status {
    const int id = next++;
    engine::RequestParams p;
    p.prompt.resize(o.prompt_tokens);
    for (auto& t : p.prompt) t = ordinary(rng);
    if (tok.add_bos_default() && tok.bos() >= 0) p.prompt[0] = tok.bos();
    p.max_tokens = o.gen_tokens;
    p.ignore_eos = true;
    p.sampling.temperature = 0;
    p.on_output = [&, id](const engine::RequestOutput& out) {
      Timing& t = timing[id];
      if (out.token >= 0) t.tokens.push_back(NowSeconds());
      if (out.finished) {
        t.done = true;
        if (out.finish_reason == engine::FinishReason::kError) t.error = out.error;
        ++finished;
        --in_flight;
      }
    };
    timing[id].submit = NowSeconds();
    ++in_flight;
    return sched->Submit(std::move(p)).status();
  };
  Progress progress("load", o.requests, "requests");
  const double t0 = NowSeconds();
  while (finished < o.requests) {
    while (in_flight < o.clients && next < o.requests) RETURN_IF_ERROR(submit());
    if (!sched->Step() && in_flight > 0 && sched->Idle()) {
      return Internal("load: the scheduler went idle with {} requests unfinished", in_flight);
    }
    progress.Update(finished);
  }
  progress.Finish();
  LoadResult r;
  r.seconds = NowSeconds() - t0;
  r.requests = o.requests;
  std::vector<double> ttft, itl, e2e;
  uint64_t generated = 0;
  for (const Timing& t : timing) {
    RETURN_IF_ERROR(t.error);
    if (t.tokens.empty()) return Internal("load: a request finished without a token");
    ttft.push_back(t.tokens.front() - t.submit);
    e2e.push_back(t.tokens.back() - t.submit);
    for (size_t i = 1; i < t.tokens.size(); ++i) itl.push_back(t.tokens[i] - t.tokens[i - 1]);
    generated += t.tokens.size();
  }
  auto mean = [](const std::vector<double>& v) {
    double s = 0;
    for (double x : v) s += x;
    return v.empty() ? std::nan("") : s / static_cast<double>(v.size());
  };
  r.ttft_p50 = Quantile(ttft, 0.5);
  r.ttft_p95 = Quantile(ttft, 0.95);
  r.ttft_mean = mean(ttft);
  r.itl_p50 = Quantile(itl, 0.5);
  r.itl_p95 = Quantile(itl, 0.95);
  r.itl_mean = mean(itl);
  r.e2e_p50 = Quantile(e2e, 0.5);
  r.gen_tokens_per_s = static_cast<double>(generated) / std::max(1e-9, r.seconds);
  return r;
}

}  // namespace slimkv::eval
