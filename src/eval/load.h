// Latency under load: closed-loop clients through the scheduler that `slimkv
// serve` runs (continuous batching, no HTTP), each sending its next request
// when the last one finished. Prompts are random ordinary tokens (no two share
// a prefix), generation ignores the end-of-generation token, so every request
// costs the same and only the batching varies.
//
// TTFT: from Submit to the first generated token. ITL: the gaps between a
// request's successive tokens. Quantiles are exact over every request / gap of
// the run.
#pragma once

#include <cstdint>

#include "base/status.h"
#include "engine/engine.h"

namespace slimkv::eval {

struct LoadOptions {
  int clients = 4;    // requests in flight at once
  int requests = 16;  // in all (each client sends requests / clients, the rest one more)
  int prompt_tokens = 128;
  int gen_tokens = 32;
  int max_batch_tokens = 512;  // the scheduler's step size (serve's default)
  uint64_t seed = 1;
};

struct LoadResult {
  int requests = 0;
  double seconds = 0;                                // wall time of the whole run
  double ttft_p50 = 0, ttft_p95 = 0, ttft_mean = 0;  // seconds
  double itl_p50 = 0, itl_p95 = 0, itl_mean = 0;     // seconds
  double e2e_p50 = 0;                                // seconds, submit to last token
  double gen_tokens_per_s = 0;                       // generated tokens / wall time
};

// The engine's KV budget must hold `clients` sequences of prompt + gen tokens.
Result<LoadResult> RunLoad(engine::Engine& engine, const LoadOptions& options);

// Quantile q (0..1) of `v` by linear interpolation between order statistics
// (NaN if empty).
double Quantile(std::vector<double> v, double q);

}  // namespace slimkv::eval
