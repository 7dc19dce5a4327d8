// Architecture configuration read from GGUF metadata.
//
// Families differ in a handful of choices, and each choice is a field here, filled by a
// small per-family function (config.cc); the forward pass reads the fields and never asks
// which family it runs.
#pragma once

#include <string>
#include <vector>

#include "base/status.h"
#include "gguf/gguf_file.h"
#include "model/rope_scaling.h"
#include "ops/elementwise.h"

namespace slimkv::model {

enum class Activation { kSilu, kGeluTanh };

struct ModelConfig {
  std::string arch;  // general.architecture
  std::string name;  // general.name
  int n_layers = 0;
  int n_embd = 0;
  int n_heads = 0;
  int n_kv_heads = 0;
  int head_dim = 0;
  int n_ff = 0;
  int n_vocab = 0;
  int context_length = 0;
  float rms_eps = 1e-5f;
  // Rotary embedding.
  ops::RopeStyle rope_style = ops::RopeStyle::kNormal;
  int rope_dim = 0;
  RopeScaling rope_scaling;                     // the file's (Gemma-3: of its global layers)
  std::vector<float> layer_rope_base;           // [n_layers]
  std::vector<RopeScaling> layer_rope_scaling;  // [n_layers]
  // Phi-3's LongRoPE: per-pair frequency divisors for contexts up to rope_scaling.orig_context
  // (short) and beyond (long), from the rope_factors_short/long tensors (model.cc).
  bool longrope_factors = false;
  // Attention.
  float attn_scale = 0;                // softmax scale (1/sqrt(head_dim) unless the file says)
  std::vector<int> layer_window;       // [n_layers]; 0 = global attention
  bool qkv_bias = false;               // Qwen2
  bool qk_norm = false;                // per-head RMSNorm of q and k (Gemma-3, Qwen3)
  bool post_norms = false;             // norms after attention and after the MLP (Gemma-3)
  // MLP and embeddings.
  Activation activation = Activation::kSilu;
  float embed_scale = 1.0f;            // sqrt(n_embd) for Gemma
  float final_logit_softcap = 0;       // 0 = none
  bool tied_output = false;            // output projection is token_embd

  int q_dim() const { return n_heads * head_dim; }
  int kv_dim() const { return n_kv_heads * head_dim; }
};

// Reads and validates the configuration; Unimplemented for an unknown architecture (naming
// it and the supported ones), DataLoss naming the key for missing or absurd values.
Result<ModelConfig> ReadConfig(const gguf::GgufFile& file);
std::string SupportedArchitectures();

}  // namespace slimkv::model
