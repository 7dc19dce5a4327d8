// slimkv info: architecture, sizes, tensor types and KV bytes per token of a model file.
#include <algorithm>
#include <cstdio>
#include <map>
#include <memory>

#include "cli/commands.h"
#include "cli/common.h"
#include "gguf/gguf_file.h"
#include "kv/footprint.h"
#include "kv/kv_cache.h"
#include "model/config.h"
#include "model/repack.h"

namespace slimkv::cli {
namespace {

struct InfoFlags {
  std::string model;
  bool metadata = false;
};

int InfoMain(const InfoFlags& f) {
  auto path = ResolveModel(f.model);
  if (!path.ok()) return Fail(path.status());
  auto file = gguf::GgufFile::Open(*path);
  if (!file.ok()) return Fail(file.status());
  auto cfg = model::ReadConfig(*file);
  if (!cfg.ok()) return Fail(cfg.status());
  const model::ModelConfig& c = *cfg;
  std::printf("file:          %s (GGUF v%u, %zu tensors, %zu metadata keys)\n", path->c_str(),
              file->version(), file->tensors().size(), file->metadata().size());
  std::printf("model:         %s\n", c.name.c_str());
  std::printf("architecture:  %s, %d layers, embedding %d, feed-forward %d, vocab %d\n", c.arch.c_str(),
              c.n_layers, c.n_embd, c.n_ff, c.n_vocab);
  std::printf("attention:     %d query heads, %d KV heads (%s), head dim %d, context %d\n", c.n_heads,
              c.n_kv_heads, c.n_kv_heads == c.n_heads ? "MHA" : (c.n_kv_heads == 1 ? "MQA" : "GQA"),
              c.head_dim, c.context_length);
  std::string scaling;
  const model::RopeScaling& rs = c.rope_scaling;
  switch (rs.kind) {
    case model::RopeScalingKind::kNone:
      break;
    case model::RopeScalingKind::kLinear:
      scaling = fmt::format(", linear x{}", 1 / rs.freq_scale);
      break;
    case model::RopeScalingKind::kYarn:
      scaling = fmt::format(", yarn x{} from {} tokens", 1 / rs.freq_scale, rs.orig_context);
      break;
    case model::RopeScalingKind::kLongRope:
      scaling = ", longrope";
      break;
  }
  if (c.longrope_factors) scaling += fmt::format(", long factors beyond {} tokens", rs.orig_context);
  if (file->FindTensor("rope_freqs.weight")) scaling += ", per-pair factors (rope_freqs: Llama-3 scaling)";
  if (rs.attn_factor != 1.0f) scaling += fmt::format(", attention factor {}", rs.attn_factor);
  std::printf(
      "rope:          %s, dim %d, base %g%s\n", c.rope_style == ops::RopeStyle::kNormal ? "normal" : "neox",
      c.rope_dim,
      c.layer_rope_base.empty() ? 0.0 : *std::max_element(c.layer_rope_base.begin(), c.layer_rope_base.end()),
      scaling.c_str());
  // Per tensor type: what the file holds and what the engine will hold after repacking (a
  // matrix keeps the file's blocks; a vector is dequantized to fp32).
  struct TypeBytes {
    int tensors = 0;
    uint64_t elements = 0, file = 0, loaded = 0;
  };
  std::map<std::string, TypeBytes> types;
  uint64_t total = 0, params = 0, loaded = 0;
  Status unusable = Status::Ok();
  for (const auto& t : file->tensors()) {
    TypeBytes& e = types[std::string(gguf::TypeName(t.type))];
    ++e.tensors;
    e.elements += t.n_elements;
    e.file += t.n_bytes;
    total += t.n_bytes;
    params += t.n_elements;
    uint64_t bytes = t.n_elements * 4;  // a vector: fp32
    if (t.dims.size() == 2) {
      auto plan = model::PlanRepack(t);
      if (!plan.ok() && unusable.ok()) unusable = plan.status();
      bytes = plan.ok() ? plan->bytes : 0;
    } else if (const auto traits = gguf::GetTypeTraits(t.type); !traits || !traits->can_dequantize) {
      if (unusable.ok()) {
        unusable = Unimplemented("tensor '{}' has type {}, which slimkv cannot dequantize; supported: {}",
                                 t.name, gguf::TypeName(t.type), model::SupportedMatrixTypes());
      }
    }
    e.loaded += bytes;
    loaded += bytes;
  }
  std::printf("parameters:    %.1f M, %s of tensor data (%s once loaded)\n", params / 1e6,
              HumanBytes(total).c_str(), HumanBytes(loaded).c_str());
  std::printf("  %-7s %7s %12s %10s %10s\n", "type", "tensors", "file", "bits/w", "loaded b/w");
  for (const auto& [name, e] : types) {
    std::printf("  %-7s %7d %12s %10.3f %10.3f\n", name.c_str(), e.tensors, HumanBytes(e.file).c_str(),
                8.0 * e.file / e.elements, 8.0 * e.loaded / e.elements);
  }
  int n_window = 0, window = 0;
  for (int w : c.layer_window) {
    if (w > 0) {
      ++n_window;
      window = w;
    }
  }
  const int n_global = c.n_layers - n_window;
  if (n_window > 0) {
    std::printf("layers:        %d global, %d sliding-window (window %d tokens)\n", n_global, n_window, window);
  }
  std::printf("KV bytes per token (K+V, all heads; data + metadata, as stored once quantized):\n");
  std::printf("  %-7s %10s %10s %12s  %s\n", "preset", "data", "metadata", "total",
              n_window ? "one sequence at full context, window-aware (without windows)"
                       : "one sequence at full context");
  const kv::KvSpec spec{.n_layers = c.n_layers,
                        .n_kv_heads = c.n_kv_heads,
                        .n_q_heads = c.n_heads,
                        .head_dim = c.head_dim,
                        .layer_window = c.layer_window};
  kv::KvSpec no_windows = spec;
  no_windows.layer_window.clear();
  for (const std::string& preset : kv::PresetNames()) {
    auto kc = kv::ParsePreset(preset);
    if (!kc.ok() || !kv::CheckFormat(kc->k, c.head_dim, true).ok() || !kv::CheckFormat(kc->v, c.head_dim, false).ok()) {
      continue;
    }
    const double data = kv::DataBytesPerToken(spec, *kc), meta = kv::MetaBytesPerToken(spec, *kc);
    // What the cache holds (kv/footprint.h): whole blocks, the residual window in staging
    // blocks, and on a window layer only the blocks a future token can see.
    std::string full = HumanBytes(kv::SequenceFootprint(spec, *kc, c.context_length).bytes_allocated);
    if (n_window)
      full +=
          " (" + HumanBytes(kv::SequenceFootprint(no_windows, *kc, c.context_length).bytes_allocated) + ")";
    std::printf("  %-7s %10.1f %10.1f %12.1f  %s\n", preset.c_str(), data, meta, data + meta, full.c_str());
  }
  if (n_window) {
    std::printf("  (a window layer holds at most %d tokens: per sequence, global layers cost %d/%d of the bytes "
                "above per token, window layers a fixed %d tokens' worth)\n",
                window, n_global, c.n_layers, window);
  }
  if (f.metadata) {
    std::printf("metadata:\n");
    for (const auto& [k, v] : file->metadata()) std::printf("  %s = %s\n", k.c_str(), v.ToString().c_str());
  }
  if (!unusable.ok())
    return Fail(Status(unusable.code(), fmt::format("{}: {}", file->name(), unusable.message())));
  return 0;
}

}  // namespace

CommandMain AddInfoCommand(CLI::App& app) {
  auto f = std::make_shared<InfoFlags>();
  CLI::App* cmd = app.add_subcommand("info", "describe a model file");
  cmd->add_option("model", f->model, "GGUF path or short name (default smollm2-135m)");
  cmd->add_flag("--metadata", f->metadata, "also print every metadata key");
  return [f] { return InfoMain(*f); };
}

}  // namespace slimkv::cli
