#include "kv/policy.h"

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>

namespace slimkv::kv {
namespace {

struct Named {
  std::string_view name;
  PolicyKind kind;
};
constexpr std::array<Named, 7> kPolicies = {{
    {"window", PolicyKind::kWindow},
    {"sinks", PolicyKind::kSinks},
    {"h2o", PolicyKind::kH2O},
    {"tova", PolicyKind::kTova},
    {"snapkv", PolicyKind::kSnapKv},
    {"knorm", PolicyKind::kKnorm},
    {"expected", PolicyKind::kExpected},
}};

template <typename T>
bool ParseNumber(std::string_view s, T* out) {
  if constexpr (std::is_floating_point_v<T>) {
    try {
      size_t used = 0;
      *out = static_cast<T>(std::stod(std::string(s), &used));
      return used == s.size() && std::isfinite(*out);
    } catch (...) {
      return false;
    }
  } else {
    const auto r = std::from_chars(s.data(), s.data() + s.size(), *out);
    return r.ec == std::errc() && r.ptr == s.data() + s.size();
  }
}

}  // namespace

std::string PolicyList() {
  std::string s;
  for (const auto& n : kPolicies) s += std::string(s.empty() ? "" : ", ") + std::string(n.name);
  return s + ", adakv:BASE (options :merge :pyramid :recall :fetch=N :host=N :sinks=N :heavy=F :recent=N :obs=N :pool=N)";
}

std::string PolicyName(const PolicySpec& p) {
  std::string s;
  for (const auto& n : kPolicies)
    if (n.kind == p.kind) s = std::string(n.name);
  if (p.kind == PolicyKind::kNone) return "none";
  if (p.head_adaptive) s = "adakv:" + s;
  if (p.kind == PolicyKind::kSinks) s += ":sinks=" + std::to_string(p.sinks);
  if (p.pyramid) s += ":pyramid";
  if (p.merge) s += ":merge";
  if (p.recall) s += ":recall";
  if (p.recall && p.fetch != PolicySpec{}.fetch) s += ":fetch=" + std::to_string(p.fetch);
  if (p.recall && p.host > 0) s += ":host=" + std::to_string(p.host);
  return s;
}

int PolicySpec::LayerBudget(int layer, int n_layers) const {
  if (!pyramid || n_layers <= 1) return budget;
  // Linear from 1.5x at the first layer to 0.5x at the last: the same total.
  const double f = 1.5 - static_cast<double>(layer) / (n_layers - 1);
  return std::max(1, static_cast<int>(std::lround(budget * f)));
}

Result<PolicySpec> ParsePolicy(std::string_view spec, int budget) {
  PolicySpec p;
  if (spec.empty() || spec == "none") return p;
  std::vector<std::string_view> parts;
  size_t start = 0;
  for (size_t i = 0; i <= spec.size(); ++i) {
    if (i == spec.size() || spec[i] == ':') {
      parts.push_back(spec.substr(start, i - start));
      start = i + 1;
    }
  }
  size_t i = 0;
  if (parts[0] == "adakv") {
    p.head_adaptive = true;
    if (parts.size() < 2)
      return InvalidArgument("policy '{}': adakv needs a scoring policy, e.g. adakv:snapkv", spec);
    i = 1;
  }
  bool known = false;
  for (const auto& n : kPolicies) {
    if (n.name == parts[i]) {
      p.kind = n.kind;
      known = true;
    }
  }
  if (!known) return InvalidArgument("unknown KV policy '{}'; valid policies: {}", parts[i], PolicyList());
  if (p.head_adaptive && (p.kind == PolicyKind::kWindow || p.kind == PolicyKind::kSinks)) {
    return InvalidArgument("policy '{}': adakv needs a scoring policy (h2o, tova, snapkv, knorm, expected)",
                           spec);
  }
  bool recall_option = false;  // fetch= or host= given
  for (++i; i < parts.size(); ++i) {
    const std::string_view o = parts[i];
    const size_t eq = o.find('=');
    const std::string_view key = o.substr(0, eq), val = eq == std::string_view::npos ? "" : o.substr(eq + 1);
    bool ok = true;
    if (o == "merge") {
      p.merge = true;
    } else if (o == "pyramid") {
      p.pyramid = true;
    } else if (o == "recall") {
      p.recall = true;
    } else if (key == "fetch") {
      ok = ParseNumber(val, &p.fetch) && p.fetch > 0;
      recall_option = true;
    } else if (key == "host") {
      ok = ParseNumber(val, &p.host) && p.host > 0;
      recall_option = true;
    } else if (key == "sinks") {
      ok = ParseNumber(val, &p.sinks) && p.sinks >= 0;
    } else if (key == "heavy") {
      ok = ParseNumber(val, &p.heavy_share) && p.heavy_share >= 0 && p.heavy_share <= 1;
    } else if (key == "recent") {
      ok = ParseNumber(val, &p.recent) && p.recent >= 0;
    } else if (key == "obs") {
      ok = ParseNumber(val, &p.obs_window) && p.obs_window > 0;
    } else if (key == "pool") {
      ok = ParseNumber(val, &p.pool_kernel) && p.pool_kernel > 0 && p.pool_kernel % 2 == 1;
    } else {
      return InvalidArgument("unknown option '{}' in KV policy '{}'; valid: {}", o, spec, PolicyList());
    }
    if (!ok) return InvalidArgument("bad value in option '{}' of KV policy '{}'", o, spec);
  }
  if (budget <= 0)
    return InvalidArgument("KV policy {} needs --kv-budget > 0 tokens, got {}", PolicyName(p), budget);
  p.budget = budget;
  if (p.kind == PolicyKind::kSinks && budget <= p.sinks) {
    return InvalidArgument(
        "--kv-budget {} leaves no window after the {} sink tokens (sinks + window = budget)", budget,
        p.sinks);
  }
  if ((p.kind == PolicyKind::kKnorm || p.kind == PolicyKind::kExpected || p.kind == PolicyKind::kSnapKv) &&
      p.recent >= budget) {
    return InvalidArgument("--kv-budget {} is not larger than the {} recent tokens policy {} always keeps",
                           budget, p.recent, PolicyName(p));
  }
  if (p.recall && p.reindexes())
    return InvalidArgument("policy '{}': recall needs a policy that keeps original positions (not window or sinks)",
                           spec);
  if (recall_option && !p.recall)
    return InvalidArgument("policy '{}': fetch= and host= are options of :recall", spec);
  if (p.recall && p.merge)
    return InvalidArgument("policy '{}': recall and merge exclude each other (a merged value was already folded in)",
                           spec);
  if (p.pyramid && budget < 2) return InvalidArgument("pyramid budgets need --kv-budget of at least 2");
  return p;
}

}  // namespace slimkv::kv
