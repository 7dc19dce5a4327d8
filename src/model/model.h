// A transformer loaded from GGUF and its batched forward pass.
//
// One Forward call takes a batch of sequences, each with its own new tokens (a prompt chunk or one decode
// token): all rows go through every matmul together, so a decode step for many sequences reads the weights
// once. K/V go to the KV cache through its small interface: the caller reserves the step's slots
// (KvCache::BeginStep, the scheduler's allocate-slots) before the pass, which then Appends, Attends and ends
// the step (EndStep); the model never sees a block.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "base/aligned_buffer.h"
#include "base/status.h"
#include "base/thread_pool.h"
#include "gguf/gguf_file.h"
#include "kv/kv_cache.h"
#include "model/config.h"
#include "ops/weights.h"

namespace slimkv::model {

using TokenId = int32_t;

struct LayerWeights {
  std::vector<float> attn_norm, ffn_norm;                 // [n_embd]
  std::vector<float> q_norm, k_norm;                      // [head_dim] if qk_norm
  std::vector<float> post_attn_norm, post_ffn_norm;       // [n_embd] if post_norms
  std::vector<float> bq, bk, bv;                          // [q_dim], [kv_dim] if qkv_bias
  ops::WeightMatrix wq, wk, wv;  // [q_dim, n_embd], [kv_dim, n_embd] x2
  ops::WeightMatrix wo;          // [n_embd, q_dim]
  ops::WeightMatrix w_gate, w_up;  // [n_ff, n_embd]
  ops::WeightMatrix w_down;        // [n_embd, n_ff]
};

struct Weights {
  ops::WeightMatrix token_embd;  // [n_vocab, n_embd]
  ops::WeightMatrix output;      // [n_vocab, n_embd]; empty when tied to token_embd
  std::vector<float> output_norm;
  // Per-pair RoPE frequency divisors [rope_dim / 2] or empty: Llama-3's rope_freqs, or the
  // LongRoPE factors (short or long) that the context size selects.
  std::vector<float> rope_factors;
  std::vector<LayerWeights> layers;
};

struct BatchEntry {
  kv::SeqId seq = 0;
  std::span<const TokenId> tokens;
  // Logits are produced for tokens [logits_from, size); -1 means the last token only.
  int logits_from = -1;

  int64_t first_logit() const {
    return logits_from < 0 ? static_cast<int64_t>(tokens.size()) - 1 : logits_from;
  }
};

// The KV chunks of a batch: entry i's tokens are rows [row, row + n) of the step.
std::vector<kv::StepChunk> StepChunks(std::span<const BatchEntry> batch);

class Model {
 public:
  // Opens, validates and repacks the model. Errors name the file and the tensor or key.
  // `n_ctx`: tokens per sequence the caller will run (0: the model's training context);
  // it chooses Phi-3's long or short RoPE factors, as llama.cpp's context size does.
  static Result<std::unique_ptr<Model>> Load(const std::string& path, int n_ctx = 0);

  const ModelConfig& config() const { return config_; }
  const gguf::GgufFile& file() const { return *file_; }
  kv::KvSpec KvSpec() const;
  // Bytes of weights one decode token reads (all matrices, the output projection included).
  size_t WeightBytesPerToken() const;
  size_t WeightTensorCount() const;

  // Runs the batch, whose KV slots are reserved (KvCache::BeginStep with StepChunks(batch)). `logits` becomes
  // [rows, n_vocab]: for each entry in order, one row per token from its first_logit() to its end.
  // InvalidArgument for a token id out of range (nothing changed; the caller gives the reservation back with
  // KvCache::CancelStep).
  Status Forward(ThreadPool& pool, kv::KvCache& kv, std::span<const BatchEntry> batch,
                 std::vector<float>* logits);

 private:
  Model() = default;
  Status LoadWeights(int n_ctx);
  void Layer(ThreadPool& pool, kv::KvCache& kv, int layer, int64_t rows);

  std::unique_ptr<gguf::GgufFile> file_;
  ModelConfig config_;
  Weights w_;
  std::vector<std::vector<float>> inv_freq_;  // per layer (bases differ per layer kind)
  std::vector<float> rope_mscale_;            // per layer: YaRN / attention factor on q and k

  // Workspace of the current step, grown as needed. [rows, width] each.
  struct Workspace {
    AlignedBuffer<float> x, xn, q, k, v, att, tmp, gate, up;
    std::vector<float> rope_cos, rope_sin;  // [distinct bases][rows][rope_dim/2]
    std::vector<int> layer_rope_table;      // layer -> index of its angle table
    std::vector<int64_t> pos;               // [rows]
    std::vector<kv::StepChunk> chunks;
  } ws_;
};

}  // namespace slimkv::model
