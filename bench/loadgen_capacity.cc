// loadgen_capacity: how many sequences of a given context a KV budget really holds, per KV
// preset — the measured version of `slimkv plan`'s table.
//
//   loadgen_capacity [-m MODEL.gguf] [--budget-gib 2] [--contexts 2048,8192] [--kv fp16,int4,...]
//
// For each preset and context, a KvCache of the model's shape gets the budget, and sequences
// are filled to the full context one after another through the path the model's forward pass
// uses (BeginStep / Append / EndStep in chunks of --chunk tokens, random K/V rows; EndStep
// seals quantized blocks), until BeginStep reports the pool exhausted. "admitted" is the
// number of sequences that reached the full context; the last, partial one is removed. The
// scheduler's own admission rule (engine::SequenceKvBytes of the context plus one block) is
// shown beside it, as is the planner's figure (eval::SequenceBytes).
#include <CLI/CLI.hpp>

#include <cstdio>
#include <chrono>
#include <map>
#include <random>

#include "engine/scheduler.h"
#include "eval/capacity.h"
#include "kv/format.h"
#include "kv/kv_cache.h"
#include "model/model.h"

using namespace slimkv;

namespace {

struct FillResult {
  int sequences = 0;
  double seconds = 0;
  size_t bytes_in_use = 0;
};

FillResult Fill(const kv::KvSpec& spec, const kv::KvConfig& config, size_t budget, int64_t context, int chunk) {
  auto cache = kv::KvCache::Create(spec, config, budget);
  if (!cache.ok()) {
    std::fprintf(stderr, "error: %s\n", cache.status().message().c_str());
    std::exit(1);
  }
  kv::KvCache& kv = **cache;
  const int64_t kv_dim = static_cast<int64_t>(spec.n_kv_heads) * spec.head_dim;
  std::vector<float> k(static_cast<size_t>(chunk) * kv_dim), v(k.size());
  std::mt19937 rng(1);
  std::normal_distribution<float> nd(0, 1);
  for (auto& x : k) x = nd(rng);
  for (auto& x : v) x = nd(rng);
  FillResult r;
  const auto t0 = std::chrono::steady_clock::now();
  for (;;) {
    const kv::SeqId s = kv.AddSequence();
    bool full = true;
    for (int64_t done = 0; done < context;) {
      const int n = static_cast<int>(std::min<int64_t>(chunk, context - done));
      const kv::StepChunk c{s, n, 0};
      if (!kv.BeginStep({&c, 1}).ok()) {
        full = false;
        break;
      }
      for (int l = 0; l < spec.n_layers; ++l) kv.Append(l, {&c, 1}, k.data(), kv_dim, v.data(), kv_dim);
      kv.EndStep({&c, 1});
      done += n;
    }
    if (!full) {
      kv.RemoveSequence(s);
      break;
    }
    ++r.sequences;
  }
  kv.CheckInvariants();
  r.bytes_in_use = kv.bytes_in_use();
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"loadgen_capacity: sequences a KV budget holds at a context, measured by filling a real KvCache"};
  std::string model_path = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
  double budget_gib = 2;
  std::vector<int64_t> contexts = {2048, 8192};
  std::vector<std::string> presets = {"fp16", "fp8", "int8", "int4", "kivi4", "kivi2", "q8_0", "q4_0"};
  int chunk = 512;
  app.add_option("-m,--model", model_path, "GGUF model (its KV shape is what matters)");
  app.add_option("--budget-gib", budget_gib, "KV budget in GiB");
  app.add_option("--contexts", contexts, "contexts in tokens")->delimiter(',');
  app.add_option("--kv", presets, "KV presets")->delimiter(',');
  app.add_option("--chunk", chunk, "tokens per step while filling (the server's --max-batch-tokens)");
  CLI11_PARSE(app, argc, argv);
  auto model = model::Model::Load(model_path);
  if (!model.ok()) {
    std::fprintf(stderr, "error: %s\n", model.status().message().c_str());
    return 1;
  }
  const kv::KvSpec spec = (*model)->KvSpec();
  auto shape = eval::ModelShapeFromGguf((*model)->file());
  const size_t budget = static_cast<size_t>(budget_gib * 1024 * 1024 * 1024);
  std::printf("KV budget %.2f GiB, model %s (%d layers x %d KV heads x %d head dim)\n\n", budget_gib,
              (*model)->config().name.c_str(), spec.n_layers, spec.n_kv_heads, spec.head_dim);
  std::printf("| KV preset | bytes/token (stored) | context | admitted (pool filled) | scheduler rule | planner | vs fp16 | fill s |\n");
  std::printf("|---|---:|---:|---:|---:|---:|---:|---:|\n");
  std::map<int64_t, int> fp16;
  for (const std::string& name : presets) {
    auto config = kv::ParsePreset(name);
    if (!config.ok()) {
      std::fprintf(stderr, "error: %s\n", config.status().message().c_str());
      return 2;
    }
    for (int64_t ctx : contexts) {
      const FillResult r = Fill(spec, *config, budget, ctx, chunk);
      // The scheduler admits while the sequences' SequenceKvBytes (context + one block to
      // grow into) fit the budget.
      auto probe = kv::KvCache::Create(spec, *config, 1 << 20);
      const size_t rule = engine::SequenceKvBytes(**probe, ctx + config->block_tokens);
      const uint64_t planner_seq = shape.ok() ? eval::SequenceBytes(*shape, *config, ctx, eval::Counting::kStored) : 0;
      if (name == "fp16") fp16[ctx] = r.sequences;
      const double per_token = shape.ok() ? eval::BytesPerToken(*shape, *config).stored : 0;
      std::printf("| %s | %.0f | %lld | %d | %zu | %llu | %.2fx | %.1f |\n", name.c_str(), per_token,
                  static_cast<long long>(ctx), r.sequences, budget / rule,
                  static_cast<unsigned long long>(planner_seq ? budget / planner_seq : 0),
                  fp16.count(ctx) && fp16[ctx] ? static_cast<double>(r.sequences) / fp16[ctx] : 0.0, r.seconds);
      std::fflush(stdout);
    }
  }
  return 0;
}
