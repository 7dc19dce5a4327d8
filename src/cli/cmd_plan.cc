// slimkv plan: the capacity planner. How many users of a given context fit on one GPU, per
// KV format (eval/capacity.h; docs/PLANNER.md).
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>

#include "cli/commands.h"
#include "cli/common.h"
#include "eval/capacity.h"
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

int PlanMain(const PlanFlags& f) {
  auto shape = ResolveShape(f.model);
  if (!shape.ok()) return Fail(shape.status());
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
    return Fail(InvalidArgument("--kv-mem-gib must be a positive number of GiB (at most 2^20), got {}", f.kv_mem_gib));
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
  std::fputs(eval::PlanReport(*plan, budget).c_str(), stdout);
  if (!f.svg.empty()) {
    if (Status st = eval::PlanChart(*plan).WriteFile(f.svg); !st.ok()) return Fail(st);
    std::fprintf(stderr, "chart: %s\n", f.svg.c_str());
  }
  return 0;
}

}  // namespace

CommandMain AddPlanCommand(CLI::App& app) {
  auto f = std::make_shared<PlanFlags>();
  CLI::App* cmd = app.add_subcommand("plan", "capacity planner: concurrent users per KV format and context on a GPU");
  cmd->add_option("-m,--model", f->model,
                  "a preset (" + eval::ModelPresetList() + "), a GGUF path or a short name (smollm2-135m, gemma3-270m)")
      ->required();
  cmd->add_option("--gpu", f->gpu, "GPU: " + eval::GpuList() + ", or its memory in GiB (default a100-80gb)");
  f->weight_bits_opt = cmd->add_option("--weight-bits", f->weight_bits,
                                       "bits per weight (default: 16 for a preset, the file's own for a GGUF)");
  f->kv_mem_opt = cmd->add_option("--kv-mem-gib", f->kv_mem_gib,
                                  "memory for the KV cache in GiB (default: GPU - weights - reserve)");
  cmd->add_option("--reserve-pct", f->reserve_pct,
                  "percent of GPU memory kept for activations, CUDA context and fragmentation when the KV memory "
                  "is derived (default 10, as vLLM's gpu_memory_utilization 0.9)");
  cmd->add_option("--kv", f->kv, "KV presets, comma-separated (default fp16,fp8,int8,int4,kivi4,kivi2,q8_0,q4_0); all: " +
                                     kv::PresetList())
      ->delimiter(',');
  cmd->add_option("-c,--contexts", f->contexts, "contexts per user, comma-separated, K = 1024 (default 2K,8K,32K,128K)");
  cmd->add_option("--kv-block", f->block_tokens, "tokens per KV block (multiple of 16; default: each preset's, 32 for most)");
  cmd->add_flag("--no-metadata", f->no_metadata,
                "count K/V codes only: no scales, zero points, padding or residual window");
  cmd->add_option("--svg", f->svg, "also write a bar chart of users per format and context to this SVG file");
  return [f] { return PlanMain(*f); };
}

}  // namespace slimkv::cli
