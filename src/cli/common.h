// Flags and wiring shared by the slimkv commands.
#pragma once

#include <CLI/CLI.hpp>
#include <memory>
#include <string>

#include "base/status.h"
#include "cli/llama_flags.h"
#include "engine/engine.h"
#include "kv/format.h"

namespace slimkv::cli {

// The CPUs this process may run on (its affinity mask, so taskset and cpusets count), the
// default of -t.
int DefaultThreads();

// Model, context, threads and KV flags, as llama.cpp names them where it has them.
struct CommonFlags {
  std::string model;               // -m: path or short name; empty = default model
  int n_ctx = 0;                   // -c: 0 = command's default
  int threads = DefaultThreads();  // -t
  std::string kv = "fp16";         // --kv preset
  std::string kv_k, kv_v;          // --kv-k / --kv-v: free-form format of one side (overrides the preset)
  int kv_residual = -1;            // --kv-residual: tokens kept in fp16 before sealing (-1: the preset's)
  std::string kv_policy;           // --kv-policy NAME[:OPTIONS]
  int kv_budget = 0;               // --kv-budget: tokens kept per layer and KV head
  double kv_mem_mib = 0;           // --kv-mem: KV budget in MiB (0 = exactly what the context needs)
  int block_tokens = 0;            // --kv-block (0: the preset's, 32 for most)
  std::string kv_share;            // --kv-share: cross-layer sharing, a map or kvsharer:N[:T]
  int batch = 512;                 // -b: prompt tokens per forward call
  std::string kv_disk;             // --kv-disk DIR: the prefix cache's disk tier
  double kv_disk_gib = 4;          // --kv-disk-mem: its budget in GiB
  std::string kv_redis;            // --kv-redis HOST:PORT: the shared tier
  bool verbose = false;
  LlamaCppFlags llama;  // -ctk/-ctv (override --kv-k/--kv-v's defaults), -fa, -ngl, -hf

  void Add(CLI::App* app, bool with_model_flag = true);
};

// "smollm2-135m, gemma3-270m": the short names -m takes.
std::string KnownModelList();

// --help shows every default: each option that takes a value and is not required shows the
// value it starts with ("[4096]"), unless its description already says what the default is
// (options whose stored default is a sentinel such as 0 = "the command's"). Call after every
// command has added its options.
void ShowDefaults(CLI::App& app);

// Resolves a model argument: a path, or a short name (smollm2-135m, gemma3-270m), or empty
// for the default; searched in $SLIMKV_MODEL_DIR, ./models and the checkout's models/.
Result<std::string> ResolveModel(const std::string& arg);
// A relative data path (data/pg_essays.txt) as given when it exists from the working
// directory, else under the checkout holding the binary; unchanged when neither has it.
std::string ResolveDataFile(const std::string& path);

// The lower tiers of the prefix cache from --kv-disk, --kv-disk-mem and --kv-redis.
Status SetTierOptions(const CommonFlags& f, engine::EngineOptions* o);
// Without --kv-mem the KV budget holds `n_seq` sequences of the context.
Result<std::unique_ptr<engine::Engine>> MakeEngine(const CommonFlags& f, int default_ctx, int n_seq = 1);
// For commands that set the policy per context (needle, ruler): the policy --kv-policy names,
// with --kv-budget or with `fraction` (> 0) of the longest context `max_ctx`. `f` keeps the
// policy at its largest budget, so MakeEngine sizes the pool for the policy's peak, which can
// exceed what the context needs without it (h2o stages up to twice its budget at 16 bits
// before it evicts). An inactive PolicySpec without --kv-policy.
Result<kv::PolicySpec> PerContextPolicy(CommonFlags* f, double fraction, int max_ctx);
// The eval tasks' --prompt auto|chat|plain (eval/prompt.h), into `style` ("auto" by default).
void AddPromptOption(CLI::App* cmd, std::string* style);
// Engine::Create with a line on stderr before (the file) and after (what loaded, how long).
Result<std::unique_ptr<engine::Engine>> LoadEngine(const engine::EngineOptions& o);
// The engine's KV cache in words: the formats, and the layers that share a cache.
std::string KvDescription(engine::Engine& eng);
// The KV configuration the flags describe.
Result<kv::KvConfig> KvConfigFromFlags(const CommonFlags& f);

// Prints "error: <message>" to stderr and returns the exit code for `st`.
int Fail(const Status& st);

std::string HumanBytes(double bytes);

// Reads a whole file (for -f); errors name the path.
Result<std::string> ReadFile(const std::string& path);

}  // namespace slimkv::cli
