// Rotary-embedding frequencies of a layer under the context-extension schemes GGUF files
// carry, as llama.cpp computes them (ggml's rope_yarn, ggml_rope_yarn_corr_dims,
// llama_context's yarn_attn_factor):
//
//   none / linear   theta_i = freq_scale * base^(-2i/d) / f_i
//   yarn            theta_i = base^(-2i/d) / f_i * (freq_scale * (1 - r_i) + r_i), where r_i
//                   ramps from 1 (pairs below the "fast" correction dim, kept as trained) to
//                   0 (above the "slow" one, interpolated); cos and sin are scaled by
//                   attn_factor * (1 + 0.1 ln(1 / freq_scale))
//   longrope (Phi-3) linear with per-pair factors f_i (rope_factors_long/short, chosen by the
//                   context size), cos and sin scaled by attn_factor
//   llama3          a converter-computed rope_freqs tensor: per-pair factors f_i
//
// (d = rope_dim, i = 0 .. d/2 - 1, f_i = 1 without factors.) Scaling cos and sin scales the
// rotated channels of q and k: the model applies that factor to q and to k before the KV
// cache rotates them, so the cache needs only the frequencies.
#pragma once

#include <vector>

namespace slimkv::model {

enum class RopeScalingKind { kNone, kLinear, kYarn, kLongRope };

struct RopeScaling {
  RopeScalingKind kind = RopeScalingKind::kNone;
  float freq_scale = 1.0f;  // 1 / factor (linear, yarn)
  int orig_context = 0;     // context the model was trained with before extension (yarn)
  float ext_factor = 0.0f;  // yarn: 1 (llama.cpp's default when the type is yarn)
  float beta_fast = 32.0f;  // yarn correction dims
  float beta_slow = 1.0f;
  float attn_factor = 1.0f;  // {arch}.rope.scaling.attn_factor
};

// inv_freq[i] = theta_i above (per position: angle = pos * inv_freq[i]). `factors` may be
// empty (all 1) or hold rope_dim / 2 divisors.
std::vector<float> LayerInvFreq(int rope_dim, float base, const RopeScaling& s,
                                const std::vector<float>& factors);

// The factor applied to cos and sin (1 unless yarn or an attention factor).
float RopeMscale(const RopeScaling& s);

}  // namespace slimkv::model
