// The grid `slimkv report` runs: models x KV methods x measures, declared in a
// small JSON file (bench/report/default.json, bench/report/quick.json;
// docs/REPORT.md describes the keys).
//
// A method is a KV format (a preset, or flags such as "--kv int4 --kv-k
// int4:channel:pre"), alone or with an eviction policy at a budget that is a
// fraction of each context:
//   methods = formats  +  policy_formats x policies x budgets.
// Every (model, method, measure) is one cell, and every cell is one slimkv
// command line
// (`slimkv ppl ...`, `slimkv bench ...`) run with `--json`: the command that
// produced each number on the page is the cell's own, and a cell whose JSON
// exists is not run again.
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "base/status.h"

namespace slimkv::eval {

struct ReportFormat {
  std::string label;               // "int4", or the name given in the grid
  std::vector<std::string> flags;  // "--kv", "int4", ...
};

struct ReportMethod {
  ReportFormat format;
  std::string policy;  // empty: no eviction; else a --kv-policy spec ("h2o",
                       // "snapkv:pyramid")
  double budget = 0;   // with a policy: the share of each context the policy keeps
  // "int4", "int4 + h2o 50%".
  std::string Label() const;
  bool evicts() const { return !policy.empty(); }
};

enum class Measure { kBytes, kSpeed, kLoad, kPpl, kNeedle, kRuler };
const char* MeasureName(Measure m);  // "bytes", "speed", ...

// Each measure may name the methods it runs for ("methods": ["fp16", "int4 +
// h2o 50%"]); without the key it runs for every method.
struct ReportMeasures {
  // Bytes per token as held (slimkv plan --held) and users in `kv_mem_gib`.
  bool bytes = true;
  std::vector<int64_t> bytes_contexts = {256, 2048, 8192};
  double kv_mem_gib = 1;
  // Prefill and decode speed (slimkv bench --same-context): ppN and tgN@dD at
  // each depth. A method with eviction runs only the deepest decode, its budget
  // a share of that depth.
  bool speed = true;
  int prefill_tokens = 512;
  int decode_tokens = 32;
  std::vector<int> decode_depths = {0, 4096, 16384};
  int speed_reps = 2;
  bool bandwidth = true;
  // Latency under load (slimkv bench --clients), methods without eviction.
  bool load = true;
  int load_clients = 4, load_requests = 16, load_prompt = 128, load_gen = 32;
  // Perplexity, KL and top-1 against fp16 (slimkv ppl). With eviction,
  // `ppl_policy_step` tokens per forward call so the policy acts while the
  // window is read.
  bool ppl = true;
  int ppl_ctx = 512, ppl_chunks = 8, ppl_policy_step = 16;
  // Needle in a haystack (slimkv needle).
  bool needle = true;
  std::vector<int> needle_contexts = {1024, 2048, 4096};
  std::vector<int> needle_depths = {0, 25, 50, 75, 100};
  // RULER-style tasks (slimkv ruler).
  bool ruler = true;
  std::vector<std::string> ruler_tasks = {"mk", "mv", "vt", "cwe"};
  std::vector<int> ruler_contexts = {2048};
  int ruler_samples = 3;
  // Per measure (MeasureName), the method labels it is limited to; absent:
  // every method.
  std::map<std::string, std::vector<std::string>> only;

  // Whether measure `m` runs for the method labelled `label` (load: never with
  // eviction).
  bool Runs(Measure m, const std::string& label) const;
};

struct ReportGrid {
  std::string name;
  std::vector<std::string> models = {"smollm2-135m"};
  std::vector<ReportFormat> formats;
  std::vector<std::string> policies;
  std::vector<double> budgets;
  std::vector<std::string> policy_formats;  // labels of the formats combined
                                            // with policies (empty: all)
  ReportMeasures measures;
  int threads = 2;
  std::string text = "data/pg_essays.txt";

  std::vector<ReportMethod> Methods() const;
};

// Parses the grid file's JSON; InvalidArgument naming the key for a wrong type,
// an unknown key or a value out of range.
Result<ReportGrid> ParseReportGrid(const nlohmann::json& j);
nlohmann::json ReportGridJson(const ReportGrid& g);

struct ReportCell {
  std::string id;  // 16 hex digits of a hash of the arguments: the cache file's name
  Measure measure = Measure::kBytes;
  std::string model;
  ReportMethod method;
  std::vector<std::string> args;  // the slimkv arguments (subcommand first), without --json
  double cost = 1;                // estimated seconds on an idle 2-core machine, for the ETA

  // "slimkv ppl -m smollm2-135m --kv int4 ...", quoted for a POSIX shell where
  // needed.
  std::string Command() const;
};

// The cache name of a cell: 16 hex digits of a hash of its arguments.
std::string ReportCellId(const std::vector<std::string>& args);

// Every cell of the grid, model-major, then method, then measure.
std::vector<ReportCell> ExpandReportGrid(const ReportGrid& g);

}  // namespace slimkv::eval
