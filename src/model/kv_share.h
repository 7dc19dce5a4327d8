// Cross-layer KV sharing, as KVSharer does it (Yang et al. 2024, "KVSharer:
// Efficient Inference via Layer-Wise Dissimilar KV Cache Sharing"): some layers
// keep no KV cache of their own and attend, with their own queries, over the
// cache of an earlier layer. Their K/V projections are not computed and the
// cache holds fewer layers, so the memory is really freed (the KV cache is
// created with the owners' layers only) and works under every KV format and
// eviction policy unchanged.
//
// source[l] is the layer whose cache layer l attends; source[l] == l for a
// layer with its own cache. Rules: source[l] <= l (the source has appended the
// step's tokens before l attends), a source owns its cache (no chains), and
// both layers have the same sliding window and RoPE frequencies (the cache
// stores keys after RoPE with the owner's frequencies).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "model/config.h"

namespace slimkv::model {

struct KvShare {
  std::vector<int> source;  // [n_layers]; empty: no sharing

  bool active() const { return shared() > 0; }
  int shared() const;  // layers without a cache of their own
  // The cache layer of model layer l: the index of its source among the owners.
  std::vector<int> CacheLayers(int n_layers) const;
  bool Owns(int layer) const { return source.empty() || source[layer] == layer; }
};

// "20=14,22=8" (layer=source, 0-based): InvalidArgument naming the pair that
// breaks a rule.
Result<KvShare> ParseKvShareMap(std::string_view spec, const ModelConfig &c);
// The map in that syntax, "" when nothing is shared.
std::string KvShareMapString(const KvShare &s);
// The rules above; InvalidArgument naming the layer.
Status CheckKvShare(const KvShare &s, const ModelConfig &c);
// Whether layer `a` may use layer `b`'s cache: same window, RoPE base and
// scale.
bool KvShareCompatible(const ModelConfig &c, int a, int b);

}  // namespace slimkv::model
