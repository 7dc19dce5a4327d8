// Per-token vector operations of the forward pass: norms, rotary embedding, activations.
// They are O(width) per token (the matmuls are O(width^2)), so they are plain loops the
// compiler vectorises; each is written to be obviously right.
#pragma once

#include <cstdint>
#include <vector>

namespace slimkv::ops {

// out[i] = x[i] / sqrt(mean(x^2) + eps) * w[i]   (w may be nullptr: no scale)
void RmsNorm(const float* x, const float* w, int64_t n, float eps, float* out);

// x[i] += y[i]
void AddInPlace(float* x, const float* y, int64_t n);
// x[i] *= s
void ScaleInPlace(float* x, float s, int64_t n);

// gate[i] = silu(gate[i]) * up[i]           (SwiGLU)
void SiluMul(float* gate, const float* up, int64_t n);
// gate[i] = gelu_tanh(gate[i]) * up[i]      (GeGLU, tanh approximation)
void GeluTanhMul(float* gate, const float* up, int64_t n);

enum class RopeStyle {
  kNormal,  // rotate pairs (x[2i], x[2i+1])        (ggml "norm": llama, mistral)
  kNeox,    // rotate pairs (x[i], x[i + dim/2])    (ggml "neox": qwen2, gemma)
};

// cos/sin of pos * inv_freq[i] for the rope_dim/2 rotated pairs of one position.
void RopeAngles(int64_t pos, const std::vector<float>& inv_freq, float* cos, float* sin);

// Rotary embedding of one token: `n_heads` vectors of `head_dim`, whose first `rope_dim`
// channels are rotated pairwise by the angles of RopeAngles.
void RopeApply(float* x, int n_heads, int head_dim, int rope_dim, const float* cos,
               const float* sin, RopeStyle style);

// In-place softmax of n values; returns log(sum(exp(x - max))) + max (the log partition).
double Softmax(float* x, int64_t n);
// log(sum(exp(x))) of n values, stable.
double LogSumExp(const float* x, int64_t n);

}  // namespace slimkv::ops
