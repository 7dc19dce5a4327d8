#include "model/kv_share.h"

#include <fmt/format.h>

#include <charconv>

namespace slimkv::model {

int KvShare::shared() const {
  int n = 0;
  for (size_t l = 0; l < source.size(); ++l) n += source[l] != static_cast<int>(l);
  return n;
}

std::vector<int> KvShare::CacheLayers(int n_layers) const {
  std::vector<int> cache(n_layers);
  int owners = 0;
  for (int l = 0; l < n_layers; ++l) cache[l] = Owns(l) ? owners++ : -1;
  for (int l = 0; l < n_layers; ++l)
    if (!Owns(l)) cache[l] = cache[source[l]];
  return cache;
}

bool KvShareCompatible(const ModelConfig &c, int a, int b) {
  return c.layer_window[a] == c.layer_window[b] && c.layer_rope_base[a] == c.layer_rope_base[b] &&
         c.layer_rope_scaling[a] == c.layer_rope_scaling[b];
}

Status CheckKvShare(const KvShare &s, const ModelConfig &c) {
  if (s.source.empty()) return Status::Ok();
  if (static_cast<int>(s.source.size()) != c.n_layers) {
    return InvalidArgument("KV sharing map of {} layers for a model of {}", s.source.size(), c.n_layers);
  }
  for (int l = 0; l < c.n_layers; ++l) {
    const int src = s.source[l];
    if (src == l) continue;
    if (src < 0 || src > l) {
      return InvalidArgument(
          "KV sharing: layer {} cannot use layer {}'s cache "
          "(only an earlier layer's)",
          l, src);
    }
    if (s.source[src] != src) {
      return InvalidArgument(
          "KV sharing: layer {} uses layer {}, which itself "
          "uses layer {} (name the owner)",
          l, src, s.source[src]);
    }
    if (!KvShareCompatible(c, l, src)) {
      return InvalidArgument(
          "KV sharing: layers {} and {} differ in sliding "
          "window or RoPE frequencies (windows {} and {})",
          l, src, c.layer_window[l], c.layer_window[src]);
    }
  }
  return Status::Ok();
}

Result<KvShare> ParseKvShareMap(std::string_view spec, const ModelConfig &c) {
  KvShare s;
  s.source.resize(c.n_layers);
  for (int l = 0; l < c.n_layers; ++l) s.source[l] = l;
  while (!spec.empty()) {
    const size_t comma = spec.find(',');
    const std::string_view pair = spec.substr(0, comma);
    spec = comma == std::string_view::npos ? std::string_view() : spec.substr(comma + 1);
    const size_t eq = pair.find('=');
    int layer = -1, src = -1;
    const auto parse = [](std::string_view t, int *v) {
      const auto [end, ec] = std::from_chars(t.data(), t.data() + t.size(), *v);
      return ec == std::errc() && end == t.data() + t.size() && !t.empty();
    };
    if (eq == std::string_view::npos || !parse(pair.substr(0, eq), &layer) ||
        !parse(pair.substr(eq + 1), &src)) {
      return InvalidArgument("KV sharing: '{}' is not LAYER=SOURCE (e.g. 20=14)", pair);
    }
    if (layer < 0 || layer >= c.n_layers || src < 0 || src >= c.n_layers) {
      return InvalidArgument("KV sharing: '{}' names a layer outside 0..{}", pair, c.n_layers - 1);
    }
    if (s.source[layer] != layer) return InvalidArgument("KV sharing: layer {} is named twice", layer);
    s.source[layer] = src;
  }
  RETURN_IF_ERROR(CheckKvShare(s, c));
  return s;
}

std::string KvShareMapString(const KvShare &s) {
  std::string out;
  for (size_t l = 0; l < s.source.size(); ++l) {
    if (s.source[l] == static_cast<int>(l)) continue;
    out += fmt::format("{}{}={}", out.empty() ? "" : ",", l, s.source[l]);
  }
  return out;
}

}  // namespace slimkv::model
