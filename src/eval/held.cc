#include "eval/held.h"

#include <fmt/format.h>

#include <algorithm>
#include <random>

#include "kv/footprint.h"

namespace slimkv::eval {

ModelShape ShareShape(const ModelShape& m, const model::KvShare& share) {
  if (!share.active()) return m;
  ModelShape s = m;
  s.n_layers = 0;
  s.layer_window.clear();
  for (int l = 0; l < m.n_layers; ++l) {
    if (!share.Owns(l)) continue;
    ++s.n_layers;
    if (!m.layer_window.empty()) s.layer_window.push_back(m.layer_window[l]);
  }
  s.name += fmt::format(" ({} layers share a cache)", share.shared());
  return s;
}

kv::KvSpec SpecOf(const ModelShape& m) {
  return kv::KvSpec{.n_layers = m.n_layers,
                    .n_kv_heads = m.n_kv_heads,
                    .n_q_heads = m.n_kv_heads,
                    .head_dim = m.head_dim,
                    .max_context = static_cast<int>(std::min<int64_t>(m.max_context, 1 << 30)),
                    .layer_window = m.layer_window};
}

Result<std::vector<HeldBytes>> MeasureHeldBytes(const kv::KvSpec& spec, const kv::KvConfig& config,
                                                const kv::PolicySpec& policy,
                                                const std::vector<int64_t>& contexts, int prefill_chunk,
                                                uint64_t max_bytes) {
  if (prefill_chunk < 1) return InvalidArgument("prefill chunk {} is not positive", prefill_chunk);
  const int width = spec.n_kv_heads * spec.head_dim;
  std::mt19937 rng(1);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> k(static_cast<size_t>(prefill_chunk) * width), v(k.size());
  for (auto& x : k) x = normal(rng);
  for (auto& x : v) x = normal(rng);
  std::vector<HeldBytes> out;
  for (const int64_t ctx : contexts) {
    if (ctx < 1 || ctx > (1 << 24)) return InvalidArgument("context {} is outside [1, 2^24] tokens", ctx);
    // As the engine sizes it: with a policy the prompt is held staged until it ends (footprint.h).
    const size_t budget =
        policy.active() ? std::max(kv::KvCache::BudgetFor(spec, config, ctx, 1, prefill_chunk),
                                   kv::PolicyPeakSequenceBytes(spec, config, policy, ctx, prefill_chunk))
                        : kv::KvCache::BudgetFor(spec, config, ctx, 1, prefill_chunk);
    if (budget > max_bytes) {
      return InvalidArgument(
          "a cache for {} tokens needs {} bytes, more than "
          "the {} this measurement may use",
          ctx, budget, max_bytes);
    }
    ASSIGN_OR_RETURN(auto cache, kv::KvCache::Create(spec, config, budget));
    if (policy.active()) RETURN_IF_ERROR(cache->SetPolicy(policy));
    const kv::SeqId seq = cache->AddSequence();
    auto step = [&](int n) -> Status {
      const kv::StepChunk chunk{.seq = seq, .n_tokens = n, .row = 0};
      RETURN_IF_ERROR(cache->BeginStep({&chunk, 1}));
      for (int l = 0; l < spec.n_layers; ++l) cache->Append(l, {&chunk, 1}, k.data(), width, v.data(), width);
      cache->EndStep({&chunk, 1});
      return Status::Ok();
    };
    for (int64_t done = 0; done < ctx - 1;) {
      const int n = static_cast<int>(std::min<int64_t>(prefill_chunk, ctx - 1 - done));
      RETURN_IF_ERROR(step(n));
      done += n;
    }
    if (policy.active()) cache->Compress(seq);
    RETURN_IF_ERROR(step(1));
    cache->CheckInvariants();
    HeldBytes h;
    h.context = ctx;
    h.usage = cache->SequenceUsage(seq);
    double slots = 0;  // a layer's usage counts the slots it holds (a window
                       // layer's freed ones not)
    for (int l = 0; l < spec.n_layers; ++l) slots += static_cast<double>(cache->LayerUsage(seq, l).tokens);
    h.slots = slots / spec.n_layers;
    out.push_back(h);
  }
  return out;
}

std::string HeldReport(const Plan& plan, const std::vector<std::vector<HeldBytes>>& held) {
  std::string s =
      "\nAs held in a real cache (bytes per token of context: "
      "data, metadata, fp16 residual window, "
      "allocated but empty), users in the KV memory above:\n";
  for (size_t c = 0; c < plan.options.contexts.size(); ++c) {
    s += fmt::format(
        "\n{} tokens:\n\n| KV format | data | meta | fp16 window "
        "| waste | total B/token | tokens held | "
        "users |\n|---|---:|---:|---:|---:|---:|---:|---:|\n",
        plan.options.contexts[c]);
    for (size_t r = 0; r < plan.rows.size(); ++r) {
      const HeldBytes& h = held[r][c];
      const double n = static_cast<double>(h.context);
      s += fmt::format("| {} | {:.1f} | {:.1f} | {:.1f} | {:.1f} | {:.1f} | {:.0f} | {} |\n",
                       plan.rows[r].format, h.usage.bytes_data / n, h.usage.bytes_meta / n,
                       h.usage.bytes_residual / n, h.usage.bytes_waste / n, h.usage.bytes_allocated / n,
                       h.slots, plan.options.kv_bytes / std::max<size_t>(1, h.usage.bytes_allocated));
    }
  }
  return s;
}

nlohmann::json HeldJson(const std::vector<HeldBytes>& held, uint64_t kv_bytes) {
  nlohmann::json a = nlohmann::json::array();
  for (const HeldBytes& h : held) {
    const double n = static_cast<double>(std::max<int64_t>(1, h.context));
    a.push_back({{"context", h.context},
                 {"per_token",
                  {{"data", h.usage.bytes_data / n},
                   {"meta", h.usage.bytes_meta / n},
                   {"residual", h.usage.bytes_residual / n},
                   {"waste", h.usage.bytes_waste / n},
                   {"total", h.usage.bytes_allocated / n}}},
                 {"slots", h.slots},
                 {"data", h.usage.bytes_data},
                 {"meta", h.usage.bytes_meta},
                 {"residual", h.usage.bytes_residual},
                 {"waste", h.usage.bytes_waste},
                 {"allocated", h.usage.bytes_allocated},
                 {"users", kv_bytes / std::max<size_t>(1, h.usage.bytes_allocated)}});
  }
  return a;
}

}  // namespace slimkv::eval
