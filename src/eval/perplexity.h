// Perplexity the way llama.cpp's llama-perplexity measures it, so the two can be compared
// on the same file: the token stream is cut into non-overlapping windows of n_ctx tokens;
// each window starts a fresh sequence (its first token replaced by BOS when the model adds
// BOS), and only the second half of each window is scored (every scored token has at least
// n_ctx/2 tokens of context).
//
// A window is fed in steps of `step` tokens. With a quantized KV format the step matters:
// tokens of one step attend to each other in the staging precision, so the default for
// those formats is one block per step, which makes every scored token see the cache as a
// decoding token would (older blocks quantized, the residual window in fp16).
//
// With a base KV configuration, each window is also run on a cache in that format and the
// mean KL divergence KL(base || tested) of the next-token distributions is reported, with
// the share of tokens whose top-1 prediction is the same: perplexity alone hides errors that
// cancel.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "base/status.h"
#include "engine/engine.h"
#include "kv/format.h"

namespace slimkv::eval {

struct PerplexityOptions {
  int n_ctx = 512;
  int max_chunks = -1;  // -1: all windows
  int step = 0;         // tokens per forward call; 0: the engine's batch, or a block for quantized KV
  std::optional<kv::KvConfig> kl_base;  // compare with a cache in this format
  bool progress = true;
};

struct PerplexityResult {
  double ppl = 0;
  double ppl_stderr = 0;  // llama.cpp's +/- estimate
  double mean_nll = 0;
  int64_t scored_tokens = 0;
  int chunks = 0;
  double seconds = 0;
  int step = 0;
  std::vector<double> running_ppl;  // after each chunk, as llama.cpp prints [1]..[n]
  // With a base format:
  double base_ppl = 0;
  double mean_kl = 0;        // nats per token
  double kl_stderr = 0;
  double top1_agreement = 0; // share of scored tokens with the same argmax
};

Result<PerplexityResult> Perplexity(engine::Engine& engine, const std::vector<int32_t>& tokens,
                                    const PerplexityOptions& options);

// Streaming perplexity: the whole token stream through ONE sequence, one token per step, so
// the cache (and its eviction policy) sees the text as a long generation would; every token
// after the first is scored. Reports the KV bytes the sequence held at the end and at most.
struct StreamResult {
  double ppl = 0;
  int64_t scored_tokens = 0;
  double seconds = 0;
  size_t kv_bytes_end = 0, kv_bytes_max = 0;  // allocated blocks of the sequence
  std::vector<std::pair<int64_t, double>> curve;  // (tokens seen, running ppl) every 1024 tokens
};
Result<StreamResult> StreamPerplexity(engine::Engine& engine, const std::vector<int32_t>& tokens,
                                      bool progress);

}  // namespace slimkv::eval
