// Perplexity the way llama.cpp's llama-perplexity measures it, so the two can be compared
// on the same file: the token stream is cut into non-overlapping windows of n_ctx tokens;
// each window starts a fresh sequence (its first token replaced by BOS when the model adds
// BOS), and only the second half of each window is scored (every scored token has at least
// n_ctx/2 tokens of context).
#pragma once

#include <cstdint>
#include <vector>

#include "base/status.h"
#include "engine/engine.h"

namespace slimkv::eval {

struct PerplexityOptions {
  int n_ctx = 512;
  int max_chunks = -1;  // -1: all windows
  bool progress = true;
};

struct PerplexityResult {
  double ppl = 0;
  double ppl_stderr = 0;  // llama.cpp's +/- estimate
  double mean_nll = 0;
  int64_t scored_tokens = 0;
  int chunks = 0;
  double seconds = 0;
  std::vector<double> running_ppl;  // after each chunk, as llama.cpp prints [1]..[n]
};

Result<PerplexityResult> Perplexity(engine::Engine& engine, const std::vector<int32_t>& tokens,
                                    const PerplexityOptions& options);

}  // namespace slimkv::eval
