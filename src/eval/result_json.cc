#include "eval/result_json.h"

#include <cmath>
#include <fstream>
#include <map>
#include <sstream>

#include "eval/svg.h"

namespace slimkv::eval {
namespace {
// JSON has no NaN: a missing number is null.
nlohmann::json Num(double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr); }
}  // namespace

nlohmann::json ToJson(const PerplexityResult& r) {
  nlohmann::json j{{"ppl", r.ppl},           {"ppl_stderr", r.ppl_stderr},
                   {"mean_nll", r.mean_nll}, {"scored_tokens", r.scored_tokens},
                   {"chunks", r.chunks},     {"seconds", r.seconds},
                   {"step", r.step}};
  if (r.base_ppl > 0) {
    j["base_ppl"] = r.base_ppl;
    j["ppl_delta"] = r.ppl / r.base_ppl - 1;
    j["mean_kl"] = r.mean_kl;
    j["kl_stderr"] = r.kl_stderr;
    j["top1_agreement"] = r.top1_agreement;
  }
  return j;
}

nlohmann::json ToJson(const StreamResult& r) {
  nlohmann::json curve = nlohmann::json::array();
  for (const auto& [n, p] : r.curve) curve.push_back({n, p});
  return {{"ppl", r.ppl},
          {"scored_tokens", r.scored_tokens},
          {"seconds", r.seconds},
          {"kv_bytes_end", r.kv_bytes_end},
          {"kv_bytes_max", r.kv_bytes_max},
          {"curve", curve}};
}

nlohmann::json ToJson(const NeedleResult& r) {
  nlohmann::json cells = nlohmann::json::array();
  for (const auto& c : r.cells) {
    cells.push_back({{"context", c.context}, {"depth", c.depth}, {"found", c.found}, {"output", c.output}});
  }
  // Accuracy per context, keyed by the context in tokens.
  nlohmann::json by_context = nlohmann::json::object();
  std::map<int, std::pair<int, int>> found;  // context -> (found, cells)
  for (const auto& c : r.cells) {
    found[c.context].first += c.found;
    ++found[c.context].second;
  }
  for (const auto& [ctx, f] : found)
    by_context[std::to_string(ctx)] = static_cast<double>(f.first) / f.second;
  nlohmann::json j = {{"accuracy", r.accuracy},
                      {"accuracy_by_context", by_context},
                      {"prompt", r.plain ? "plain" : "chat"},
                      {"cells", cells}};
  if (r.recall) j["recall"] = RecallJson(*r.recall);
  return j;
}

nlohmann::json RecallJson(const kv::EvictionStats& e) {
  return {{"offloaded", e.offloaded},       {"offload_lost_tokens", e.offload_lost},
          {"fetched", e.fetched},           {"fetch_used", e.fetch_used},
          {"fetch_missed", e.fetch_missed}, {"fetch_hit_rate", e.fetch_hit_rate()},
          {"host_dropped", e.host_dropped}, {"spilled", e.spilled},
          {"spill_read", e.spill_read},     {"spill_lost", e.spill_lost}};
}

nlohmann::json ToJson(const RulerResult& r) {
  nlohmann::json cells = nlohmann::json::array();
  nlohmann::json scores = nlohmann::json::object();
  for (const auto& c : r.cells) {
    cells.push_back({{"task", c.task},
                     {"context", c.context},
                     {"sample", c.sample},
                     {"prompt_tokens", c.prompt_tokens},
                     {"score", c.score},
                     {"answers", c.answers},
                     {"output", c.output}});
    scores[c.task][std::to_string(c.context)] = Num(r.Score(c.task, c.context));
  }
  // Per task, the mean over its samples at every context.
  nlohmann::json task_scores = nlohmann::json::object();
  std::map<std::string, std::pair<double, int>> sums;
  for (const auto& c : r.cells) {
    sums[c.task].first += c.score;
    ++sums[c.task].second;
  }
  for (const auto& [task, s] : sums) task_scores[task] = s.first / s.second;
  return {{"mean_score", r.Mean()},
          {"scores", scores},
          {"task_scores", task_scores},
          {"prompt", r.plain ? "plain" : "chat"},
          {"cells", cells}};
}

nlohmann::json ToJson(const BenchResult& r) {
  nlohmann::json j{{"test", r.c.name},
                   {"prompt_tokens", r.c.prompt_tokens},
                   {"gen_tokens", r.c.gen_tokens},
                   {"tokens_per_s", r.tokens_per_s},
                   {"stddev", r.stddev}};
  if (r.c.gen_tokens > 0) {
    j["bytes_per_step"] = r.bytes_per_step;
    j["gbps"] = r.gbps;
  }
  return j;
}

nlohmann::json PlanJson(const Plan& plan) {
  nlohmann::json rows = nlohmann::json::array();
  for (const PlanRow& r : plan.rows) {
    rows.push_back({{"format", r.format},
                    {"config", kv::ConfigName(r.config)},
                    {"bytes_per_token",
                     {{"data", r.bytes.data},
                      {"meta", r.bytes.meta},
                      {"stored", r.bytes.stored},
                      {"staged", r.bytes.staged}}},
                    {"residual_bytes", r.residual_bytes},
                    {"sequence_bytes", r.sequence_bytes},
                    {"users", r.users}});
  }
  const ModelShape& m = plan.model;
  return {{"model", m.name},
          {"elements_per_token", static_cast<int64_t>(m.n_layers) * m.n_kv_heads * m.head_dim * 2},
          {"kv_bytes", plan.options.kv_bytes},
          {"contexts", plan.options.contexts},
          {"counting", plan.options.counting == Counting::kData ? "data" : "stored"},
          {"rows", rows}};
}

Status WriteJsonFile(const std::string& path, const nlohmann::json& j) {
  return WriteTextFile(path, j.dump(1) + "\n");
}

Result<nlohmann::json> ReadJsonFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFound("cannot read '{}'", path);
  std::stringstream ss;
  ss << in.rdbuf();
  nlohmann::json j = nlohmann::json::parse(ss.str(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return DataLoss("'{}' is not valid JSON", path);
  return j;
}

}  // namespace slimkv::eval
