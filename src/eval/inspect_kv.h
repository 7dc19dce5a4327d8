// The analysis behind the KV defaults: statistics of the keys and values a real model puts
// in its cache, and what each quantization granularity loses on them.
//
// For every layer (all KV heads pooled):
//   channel outliers: max over channels of mean|x| / median over channels of mean|x|
//                     (keys have a few channels that are large for every token)
//   token spread:     max over tokens of |x|_2 / median over tokens of |x|_2
//   channel share:    share of the energy sum x^2 carried by the per-channel means
//                     (how much a per-channel offset explains)
//   relative error:   sum (x - x^)^2 / sum x^2 after quantizing with int4 / int2, per token
//                     (one scale and zero per token vector), per token in groups of 32
//                     channels, and per channel (one scale and zero per channel over each block
//                     of `block_tokens` tokens: with blocks of 32, the same metadata per element
//                     as groups of 32), for K and V.
#pragma once

#include <string>
#include <vector>

#include "base/status.h"
#include "engine/engine.h"

namespace slimkv::eval {

struct SideStats {
  double channel_outlier = 0;
  double token_spread = 0;
  double channel_share = 0;
  // Relative squared error by [bits: 0 = int4, 1 = int2][granularity: 0 = token, 1 = channel,
  // 2 = token in groups of 32].
  double rel_error[2][3] = {{0, 0, 0}, {0, 0, 0}};
};

struct LayerStats {
  int layer = 0;
  int window = 0;  // sliding window of the layer (0: global)
  SideStats k, v;
};

struct InspectResult {
  int tokens = 0;
  std::vector<LayerStats> layers;
};

// Runs `tokens` through a fresh sequence of `engine` (whose KV format should be fp32, so the
// stored values are exact) and analyses every layer's cache.
Result<InspectResult> InspectKv(engine::Engine& engine, const std::vector<int32_t>& tokens, int block_tokens);

// The table (markdown) and the conclusion in words.
std::string FormatInspectTable(const InspectResult& r);
// A chart of the int4 relative error per layer for each side and granularity (log scale).
Status WriteInspectChart(const InspectResult& r, const std::string& model_name, const std::string& path);

}  // namespace slimkv::eval
