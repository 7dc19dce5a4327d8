#include "cli/common.h"

#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "base/log.h"
#include "kv/format.h"

namespace slimkv::cli {
namespace fs = std::filesystem;

namespace {
struct KnownModel {
  const char* short_name;
  const char* file;
};
constexpr KnownModel kKnownModels[] = {
    {"smollm2-135m", "SmolLM2-135M-Instruct.Q4_1.gguf"},
    {"smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"},
    {"gemma3-270m", "gemma-3-270m-q4_k_m.gguf"},
    {"gemma3", "gemma-3-270m-q4_k_m.gguf"},
};

constexpr int kMaxThreads = 256;

// Far above any machine (1 PiB), and small enough that the byte count fits in size_t.
constexpr double kMaxKvMemMib = 1 << 30;

// The checkout holding the binary when it lives in <checkout>/build*/bin/ (else empty).
fs::path CheckoutDir() {
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  return ec ? fs::path() : exe.parent_path().parent_path().parent_path();
}

std::vector<fs::path> ModelDirs() {
  std::vector<fs::path> dirs;
  if (const char* d = std::getenv("SLIMKV_MODEL_DIR"); d && *d) dirs.emplace_back(d);
  dirs.emplace_back("models");
  if (const fs::path c = CheckoutDir(); !c.empty()) dirs.push_back(c / "models");
  return dirs;
}
}  // namespace

int DefaultThreads() {
  int n = 0;
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) n = CPU_COUNT(&set);
  if (n <= 0) n = static_cast<int>(std::thread::hardware_concurrency());
  return std::clamp(n, 1, kMaxThreads);
}

std::string KnownModelList() {
  std::string s;
  for (const auto& k : kKnownModels) {
    // The long names only; the others are their abbreviations.
    if (std::string_view(k.short_name).find('-') != std::string_view::npos) {
      s += fmt::format("{}{}", s.empty() ? "" : ", ", k.short_name);
    }
  }
  return s;
}

void ShowDefaults(CLI::App& app) {
  for (CLI::App* sub : app.get_subcommands({})) ShowDefaults(*sub);
  for (CLI::Option* opt : app.get_options()) {
    if (opt->get_expected_min() == 0 && opt->get_expected_max() == 0) continue;  // a flag
    if (opt->get_required() || opt->get_positional()) continue;
    const std::string& d = opt->get_description();
    if (d.find("(default") != std::string::npos || d.find("; default") != std::string::npos ||
        d.find(", default") != std::string::npos) {
      opt->default_str("");  // the description says it
    } else if (opt->get_default_str().empty() || opt->get_default_str() == "[]") {
      opt->default_str("none");
    }
  }
}

void CommonFlags::Add(CLI::App* app, bool with_model_flag) {
  if (with_model_flag) {
    app->add_option("-m,--model", model,
                    "model: a GGUF path or a short name (" + KnownModelList() + "); default smollm2-135m");
  }
  app->add_option(
         "-t,--threads", threads,
         fmt::format("threads (the caller included; default: the CPUs this process may use, {} here)",
                     threads))
      ->check(CLI::Range(1, kMaxThreads));
  app->add_option("--kv", kv, "KV cache preset: " + kv::PresetList());
  app->add_option(
      "--kv-k", kv_k,
      "key format, overriding the preset: TYPE[:OPTION...] with TYPE f32|f16|bf16|fp8|fp8e4m3|"
      "fp8e5m2|int8|int4|int3|int2|q8_0|q4_0|tq4|tq3|tq2|tq1 (TurboQuant; tq3.5, tq2.5, tq2.25...: that "
      "fraction of the channels one bit more) and OPTION channel|token|g32|g64|g128|sym|asym|rot|pre|mean "
      "(tq keys); default: the preset's");
  app->add_option("--kv-v", kv_v,
                  "value format, overriding the preset (as --kv-k, without pre; default: the preset's)");
  app->add_option("--kv-policy", kv_policy, "eviction policy: " + kv::PolicyList());
  app->add_option("--kv-budget", kv_budget, "tokens the policy keeps per layer and KV head")
      ->check(CLI::Range(0, 1 << 24));
  app->add_option("--kv-residual", kv_residual,
                  "most recent tokens kept in fp16 before quantization, a multiple of --kv-block (default: "
                  "the preset's)")
      ->check(CLI::Range(0, 1 << 20));
  app->add_option("--kv-mem", kv_mem_mib, "KV cache budget in MiB (default: what the context needs)")
      ->check(CLI::Range(0.0, kMaxKvMemMib));
  app->add_option("--kv-block", block_tokens,
                  "tokens per KV block, a multiple of 16 (default: the preset's, 32 for most)");
  app->add_option("-b,--batch-size", batch, "prompt tokens per forward call")->check(CLI::Range(1, 1 << 16));
  app->add_option("--kv-share", kv_share,
                  "cross-layer KV sharing: LAYER=SOURCE,... (a layer attends "
                  "over an earlier layer's cache and keeps "
                  "none), or kvsharer:N[:THRESHOLD] to let KVSharer's search "
                  "pick N layers on the eval text");
  app->add_option("--kv-disk", kv_disk,
                  "directory of the prefix cache's disk tier: prefix blocks are kept there in their stored "
                  "format and survive restarts (one process per directory; default: none); a :recall "
                  "policy with :host=N also spills its host blocks past N there");
  app->add_option("--kv-disk-mem", kv_disk_gib, "budget of --kv-disk in GiB (least recently used blocks go first)")
      ->check(CLI::Range(0.001, 1048576.0));
  app->add_option("--kv-redis", kv_redis,
                  "HOST:PORT of a Redis that instances share prefix blocks through; when it is down or slow "
                  "requests are served locally (default: none)");
  app->add_flag("-v,--verbose", verbose, "print model, KV layout and byte accounting");
  llama.Add(app, with_model_flag);
}

Result<std::string> ResolveModel(const std::string& arg) {
  std::string file = arg;
  if (arg.empty()) file = kKnownModels[0].file;
  for (const auto& k : kKnownModels)
    if (arg == k.short_name) file = k.file;
  if (file.find('/') != std::string::npos || fs::exists(file)) {
    if (!fs::exists(file)) return NotFound("model file '{}' does not exist", file);
    return file;
  }
  std::string looked;
  for (const fs::path& d : ModelDirs()) {
    const fs::path p = d / file;
    if (fs::exists(p)) return p.string();
    looked += (looked.empty() ? "" : ", ") + d.string();
  }
  return NotFound("model '{}' not found (looked in {}); run `make models` to fetch the known ones",
                  arg.empty() ? file : arg, looked);
}

std::string ResolveDataFile(const std::string& path) {
  if (path.empty() || fs::path(path).is_absolute() || fs::exists(path)) return path;
  if (const fs::path c = CheckoutDir(); !c.empty() && fs::exists(c / path)) return (c / path).string();
  return path;
}

void AddPromptOption(CLI::App* cmd, std::string* style) {
  cmd->add_option("--prompt", *style,
                  "how the question is put: chat (the model's chat template), plain (the text, then "
                  "'Answer:' to continue: for base models such as Gemma-3-270M) or auto (default auto: "
                  "plain when the model file has no chat template, chat otherwise)")
      ->check(CLI::IsMember({"auto", "chat", "plain"}))
      ->default_str("auto");
}

Result<kv::PolicySpec> PerContextPolicy(CommonFlags* f, double fraction, int max_ctx) {
  if (!(fraction >= 0 && fraction <= 1)) return InvalidArgument("--budget-fraction {} is not in [0, 1]", fraction);
  if (f->kv_policy.empty()) return kv::PolicySpec{};
  if (fraction > 0) {
    ASSIGN_OR_RETURN(const kv::KvConfig c, KvConfigFromFlags(*f));
    f->kv_budget = std::max(c.block_tokens, static_cast<int>(std::lround(max_ctx * fraction)));
  }
  return kv::ParsePolicy(f->kv_policy, f->kv_budget);
}

Result<std::unique_ptr<engine::Engine>> MakeEngine(const CommonFlags& f, int default_ctx, int n_seq) {
  // CLI11's range check lets NaN through, and converting NaN to size_t is undefined.
  if (!(f.kv_mem_mib >= 0 && f.kv_mem_mib <= kMaxKvMemMib)) {
    return InvalidArgument("--kv-mem must be a number of MiB in [0, {}], got {}", kMaxKvMemMib, f.kv_mem_mib);
  }
  engine::EngineOptions o;
  ASSIGN_OR_RETURN(o.model_path, ResolveModel(f.model));
  ASSIGN_OR_RETURN(o.kv, KvConfigFromFlags(f));
  if (!f.kv_policy.empty()) {
    ASSIGN_OR_RETURN(o.policy, kv::ParsePolicy(f.kv_policy, f.kv_budget));
  } else if (f.kv_budget > 0) {
    return InvalidArgument("--kv-budget {} needs --kv-policy (one of {})", f.kv_budget, kv::PolicyList());
  }
  o.n_ctx = f.n_ctx > 0 ? f.n_ctx : default_ctx;
  o.n_seq = n_seq;
  o.kv_share = f.kv_share;
  if (f.kv_share.starts_with("kvsharer:")) {
    ASSIGN_OR_RETURN(o.kv_share_text, ReadFile(ResolveDataFile("data/pg_essays.txt")));
  }
  o.threads = f.threads;
  o.prefill_chunk = f.batch;
  o.kv_budget_bytes = static_cast<size_t>(f.kv_mem_mib * 1024 * 1024);
  RETURN_IF_ERROR(SetTierOptions(f, &o));
  return LoadEngine(o);
}

Status SetTierOptions(const CommonFlags& f, engine::EngineOptions* o) {
  if (!(f.kv_disk_gib > 0 && f.kv_disk_gib <= (1 << 20))) {  // NaN fails too
    return InvalidArgument("--kv-disk-mem must be a number of GiB in (0, {}], got {}", 1 << 20, f.kv_disk_gib);
  }
  o->kv_disk_dir = f.kv_disk;
  o->kv_disk_bytes = static_cast<uint64_t>(f.kv_disk_gib * (1ull << 30));
  o->kv_redis = f.kv_redis;
  return Status::Ok();
}

Result<std::unique_ptr<engine::Engine>> LoadEngine(const engine::EngineOptions& o) {
  std::fprintf(stderr, "loading model %s\n", o.model_path.c_str());
  const double t0 = NowSeconds();
  ASSIGN_OR_RETURN(std::unique_ptr<engine::Engine> eng, engine::Engine::Create(o));
  const model::ModelConfig& c = eng->model().config();
  std::fprintf(stderr, "loaded %s (%s, %d layers, %s of weights) in %.2f s\n", c.name.c_str(), c.arch.c_str(),
               c.n_layers, HumanBytes(static_cast<double>(eng->model().WeightBytesPerToken())).c_str(),
               NowSeconds() - t0);
  return eng;
}

std::string KvDescription(engine::Engine& eng) {
  std::string s = kv::ConfigName(eng.kv().config());
  const model::KvShare& share = eng.model().kv_share();
  if (share.active()) {
    s += fmt::format(", {} of {} layers share a cache ({})", share.shared(), eng.model().config().n_layers,
                     model::KvShareMapString(share));
  }
  return s;
}

Result<kv::KvConfig> KvConfigFromFlags(const CommonFlags& f) {
  // llama.cpp's -ctk/-ctv name one side each, as --kv-k/--kv-v do: both at once is ambiguous.
  std::string k = f.kv_k, v = f.kv_v;
  if (!f.llama.cache_type_k.empty()) {
    if (!k.empty()) return InvalidArgument("give --kv-k or --cache-type-k (-ctk), not both");
    ASSIGN_OR_RETURN(k, KvSpecFromCacheType("--cache-type-k", f.llama.cache_type_k));
  }
  if (!f.llama.cache_type_v.empty()) {
    if (!v.empty()) return InvalidArgument("give --kv-v or --cache-type-v (-ctv), not both");
    ASSIGN_OR_RETURN(v, KvSpecFromCacheType("--cache-type-v", f.llama.cache_type_v));
  }
  ASSIGN_OR_RETURN(kv::KvConfig c, kv::MakeConfig(f.kv, k, v, f.kv_residual));
  if (f.block_tokens != 0) c.block_tokens = f.block_tokens;
  return c;
}

int Fail(const Status& st) {
  std::fprintf(stderr, "error: %s\n", st.message().c_str());
  switch (st.code()) {
    case StatusCode::kInvalidArgument:
    case StatusCode::kOutOfRange:
      return 2;
    case StatusCode::kNotFound:
    case StatusCode::kIo:
      return 3;
    case StatusCode::kDataLoss:
    case StatusCode::kUnimplemented:
      return 4;
    case StatusCode::kResourceExhausted:
      return 5;
    default:
      return 1;
  }
}

std::string HumanBytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024 && u < 4) {
    b /= 1024;
    ++u;
  }
  return fmt::format("{:.{}f} {}", b, u == 0 ? 0 : 2, units[u]);
}

Result<std::string> ReadFile(const std::string& path) {
  // An ifstream opens a directory and reads nothing from it: say so instead of "empty".
  std::error_code ec;
  if (fs::is_directory(path, ec)) return InvalidArgument("'{}' is a directory, not a file", path);
  std::ifstream in(path, std::ios::binary);
  if (!in) return IoError("cannot read '{}': {}", path, std::strerror(errno));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace slimkv::cli
