// What the model tells the KV cache about itself.
#pragma once

#include <vector>

#include "ops/elementwise.h"

namespace slimkv::kv {

struct KvSpec {
  int n_layers = 0;
  int n_kv_heads = 0;  // KV heads per layer; MHA, GQA and MQA are all n_kv_heads <= n_q_heads
  int n_q_heads = 0;   // query heads per layer; a multiple of n_kv_heads
  int head_dim = 0;    // elements per head vector (K and V)
  int max_context = 0; // tokens the model was trained for (informative; the cache does not cap)
  // Sliding-window attention per layer: a token at slot s sees keys > s - window; 0 (or an
  // empty vector) means global attention. A window layer's blocks are freed once no future
  // token can see them, so it holds at most window + one step's tokens.
  std::vector<int> layer_window;

  int window(int layer) const { return layer_window.empty() ? 0 : layer_window[layer]; }

  // Rotary embedding of the keys, applied by the cache (Append takes keys before RoPE):
  // the first rope_dim channels, pairs in `rope_style` order, frequencies per layer
  // ([n_layers][rope_dim / 2]). rope_dim == 0: the model has no RoPE.
  int rope_dim = 0;
  ops::RopeStyle rope_style = ops::RopeStyle::kNormal;
  std::vector<std::vector<float>> layer_inv_freq;

  int group_size() const { return n_q_heads / n_kv_heads; }  // query heads per KV head
};

}  // namespace slimkv::kv
