// slimkv plan: the capacity planner. How many users of a given context fit on
// one GPU, per KV format (eval/capacity.h; docs/PLANNER.md).
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>

#include "cli/commands.h"
#include "cli/common.h"
#include "eval/capacity.h"
#include "eval/held.h"
#include "eval/report_data.h"
#include "eval/result_json.h"
#include "gguf/gguf_file.h"

namespace slimkv::cli {
namespace {

constexpr double kDefaultReservePct = 10;

struct PlanFlags {
  std::string model;
  std::string gpu = "a100-80gb";
  double weight_bits = 0;  // 0: 16 for a preset, the file's own for a GGUF
  double kv_mem_gib = 0;
  double reserve_pct = kDefaultReservePct;
  std::vector<std::string> kv = eval::PlanOptions{}.formats;
  std::string contexts = "2K,8K,32K,128K";
  int block_tokens = 0;
  bool no_metadata = false;
  std::string svg;
  bool held = false;
  std::string policy;
  double budget_fraction = 0;
  std::string json;
  std::string kv_share;
  std::string quality = "docs/report/results.json";
  CLI::Option* quality_opt = nullptr;
  CLI::Option* weight_bits_opt = nullptr;
  CLI::Option* kv_mem_opt = nullptr;
};

// A preset name, else a GGUF path or short name.
Result<eval::ModelShape> ResolveShape(const std::string& arg) {
  auto preset = eval::FindModelPreset(arg);
  if (preset.ok()) return preset;
  auto path = ResolveModel(arg);
  if (!path.ok()) {
    return InvalidArgument("unknown model '{}': not a preset ({}), and as a file: {}", arg,
                           eval::ModelPresetList(), path.status().message());
  }
  ASSIGN_OR_RETURN(gguf::GgufFile file, gguf::GgufFile::Open(*path));
  return eval::ModelShapeFromGguf(file);
}

// --held: every row measured in a real cache at every context, with the
// policy's budget a fraction of each context.
Result<std::vector<std::vector<eval::HeldBytes>>> MeasureHeld(const eval::Plan& plan,
                                                              const std::string& policy, double fraction) {
  const kv::KvSpec spec = eval::SpecOf(plan.model);
  std::vector<std::vector<eval::HeldBytes>> out;
  for (const eval::PlanRow& row : plan.rows) {
    std::vector<eval::HeldBytes> per_context;
    for (const int64_t ctx : plan.options.contexts) {
      kv::PolicySpec p;
      if (!policy.empty()) {
        const int budget = fraction > 0 ? std::max<int>(row.config.block_tokens,
                                                        static_cast<int>(std::lround(ctx * fraction)))
                                        : static_cast<int>(ctx);
        ASSIGN_OR_RETURN(p, kv::ParsePolicy(policy, budget));
      }
      ASSIGN_OR_RETURN(auto h, eval::MeasureHeldBytes(spec, row.config, p, {ctx}));
      per_context.push_back(h[0]);
    }
    out.push_back(std::move(per_context));
  }
  return out;
}

// The quality column from a report's results: an error only when --quality
// names a file that cannot be read; the default file may be absent (no column
// then).
Status AddQuality(const PlanFlags& f, eval::Plan* plan) {
  if (f.quality.empty() || f.quality == "none") return Status::Ok();
  const std::string path = ResolveDataFile(f.quality);
  auto results = eval::ReadJsonFile(path);
  if (!results.ok()) return f.quality_opt->count() ? results.status() : Status::Ok();
  ASSIGN_OR_RETURN(eval::ReportData data, eval::ReportData::From(*results));
  std::string model_used;
  const auto quality = eval::QualityByFormat(data, f.model, &model_used);
  if (quality.empty()) return Status::Ok();
  for (eval::PlanRow& r : plan->rows) {
    if (auto it = quality.find(r.format); it != quality.end()) r.quality = it->second;
  }
  plan->quality_source = fmt::format(
      "perplexity change and mean KL (nats) against the fp16 cache "
      "on {}, from `{}` ({}, "
      "{})",
      model_used, f.quality, results->value("generated", "undated"), data.grid().name);
  return Status::Ok();
}

int PlanMain(const PlanFlags& f) {
  auto shape = ResolveShape(f.model);
  if (!shape.ok()) return Fail(shape.status());
  const int64_t elements_per_token =
      static_cast<int64_t>(shape->n_layers) * shape->n_kv_heads * shape->head_dim * 2;
  std::string share_map;
  if (!f.kv_share.empty()) {
    // The sharing map needs the model (a search runs it): the layers that keep
    // no cache leave the shape.
    if (shape->file_weight_bytes == 0)
      return Fail(InvalidArgument("--kv-share needs a GGUF model, not a preset"));
    CommonFlags cf;
    cf.model = f.model;
    cf.kv_share = f.kv_share;
    auto eng = MakeEngine(cf, 64);
    if (!eng.ok()) return Fail(eng.status());
    *shape = eval::ShareShape(*shape, (*eng)->model().kv_share());
    share_map = model::KvShareMapString((*eng)->model().kv_share());
    std::fprintf(stderr, "--kv-share %s: %s\n", f.kv_share.c_str(), share_map.c_str());
  }
  const bool from_file = shape->file_weight_bytes > 0;
  auto gpu = eval::ParseGpu(f.gpu);
  if (!gpu.ok()) return Fail(gpu.status());
  // CLI11's range checks let NaN through: check here.
  const bool bits_given = f.weight_bits_opt->count() > 0;
  if (bits_given && !(f.weight_bits > 0 && f.weight_bits <= 32)) {
    return Fail(InvalidArgument("--weight-bits must be in (0, 32], got {}", f.weight_bits));
  }
  const bool kv_given = f.kv_mem_opt->count() > 0;
  if (kv_given && !(f.kv_mem_gib > 0 && f.kv_mem_gib <= (1 << 20))) {
    return Fail(InvalidArgument("--kv-mem-gib must be a positive number of GiB (at most 2^20), got {}",
                                f.kv_mem_gib));
  }
  if (!(f.reserve_pct >= 0 && f.reserve_pct < 100)) {
    return Fail(InvalidArgument("--reserve-pct must be in [0, 100), got {}", f.reserve_pct));
  }
  auto contexts = eval::ParseContexts(f.contexts);
  if (!contexts.ok()) return Fail(contexts.status());

  const double bits = bits_given ? f.weight_bits : (from_file ? 0 : 16);
  const uint64_t weight_bytes = bits > 0 ? eval::WeightBytes(shape->params, bits) : shape->file_weight_bytes;
  eval::MemoryBudget budget = eval::BudgetOnGpu(*gpu, weight_bytes, bits, f.reserve_pct / 100);
  if (kv_given) {
    budget.kv_bytes = static_cast<uint64_t>(std::llround(f.kv_mem_gib * 1024 * 1024 * 1024));
    budget.kv_given = true;
  } else if (Status st = eval::CheckBudget(budget); !st.ok()) {
    return Fail(st);
  }
  eval::PlanOptions o{.formats = f.kv,
                      .contexts = *contexts,
                      .block_tokens = f.block_tokens,
                      .counting = f.no_metadata ? eval::Counting::kData : eval::Counting::kStored,
                      .kv_bytes = budget.kv_bytes};
  auto plan = eval::MakePlan(*shape, o);
  if (!plan.ok()) return Fail(plan.status());
  if (Status st = AddQuality(f, &*plan); !st.ok()) return Fail(st);
  std::fputs(eval::PlanReport(*plan, budget).c_str(), stdout);
  nlohmann::json out = eval::PlanJson(*plan);
  out["elements_per_token"] = elements_per_token;  // of the whole model: sharing
                                                   // saves bytes, not elements
  if (!f.kv_share.empty()) {
    out["kv_share"] = f.kv_share;
    out["kv_share_map"] = share_map;  // what a search found: --kv-share MAP repeats it
  }
  if (f.held || !f.policy.empty()) {
    if (!f.held) return Fail(InvalidArgument("--kv-policy applies to --held only"));
    if (!(f.budget_fraction >= 0 && f.budget_fraction <= 1)) {
      return Fail(InvalidArgument("--budget-fraction {} is not in [0, 1]", f.budget_fraction));
    }
    auto held = MeasureHeld(*plan, f.policy, f.budget_fraction);
    if (!held.ok()) return Fail(held.status());
    std::fputs(eval::HeldReport(*plan, *held).c_str(), stdout);
    for (size_t r = 0; r < plan->rows.size(); ++r)
      out["rows"][r]["held"] = eval::HeldJson((*held)[r], o.kv_bytes);
    if (!f.policy.empty()) out["policy"] = {{"spec", f.policy}, {"budget_fraction", f.budget_fraction}};
  }
  if (!f.json.empty()) {
    if (Status st = eval::WriteJsonFile(f.json, out); !st.ok()) return Fail(st);
  }
  if (!f.svg.empty()) {
    if (Status st = eval::PlanChart(*plan).WriteFile(f.svg); !st.ok()) return Fail(st);
    std::fprintf(stderr, "chart: %s\n", f.svg.c_str());
  }
  return 0;
}

}  // namespace

CommandMain AddPlanCommand(CLI::App& app) {
  auto f = std::make_shared<PlanFlags>();
  CLI::App* cmd =
      app.add_subcommand("plan", "capacity planner: concurrent users per KV format and context on a GPU");
  cmd->add_option("-m,--model", f->model,
                  "a preset (" + eval::ModelPresetList() +
                      "), a GGUF path or a short name (smollm2-135m, gemma3-270m)")
      ->required();
  cmd->add_option("--gpu", f->gpu, "GPU: " + eval::GpuList() + ", or its memory in GiB (default a100-80gb)");
  f->weight_bits_opt =
      cmd->add_option("--weight-bits", f->weight_bits,
                      "bits per weight (default: 16 for a preset, the file's own for a GGUF)");
  f->kv_mem_opt = cmd->add_option("--kv-mem-gib", f->kv_mem_gib,
                                  "memory for the KV cache in GiB (default: GPU - weights - reserve)");
  cmd->add_option("--reserve-pct", f->reserve_pct,
                  "percent of GPU memory kept for activations, CUDA context and "
                  "fragmentation when the KV memory "
                  "is derived (default 10, as vLLM's gpu_memory_utilization 0.9)");
  cmd->add_option("--kv", f->kv,
                  "KV presets, comma-separated (default "
                  "fp16,fp8,int8,int4,kivi4,kivi2,q8_0,q4_0); all: " +
                      kv::PresetList())
      ->delimiter(',');
  cmd->add_option("-c,--contexts", f->contexts,
                  "contexts per user, comma-separated, K = 1024 (default 2K,8K,32K,128K)");
  cmd->add_option("--kv-block", f->block_tokens,
                  "tokens per KV block (multiple of 16; default: each "
                  "preset's, 32 for most)");
  cmd->add_flag("--no-metadata", f->no_metadata,
                "count K/V codes only: no scales, zero points, padding or "
                "residual window");
  cmd->add_option("--svg", f->svg,
                  "also write a bar chart of users per format and context to "
                  "this SVG file");
  cmd->add_option("--kv-share", f->kv_share,
                  "with a GGUF model: cross-layer KV sharing (LAYER=SOURCE,... or "
                  "kvsharer:N[:THRESHOLD]); the "
                  "layers without a cache of their own are left out of every figure");
  cmd->add_flag("--held", f->held,
                "also measure the bytes a sequence holds in a real cache at each context "
                "(data, metadata, fp16 "
                "window, waste), filled with random K/V the way the engine fills it");
  cmd->add_option("--kv-policy", f->policy, "with --held: an eviction policy (" + kv::PolicyList() + ")");
  cmd->add_option("--budget-fraction", f->budget_fraction,
                  "with --kv-policy: the policy's budget as a fraction of each "
                  "context (default: the whole context)");
  cmd->add_option("--json", f->json, "also write the plan (and what --held measured) to this JSON file");
  f->quality_opt = cmd->add_option("--quality", f->quality,
                                   "a report's results.json: its measured perplexity change and KL per "
                                   "format become a column (default "
                                   "docs/report/results.json when present; 'none' for no column)");
  return [f] { return PlanMain(*f); };
}

}  // namespace slimkv::cli
