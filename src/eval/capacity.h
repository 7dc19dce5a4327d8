// The capacity planner: how many sequences ("users") of a given context fit in the memory
// left for the KV cache, for each KV format. docs/PLANNER.md has the formulas and sources.
//
// Bytes one sequence of C tokens holds, per layer l, times the KV heads:
//   held_l = min(C, window_l) on a sliding-window layer, C on a global one.
//   Counting::kData   held_l x (K codes + V codes of one token): the pure data figure.
//   Counting::kStored what KvCache allocates for a sequence at length C: whole blocks of
//                     block_tokens, sealed blocks in the final format (codes, scales and zero
//                     points, each part padded to 64 bytes), the newest `residual` tokens still
//                     in f16 staging blocks, and on a window layer only the blocks from the
//                     first one a future token can see (kv/footprint.h: SequenceFootprint).
// users(C) = floor(kv_bytes / sequence_bytes(C)).
// With global layers only and C a multiple of block_tokens, kStored is
//   C x stored_bytes_per_token + residual x (f16 - stored) bytes per token,
// the residual window being a fixed per-sequence cost.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "eval/svg.h"
#include "gguf/gguf_file.h"
#include "kv/format.h"

namespace slimkv::eval {

// The numbers of a model the planner needs.
struct ModelShape {
  std::string name;
  int n_layers = 0;
  int n_kv_heads = 0;
  int head_dim = 0;
  int64_t max_context = 0;       // tokens the model is made for; longer contexts are marked
  int64_t params = 0;            // weights, for weight bytes = params x bits / 8
  std::vector<int> layer_window; // [n_layers] tokens a layer sees, 0 = global; empty = all global
  std::string source;            // where the numbers come from
  uint64_t file_weight_bytes = 0;  // a GGUF's tensor bytes as stored (0 for a preset)

  int window(int layer) const { return layer_window.empty() ? 0 : layer_window[layer]; }
  int n_window_layers() const;
  Status Check() const;  // InvalidArgument for non-positive sizes or a bad window list
};

// The built-in models ("llama-3.1-8b", case-insensitive); the error lists them.
Result<ModelShape> FindModelPreset(std::string_view name);
std::string ModelPresetList();
// From a GGUF file: model::ReadConfig's numbers, parameters = its tensors' element counts.
Result<ModelShape> ModelShapeFromGguf(const gguf::GgufFile& file);

struct Gpu {
  std::string name;    // "A100-80GB", or "48 GiB" for a number
  uint64_t bytes = 0;  // memory total as the driver reports it
};
// A GPU name ("h100-80gb", case-insensitive) or a positive number of GiB.
Result<Gpu> ParseGpu(std::string_view spec);
std::string GpuList();

enum class Counting {
  kData,    // K and V codes only (--no-metadata)
  kStored,  // every byte the cache allocates: codes, metadata, padding, residual window
};

// Bytes per token of one format, summed over all layers and KV heads (a token that every
// layer still holds).
struct TokenBytes {
  double data = 0;    // codes
  double meta = 0;    // scales and zero points
  double stored = 0;  // sealed blocks / block_tokens: data + meta + padding to 64 bytes
  double staged = 0;  // staging (f16) blocks / block_tokens: what a residual-window token costs
};
TokenBytes BytesPerToken(const ModelShape& m, const kv::KvConfig& c);

// Bytes one sequence of `context` tokens holds.
uint64_t SequenceBytes(const ModelShape& m, const kv::KvConfig& c, int64_t context, Counting counting);
// What the residual window adds to every sequence longer than it: its tokens in f16
// instead of the final format (0 for formats without one).
uint64_t ResidualBytes(const ModelShape& m, const kv::KvConfig& c);

struct PlanOptions {
  std::vector<std::string> formats = {"fp16", "fp8", "int8", "int4", "kivi4", "kivi2", "q8_0", "q4_0"};
  std::vector<int64_t> contexts = {2048, 8192, 32768, 131072};  // tokens
  int block_tokens = 0;  // 0: each preset's own (32 for most)
  Counting counting = Counting::kStored;
  uint64_t kv_bytes = 0;  // memory for the KV cache
};

struct PlanRow {
  std::string format;  // the preset name
  kv::KvConfig config;
  TokenBytes bytes;
  uint64_t residual_bytes = 0;          // per sequence
  std::vector<uint64_t> sequence_bytes;  // [contexts]
  std::vector<int64_t> users;            // [contexts]
};

struct Plan {
  ModelShape model;
  PlanOptions options;
  std::vector<PlanRow> rows;  // one per format, in the order asked
};

// InvalidArgument for an unknown preset (listing them), a format the head dim cannot hold,
// non-positive contexts, a block size that is not a positive multiple of 16, no KV memory.
Result<Plan> MakePlan(const ModelShape& m, const PlanOptions& o);

// Where the KV memory comes from.
struct MemoryBudget {
  Gpu gpu;
  double weight_bits = 0;   // 0: the GGUF's tensors as stored
  uint64_t weight_bytes = 0;
  double reserve_fraction = 0.10;  // of GPU memory: activations, CUDA context, fragmentation
  uint64_t reserve_bytes = 0;
  uint64_t kv_bytes = 0;
  bool kv_given = false;  // --kv-mem-gib: the GPU, weights and reserve are shown, not used
};
uint64_t WeightBytes(int64_t params, double bits);
// Fills every field: kv_bytes = gpu - weights - reserve, or 0 when nothing is left.
MemoryBudget BudgetOnGpu(const Gpu& gpu, uint64_t weight_bytes, double weight_bits, double reserve_fraction);
// InvalidArgument for a reserve outside [0, 1); ResourceExhausted naming the parts when the
// budget leaves nothing for the KV cache.
Status CheckBudget(const MemoryBudget& b);

// "2K" for 2048, "1000" for 1000.
std::string ContextLabel(int64_t tokens);
// "2K,8K,32K,128K" or "2048,8192": K = 1024 tokens; positive values only.
Result<std::vector<int64_t>> ParseContexts(std::string_view list);

// The report: what was assumed, then a markdown table (bytes per token, users per context)
// and notes (format details, contexts beyond the model's maximum, sliding windows).
std::string PlanReport(const Plan& plan, const MemoryBudget& budget);
// Users per format per context: grouped bars on a log axis.
BarChart PlanChart(const Plan& plan);

}  // namespace slimkv::eval
