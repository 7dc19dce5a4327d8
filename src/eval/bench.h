// Throughput benchmarks of the whole engine, in llama-bench's terms: pp<N>
// (prefill of an N-token prompt) and tg<N>@d<D> (N decode steps after a D-token
// context), on random tokens.
#pragma once

#include <string>
#include <vector>

#include "base/status.h"
#include "engine/engine.h"

namespace slimkv::eval {

struct BenchCase {
  std::string name;       // "pp512", "tg128@d2048"
  int prompt_tokens = 0;  // pp: tokens prefilled and timed; tg: context built before timing
  int gen_tokens = 0;     // tg: decode steps timed (0 for pp)
};

struct BenchResult {
  BenchCase c;
  double tokens_per_s = 0;  // mean over repetitions
  double stddev = 0;
  // Decode only: bytes one decode step reads (weights + the KV the sequence holds midway through the
  // timed steps, by the cache's accounting: an eviction policy's budget, not the context) and the rate.
  double bytes_per_step = 0;
  double gbps = 0;
};

// Parses "pp512", "tg128", "tg128@d2048".
Result<BenchCase> ParseBenchCase(const std::string& spec);

// Each repetition (and a first, untimed warm-up) runs on a fresh sequence, as
// llama-bench does. `same_context`: a tg test builds its context once and times
// the repetitions one after another on it (the depth grows by N tokens per
// repetition): one prefill of D tokens instead of reps + 1, for deep contexts
// where the prefill is most of the time.
Result<BenchResult> RunBench(engine::Engine& engine, const BenchCase& c, int reps, uint64_t seed,
                             bool same_context = false);

}  // namespace slimkv::eval
