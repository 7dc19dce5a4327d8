#include "eval/capacity.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>

#include "kv/footprint.h"
#include "model/config.h"

namespace slimkv::eval {
namespace {

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;
constexpr int64_t kMaxContext = int64_t{1} << 30;  // tokens; keeps every byte count far from overflow

// Model presets. Every number is from the model's published config.json on Hugging Face
// (num_hidden_layers, num_key_value_heads, head_dim or hidden_size / num_attention_heads,
// max_position_embeddings, sliding_window); Gemma-3's 5 local : 1 global layer pattern is
// from its technical report (arXiv:2503.19786, section 2.1) and the configs'
// sliding_window_pattern = 6. Parameters are counted from the configs' shapes (embeddings,
// an untied output matrix where the config says so, q/k/v/o, the gated MLP, norms, Qwen2's
// q/k/v biases, Gemma-3's extra norms) and match the published totals: 8.03 B, 70.6 B,
// 7.61 B, 7.25 B. Gemma-3 4B/12B/27B count the language model only (their SigLIP vision
// encoder adds about 0.4 B). tests/eval/capacity_test.cc recomputes every count.
struct ModelPreset {
  std::string_view key;   // what users type (compared without case, '-', '_' and '.')
  std::string_view name;
  int n_layers, n_kv_heads, head_dim;
  int64_t max_context;
  int64_t params;
  int window;        // sliding-window tokens; 0: every layer global
  int global_every;  // with a window: layer l is global when (l + 1) % global_every == 0; 0: none is
  std::string_view source;
};
constexpr std::array<ModelPreset, 9> kModels = {{
    {"llama-3.1-8b", "Llama-3.1-8B", 32, 8, 128, 131072, 8030261248, 0, 0,
     "meta-llama/Llama-3.1-8B config.json"},
    {"llama-3.1-70b", "Llama-3.1-70B", 80, 8, 128, 131072, 70553706496, 0, 0,
     "meta-llama/Llama-3.1-70B config.json"},
    // max_position_embeddings 131072 in the base model's config; the model card: 32768
    // natively, 131072 with YaRN.
    {"qwen2.5-7b", "Qwen2.5-7B", 28, 4, 128, 131072, 7615616512, 0, 0, "Qwen/Qwen2.5-7B config.json"},
    {"mistral-7b", "Mistral-7B-v0.3", 32, 8, 128, 32768, 7248023552, 0, 0,
     "mistralai/Mistral-7B-v0.3 config.json (sliding_window null)"},
    {"mistral-7b-v0.1", "Mistral-7B-v0.1", 32, 8, 128, 32768, 7241732096, 4096, 0,
     "mistralai/Mistral-7B-v0.1 config.json (sliding_window 4096 on every layer; arXiv:2310.06825)"},
    {"gemma-3-1b", "Gemma-3-1B", 26, 1, 256, 32768, 999885952, 512, 6,
     "google/gemma-3-1b-pt config.json; arXiv:2503.19786"},
    {"gemma-3-4b", "Gemma-3-4B", 34, 4, 256, 131072, 3880263168, 1024, 6,
     "google/gemma-3-4b-pt config.json (text_config); arXiv:2503.19786"},
    {"gemma-3-12b", "Gemma-3-12B", 48, 8, 256, 131072, 11766034176, 1024, 6,
     "google/gemma-3-12b-pt config.json (text_config); arXiv:2503.19786"},
    {"gemma-3-27b", "Gemma-3-27B", 62, 16, 128, 131072, 27009346304, 1024, 6,
     "google/gemma-3-27b-pt config.json (text_config); arXiv:2503.19786"},
}};

// Memory totals as nvidia-smi reports them (MiB): the A100, H100 and L4 figures as listed in
// modal-labs/modal-client pull request #2797, the H200's from public nvidia-smi logs. The
// marketing "80 GB" of an H100 is 79.6 GiB here, the H200's "141 GB" 140.4 GiB.
struct GpuPreset {
  std::string_view key, alias, name;
  uint64_t mib;
};
constexpr std::array<GpuPreset, 4> kGpus = {{
    {"a100-80gb", "a100", "A100-80GB", 81920},
    {"h100-80gb", "h100", "H100-80GB", 81559},
    {"h200-141gb", "h200", "H200-141GB", 143771},
    {"l4-24gb", "l4", "L4-24GB", 23034},
}};

std::string Normalize(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (c == '-' || c == '_' || c == '.' || c == ' ') continue;
    out += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  return out;
}

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string GiB(double bytes) { return fmt::format("{:.2f} GiB", bytes / kGiB); }

std::string Params(int64_t p) {
  return p >= 1'000'000'000 ? fmt::format("{:.2f} B", p / 1e9) : fmt::format("{:.1f} M", p / 1e6);
}

// Bytes per token: whole numbers as they are, others with one decimal.
std::string Bytes(double b) { return b == std::round(b) ? fmt::format("{:.0f}", b) : fmt::format("{:.1f}", b); }

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace

int ModelShape::n_window_layers() const {
  int n = 0;
  for (int l = 0; l < n_layers; ++l) n += window(l) > 0;
  return n;
}

Status ModelShape::Check() const {
  if (n_layers <= 0 || n_kv_heads <= 0 || head_dim <= 0 || max_context <= 0 || params <= 0) {
    return InvalidArgument("model '{}': layers {}, KV heads {}, head dim {}, max context {}, parameters {} must "
                           "all be positive", name, n_layers, n_kv_heads, head_dim, max_context, params);
  }
  if (head_dim % 16 != 0) {
    return InvalidArgument("model '{}': head dim {} is not a multiple of 16, which every KV format needs", name,
                           head_dim);
  }
  if (!layer_window.empty() && static_cast<int>(layer_window.size()) != n_layers) {
    return InvalidArgument("model '{}': {} layer windows for {} layers", name, layer_window.size(), n_layers);
  }
  for (int w : layer_window)
    if (w < 0) return InvalidArgument("model '{}': negative sliding window {}", name, w);
  return Status::Ok();
}

Result<ModelShape> FindModelPreset(std::string_view name) {
  for (const auto& p : kModels) {
    if (Normalize(p.key) != Normalize(name)) continue;
    ModelShape m{.name = std::string(p.name),
                 .n_layers = p.n_layers,
                 .n_kv_heads = p.n_kv_heads,
                 .head_dim = p.head_dim,
                 .max_context = p.max_context,
                 .params = p.params,
                 .source = std::string(p.source)};
    if (p.window > 0) {
      m.layer_window.assign(p.n_layers, p.window);
      if (p.global_every > 0)
        for (int l = 0; l < p.n_layers; ++l)
          if ((l + 1) % p.global_every == 0) m.layer_window[l] = 0;
    }
    return m;
  }
  return InvalidArgument("unknown model '{}'; presets: {}", name, ModelPresetList());
}

std::string ModelPresetList() {
  std::string s;
  for (const auto& p : kModels) s += (s.empty() ? "" : ", ") + std::string(p.key);
  return s;
}

Result<ModelShape> ModelShapeFromGguf(const gguf::GgufFile& file) {
  ASSIGN_OR_RETURN(const model::ModelConfig c, model::ReadConfig(file));
  ModelShape m{.name = c.name.empty() ? c.arch : c.name,
               .n_layers = c.n_layers,
               .n_kv_heads = c.n_kv_heads,
               .head_dim = c.head_dim,
               .max_context = c.context_length,
               .layer_window = c.layer_window,
               .source = fmt::format("GGUF {}", file.name())};
  for (const auto& t : file.tensors()) {
    m.params += static_cast<int64_t>(t.n_elements);
    m.file_weight_bytes += t.n_bytes;
  }
  RETURN_IF_ERROR(m.Check());
  return m;
}

Result<Gpu> ParseGpu(std::string_view spec) {
  const std::string s = Lower(spec);
  for (const auto& g : kGpus) {
    if (s == g.key || s == g.alias) return Gpu{std::string(g.name), g.mib * 1024 * 1024};
  }
  double gib = 0;
  std::string_view num = spec;
  if (num.ends_with("GiB") || num.ends_with("gib")) num.remove_suffix(3);
  const auto [end, ec] = std::from_chars(num.data(), num.data() + num.size(), gib);
  if (ec == std::errc() && end == num.data() + num.size() && !num.empty()) {
    if (!(gib > 0 && gib <= (1 << 20))) {
      return InvalidArgument("GPU memory must be a positive number of GiB (at most 2^20), got '{}'", spec);
    }
    return Gpu{fmt::format("{:g} GiB", gib), static_cast<uint64_t>(std::llround(gib * kGiB))};
  }
  return InvalidArgument("unknown GPU '{}'; valid: {}, or a number of GiB", spec, GpuList());
}

std::string GpuList() {
  std::string s;
  for (const auto& g : kGpus) s += (s.empty() ? "" : ", ") + std::string(g.key);
  return s;
}

namespace {
kv::KvSpec SpecOf(const ModelShape& m) {
  return kv::KvSpec{.n_layers = m.n_layers,
                    .n_kv_heads = m.n_kv_heads,
                    .n_q_heads = m.n_kv_heads,
                    .head_dim = m.head_dim,
                    .layer_window = m.layer_window};
}
}  // namespace

TokenBytes BytesPerToken(const ModelShape& m, const kv::KvConfig& c) {
  const double streams = static_cast<double>(m.n_layers) * m.n_kv_heads;
  TokenBytes b;
  b.data = kv::DataBytesPerToken(SpecOf(m), c);
  b.meta = kv::MetaBytesPerToken(SpecOf(m), c);
  b.stored = streams * static_cast<double>(kv::SealedBlockBytes(c, m.head_dim)) / c.block_tokens;
  b.staged = streams * static_cast<double>(kv::StagedBlockBytes(c, m.head_dim)) / c.block_tokens;
  return b;
}

uint64_t SequenceBytes(const ModelShape& m, const kv::KvConfig& c, int64_t context, Counting counting) {
  if (counting == Counting::kStored) return kv::SequenceFootprint(SpecOf(m), c, context).bytes_allocated;
  const int64_t bt = c.block_tokens;
  const int hd = m.head_dim;
  const kv::PartLayout k = kv::KLayout(c.k, c.block_tokens, hd), v = kv::VLayout(c.v, c.block_tokens, hd);
  uint64_t stream_bytes = 0;  // summed over layers, for one KV head
  for (int l = 0; l < m.n_layers; ++l) {
    const int64_t held = m.window(l) > 0 ? std::min<int64_t>(context, m.window(l)) : context;
    // data_bytes = bt x head_dim x bits / 8, so this division is exact.
    stream_bytes += static_cast<uint64_t>(held) * (k.data_bytes + v.data_bytes) / bt;
  }
  return stream_bytes * m.n_kv_heads;
}

uint64_t ResidualBytes(const ModelShape& m, const kv::KvConfig& c) {
  if (!c.needs_staging() || c.residual <= 0) return 0;
  const int bt = c.block_tokens, hd = m.head_dim;
  const uint64_t sealed = kv::KLayout(c.k, bt, hd).total() + kv::VLayout(c.v, bt, hd).total();
  const uint64_t staged = kv::KLayout(c.StagingK(), bt, hd).total() + kv::VLayout(c.StagingV(), bt, hd).total();
  if (staged <= sealed) return 0;
  uint64_t blocks = 0;
  for (int l = 0; l < m.n_layers; ++l) {
    const int64_t tokens = m.window(l) > 0 ? std::min(c.residual, m.window(l)) : c.residual;
    blocks += static_cast<uint64_t>(CeilDiv(tokens, bt));
  }
  return blocks * (staged - sealed) * m.n_kv_heads;
}

Result<Plan> MakePlan(const ModelShape& m, const PlanOptions& o) {
  RETURN_IF_ERROR(m.Check());
  if (o.formats.empty()) return InvalidArgument("no KV format to plan for; presets: {}", kv::PresetList());
  if (o.contexts.empty()) return InvalidArgument("no context to plan for");
  for (int64_t ctx : o.contexts) {
    if (ctx <= 0 || ctx > kMaxContext) {
      return InvalidArgument("context {} is outside [1, {}] tokens", ctx, kMaxContext);
    }
  }
  if (o.block_tokens != 0 && (o.block_tokens < 16 || o.block_tokens > 4096 || o.block_tokens % 16 != 0)) {
    return InvalidArgument("block size {} tokens is not a multiple of 16 in [16, 4096]", o.block_tokens);
  }
  if (o.kv_bytes == 0) return InvalidArgument("no memory for the KV cache");
  Plan plan{.model = m, .options = o};
  for (const std::string& name : o.formats) {
    ASSIGN_OR_RETURN(kv::KvConfig c, kv::ParsePreset(name));
    if (o.block_tokens != 0) c.block_tokens = o.block_tokens;  // 0: the preset's
    for (const bool is_key : {true, false}) {
      const Status st = kv::CheckFormat(is_key ? c.k : c.v, m.head_dim, is_key);
      if (!st.ok()) return InvalidArgument("KV preset '{}' on {}: {}", name, m.name, st.message());
    }
    PlanRow row{.format = name, .config = c, .bytes = BytesPerToken(m, c), .residual_bytes = ResidualBytes(m, c)};
    for (int64_t ctx : o.contexts) {
      const uint64_t seq = SequenceBytes(m, c, ctx, o.counting);
      row.sequence_bytes.push_back(seq);
      row.users.push_back(static_cast<int64_t>(o.kv_bytes / seq));
    }
    plan.rows.push_back(std::move(row));
  }
  return plan;
}

uint64_t WeightBytes(int64_t params, double bits) {
  return static_cast<uint64_t>(std::llround(static_cast<long double>(params) * bits / 8));
}

MemoryBudget BudgetOnGpu(const Gpu& gpu, uint64_t weight_bytes, double weight_bits, double reserve_fraction) {
  MemoryBudget b{.gpu = gpu, .weight_bits = weight_bits, .weight_bytes = weight_bytes,
                 .reserve_fraction = reserve_fraction};
  if (reserve_fraction >= 0 && reserve_fraction < 1) {
    b.reserve_bytes = static_cast<uint64_t>(std::llround(static_cast<double>(gpu.bytes) * reserve_fraction));
  }
  if (weight_bytes < gpu.bytes && b.reserve_bytes < gpu.bytes - weight_bytes) {
    b.kv_bytes = gpu.bytes - weight_bytes - b.reserve_bytes;
  }
  return b;
}

Status CheckBudget(const MemoryBudget& b) {
  if (!(b.reserve_fraction >= 0 && b.reserve_fraction < 1)) {
    return InvalidArgument("the reserve must be in [0%, 100%) of GPU memory, got {}%", b.reserve_fraction * 100);
  }
  if (b.kv_bytes == 0) {
    return ResourceExhausted("the weights ({}) and the reserve ({}, {:g}% of the GPU) leave nothing of the {}'s {} "
                             "for the KV cache", GiB(b.weight_bytes), GiB(b.reserve_bytes), b.reserve_fraction * 100,
                             b.gpu.name, GiB(b.gpu.bytes));
  }
  return Status::Ok();
}

std::string ContextLabel(int64_t tokens) {
  if (tokens >= 1024 && tokens % (1024 * 1024) == 0) return fmt::format("{}M", tokens / (1024 * 1024));
  if (tokens >= 1024 && tokens % 1024 == 0) return fmt::format("{}K", tokens / 1024);
  return fmt::format("{}", tokens);
}

Result<std::vector<int64_t>> ParseContexts(std::string_view list) {
  std::vector<int64_t> out;
  size_t start = 0;
  while (start <= list.size()) {
    const size_t comma = std::min(list.find(',', start), list.size());
    std::string_view item = list.substr(start, comma - start);
    int64_t unit = 1;
    if (item.ends_with('K') || item.ends_with('k')) {
      unit = 1024;
      item.remove_suffix(1);
    } else if (item.ends_with('M') || item.ends_with('m')) {
      unit = 1024 * 1024;
      item.remove_suffix(1);
    }
    int64_t v = 0;
    const auto [end, ec] = std::from_chars(item.data(), item.data() + item.size(), v);
    if (ec != std::errc() || end != item.data() + item.size() || item.empty() || v <= 0 || v > kMaxContext / unit) {
      return InvalidArgument("bad context '{}' in '{}': contexts are positive token counts, K = 1024 (e.g. 2K,8K,32K)",
                             list.substr(start, comma - start), list);
    }
    out.push_back(v * unit);
    start = comma + 1;
  }
  return out;
}

std::string PlanReport(const Plan& plan, const MemoryBudget& budget) {
  const ModelShape& m = plan.model;
  const PlanOptions& o = plan.options;
  std::string s;
  s += fmt::format("model:      {}: {} layers x {} KV head{} x head dim {}, {} parameters, max context {} ({})\n",
                   m.name, m.n_layers, m.n_kv_heads, m.n_kv_heads == 1 ? "" : "s", m.head_dim, Params(m.params),
                   ContextLabel(m.max_context), m.max_context);
  s += fmt::format("            numbers from {}\n", m.source);
  if (budget.weight_bits > 0) {
    s += fmt::format("weights:    {:g} bits x {} parameters = {}\n", budget.weight_bits, Params(m.params),
                     GiB(budget.weight_bytes));
  } else {
    s += fmt::format("weights:    {} as stored in the file ({:.2f} bits per parameter)\n", GiB(budget.weight_bytes),
                     8.0 * budget.weight_bytes / m.params);
  }
  const std::string derivation =
      fmt::format("{} GPU - {} weights - {} reserve ({:g}%: activations, CUDA context, fragmentation)",
                  GiB(budget.gpu.bytes), GiB(budget.weight_bytes), GiB(budget.reserve_bytes),
                  budget.reserve_fraction * 100);
  s += fmt::format("GPU:        {}, {}\n", budget.gpu.name, GiB(budget.gpu.bytes));
  if (budget.kv_given) {
    s += fmt::format("KV memory:  {} (--kv-mem-gib)\n", GiB(o.kv_bytes));
    if (budget.gpu.bytes > budget.weight_bytes + budget.reserve_bytes) {
      s += fmt::format("            without it: {} = {}\n",
                       GiB(budget.gpu.bytes - budget.weight_bytes - budget.reserve_bytes), derivation);
    } else {
      s += fmt::format("            without it: nothing = {}\n", derivation);
    }
  } else {
    s += fmt::format("KV memory:  {} = {}\n", GiB(o.kv_bytes), derivation);
  }
  if (o.counting == Counting::kData) {
    s += "counting:   data only (--no-metadata): K and V codes; no scales or zero points, no residual window, no "
         "block padding\n";
  } else {
    s += fmt::format("counting:   as stored: codes, scales and zero points, parts padded to 64 bytes, whole blocks of "
                     "{} tokens, the residual window in fp16\n", o.block_tokens ? std::to_string(o.block_tokens) : std::string("the preset's"));
  }
  if (const int n_win = m.n_window_layers(); n_win > 0) {
    int w = 0;
    for (int l = 0; l < m.n_layers; ++l) w = std::max(w, m.window(l));
    s += fmt::format("windows:    {} of {} layers are sliding-window layers holding at most {} tokens per sequence; "
                     "B/token below counts every layer\n", n_win, m.n_layers, w);
  }
  // The table.
  std::vector<std::string> head = {"KV format", "data B/token", "meta B/token", "stored B/token", "residual/seq"};
  bool beyond = false;
  for (int64_t ctx : o.contexts) {
    head.push_back("users @ " + ContextLabel(ctx) + (ctx > m.max_context ? "*" : ""));
    beyond |= ctx > m.max_context;
  }
  std::vector<std::vector<std::string>> rows;
  for (const PlanRow& r : plan.rows) {
    std::vector<std::string> row = {r.format, Bytes(r.bytes.data), Bytes(r.bytes.meta), Bytes(r.bytes.stored),
                                    r.residual_bytes == 0 ? "-"
                                                          : fmt::format("{:.2f} MiB", r.residual_bytes / 1048576.0)};
    for (size_t i = 0; i < o.contexts.size(); ++i) {
      row.push_back(fmt::format("{}{}", r.users[i], o.contexts[i] > m.max_context ? "*" : ""));
    }
    rows.push_back(std::move(row));
  }
  std::vector<size_t> width(head.size());
  for (size_t c = 0; c < head.size(); ++c) {
    width[c] = head[c].size();
    for (const auto& row : rows) width[c] = std::max(width[c], row[c].size());
  }
  s += "\n|";
  for (size_t c = 0; c < head.size(); ++c) s += fmt::format(" {:<{}} |", head[c], width[c]);
  s += "\n|";
  for (size_t c = 0; c < head.size(); ++c) s += c == 0 ? std::string(width[c] + 2, '-') + "|" : std::string(width[c] + 1, '-') + ":|";
  s += "\n";
  for (const auto& row : rows) {
    s += "|";
    for (size_t c = 0; c < row.size(); ++c) {
      s += c == 0 ? fmt::format(" {:<{}} |", row[c], width[c]) : fmt::format(" {:>{}} |", row[c], width[c]);
    }
    s += "\n";
  }
  s += "\n";
  s += "KV formats:\n";
  for (const PlanRow& r : plan.rows) s += fmt::format("  {:<{}}  {}\n", r.format, width[0], kv::ConfigName(r.config));
  if (beyond) {
    s += fmt::format("* beyond the model's maximum context of {} ({} tokens)\n", ContextLabel(m.max_context),
                     m.max_context);
  }
  return s;
}

BarChart PlanChart(const Plan& plan) {
  const ModelShape& m = plan.model;
  const PlanOptions& o = plan.options;
  BarChart c{.title = fmt::format("Concurrent users: {}, {} for the KV cache{}", m.name, GiB(o.kv_bytes),
                                  o.counting == Counting::kData ? " (data bytes only)" : ""),
             .y_label = "concurrent users (log scale)",
             .log_y = true};
  bool beyond = false;
  for (int64_t ctx : o.contexts) {
    c.categories.push_back(ContextLabel(ctx) + (ctx > m.max_context ? "*" : ""));
    beyond |= ctx > m.max_context;
  }
  c.x_label = "context per user (tokens)";
  if (beyond) c.x_label += fmt::format("; * beyond the model's maximum of {}", ContextLabel(m.max_context));
  for (const PlanRow& r : plan.rows) {
    BarSeries s{.name = r.format};
    for (int64_t u : r.users) s.values.push_back(static_cast<double>(u));
    c.series.push_back(std::move(s));
  }
  return c;
}

}  // namespace slimkv::eval
