// The results of the eval commands as JSON (`--json FILE`), the form `slimkv
// report` caches per cell and reads back: one object per command, numbers in
// their natural units (tokens/s, bytes, nats), nothing rounded.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "base/status.h"
#include "eval/bench.h"
#include "eval/capacity.h"
#include "eval/needle.h"
#include "eval/perplexity.h"
#include "eval/ruler.h"

namespace slimkv::eval {

nlohmann::json ToJson(const PerplexityResult& r);
nlohmann::json ToJson(const StreamResult& r);
nlohmann::json ToJson(const NeedleResult& r);
nlohmann::json ToJson(const RulerResult& r);
nlohmann::json ToJson(const BenchResult& r);
// Recall's counters (`:recall`, kv/kv_cache.h).
nlohmann::json RecallJson(const kv::EvictionStats& e);
// The plan: memory, contexts, and per format the bytes per token and users per
// context.
nlohmann::json PlanJson(const Plan& plan);

// Writes `j` (indented) to `path`; errors name the path.
Status WriteJsonFile(const std::string& path, const nlohmann::json& j);
// Reads a JSON file; NotFound / DataLoss naming the path.
Result<nlohmann::json> ReadJsonFile(const std::string& path);

}  // namespace slimkv::eval
