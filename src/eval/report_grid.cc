#include "eval/report_grid.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <set>

#include "base/hash.h"

namespace slimkv::eval {
namespace {

using nlohmann::json;

// Reads j[key] into *out when present; InvalidArgument naming the key for a
// wrong type.
template <typename T>
Status Get(const json& j, const char* key, T* out) {
  if (!j.contains(key)) return Status::Ok();
  try {
    *out = j.at(key).get<T>();
  } catch (const json::exception& e) {
    return InvalidArgument("report grid: '{}' has the wrong type ({})", key, e.what());
  }
  return Status::Ok();
}

Status CheckKeys(const json& j, const char* where, std::initializer_list<const char*> keys) {
  if (!j.is_object()) return InvalidArgument("report grid: '{}' must be an object", where);
  for (const auto& item : j.items()) {
    const std::string& k = item.key();  // not a structured binding: clang 14 cannot capture one
    if (std::none_of(keys.begin(), keys.end(), [&](const char* x) { return k == x; })) {
      std::string list;
      for (const char* x : keys) list += (list.empty() ? "" : ", ") + std::string(x);
      return InvalidArgument("report grid: unknown key '{}' in {} (keys: {})", k, where, list);
    }
  }
  return Status::Ok();
}

template <typename T>
Status Positive(const char* key, const std::vector<T>& v) {
  for (const T& x : v)
    if (!(x > 0)) return InvalidArgument("report grid: '{}' holds {}, not a positive number", key, x);
  return Status::Ok();
}

std::string Join(const std::vector<std::string>& v, const char* sep) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : sep) + x;
  return s;
}

template <typename T>
std::string JoinNumbers(const std::vector<T>& v) {
  std::vector<std::string> s;
  for (const T& x : v) s.push_back(std::to_string(x));
  return Join(s, ",");
}

std::string ShellQuote(const std::string& s) {
  if (!s.empty() && s.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                        "0123456789@%+=:,./_-") == std::string::npos) {
    return s;
  }
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// A model's cost relative to SmolLM2-135M (Gemma-3-270M: twice the weights,
// head dim 256).
double ModelCost(const std::string& model) { return model.find("gemma") != std::string::npos ? 2.0 : 1.0; }

// The slimkv command that runs a measure.
const char* Subcommand(Measure m) {
  switch (m) {
    case Measure::kBytes:
      return "plan";
    case Measure::kSpeed:
    case Measure::kLoad:
      return "bench";
    default:
      return MeasureName(m);
  }
}

}  // namespace

std::string ReportMethod::Label() const {
  if (!evicts()) return format.label;
  return fmt::format("{} + {} {:g}%", format.label, policy, std::round(budget * 1000) / 10);
}

std::vector<ReportMethod> ReportGrid::Methods() const {
  std::vector<ReportMethod> m;
  for (const auto& f : formats) m.push_back({f, "", 0});
  for (const auto& f : formats) {
    if (!policy_formats.empty() &&
        std::find(policy_formats.begin(), policy_formats.end(), f.label) == policy_formats.end()) {
      continue;
    }
    for (const auto& p : policies)
      for (double b : budgets) m.push_back({f, p, b});
  }
  return m;
}

bool ReportMeasures::Runs(Measure m, const std::string& label) const {
  const auto it = only.find(MeasureName(m));
  return it == only.end() || std::find(it->second.begin(), it->second.end(), label) != it->second.end();
}

const char* MeasureName(Measure m) {
  switch (m) {
    case Measure::kBytes:
      return "bytes";
    case Measure::kSpeed:
      return "speed";
    case Measure::kLoad:
      return "load";
    case Measure::kPpl:
      return "ppl";
    case Measure::kNeedle:
      return "needle";
    case Measure::kRuler:
      return "ruler";
  }
  return "?";
}

Result<ReportGrid> ParseReportGrid(const json& j) {
  RETURN_IF_ERROR(CheckKeys(j, "the grid",
                            {"name", "models", "formats", "policies", "budgets", "policy_formats", "measures",
                             "threads", "text", "comment"}));
  ReportGrid g;
  RETURN_IF_ERROR(Get(j, "name", &g.name));
  RETURN_IF_ERROR(Get(j, "models", &g.models));
  RETURN_IF_ERROR(Get(j, "policies", &g.policies));
  RETURN_IF_ERROR(Get(j, "budgets", &g.budgets));
  RETURN_IF_ERROR(Get(j, "policy_formats", &g.policy_formats));
  RETURN_IF_ERROR(Get(j, "threads", &g.threads));
  RETURN_IF_ERROR(Get(j, "text", &g.text));
  if (g.models.empty()) return InvalidArgument("report grid: no models");
  if (g.threads < 1 || g.threads > 256)
    return InvalidArgument("report grid: threads {} outside [1, 256]", g.threads);
  for (double b : g.budgets)
    if (!(b > 0 && b <= 1))
      return InvalidArgument("report grid: budget {} is not a share of the context in (0, 1]", b);
  if (!g.policies.empty() && g.budgets.empty())
    return InvalidArgument("report grid: policies without budgets");
  if (!j.contains("formats") || !j["formats"].is_array() || j["formats"].empty()) {
    return InvalidArgument("report grid: 'formats' must be a non-empty list");
  }
  std::set<std::string> labels;
  for (const json& f : j["formats"]) {
    ReportFormat rf;
    if (f.is_string()) {
      rf.label = f.get<std::string>();
      rf.flags = {"--kv", rf.label};
    } else if (f.is_object()) {
      RETURN_IF_ERROR(CheckKeys(f, "a format", {"label", "flags"}));
      RETURN_IF_ERROR(Get(f, "label", &rf.label));
      RETURN_IF_ERROR(Get(f, "flags", &rf.flags));
      if (rf.flags.empty()) return InvalidArgument("report grid: format '{}' has no flags", rf.label);
    } else {
      return InvalidArgument(
          "report grid: a format must be a preset name or "
          "{{\"label\", \"flags\"}}");
    }
    if (rf.label.empty()) return InvalidArgument("report grid: a format without a label");
    if (!labels.insert(rf.label).second)
      return InvalidArgument("report grid: format '{}' appears twice", rf.label);
    g.formats.push_back(std::move(rf));
  }
  for (const auto& l : g.policy_formats)
    if (!labels.count(l))
      return InvalidArgument("report grid: policy_formats names '{}', which is not a format", l);
  if (j.contains("measures")) {
    const json& m = j["measures"];
    RETURN_IF_ERROR(CheckKeys(m, "measures", {"bytes", "speed", "load", "ppl", "needle", "ruler"}));
    ReportMeasures& r = g.measures;
    // A measure left out of the object is not run.
    r.bytes = m.contains("bytes");
    r.speed = m.contains("speed");
    r.load = m.contains("load");
    r.ppl = m.contains("ppl");
    r.needle = m.contains("needle");
    r.ruler = m.contains("ruler");
    if (r.bytes) {
      const json& x = m["bytes"];
      RETURN_IF_ERROR(CheckKeys(x, "measures.bytes", {"contexts", "kv_mem_gib", "methods"}));
      RETURN_IF_ERROR(Get(x, "contexts", &r.bytes_contexts));
      RETURN_IF_ERROR(Get(x, "kv_mem_gib", &r.kv_mem_gib));
      RETURN_IF_ERROR(Positive("bytes.contexts", r.bytes_contexts));
      if (!(r.kv_mem_gib > 0)) return InvalidArgument("report grid: bytes.kv_mem_gib must be positive");
    }
    if (r.speed) {
      const json& x = m["speed"];
      RETURN_IF_ERROR(
          CheckKeys(x, "measures.speed", {"prefill", "decode", "depths", "reps", "bandwidth", "methods"}));
      RETURN_IF_ERROR(Get(x, "prefill", &r.prefill_tokens));
      RETURN_IF_ERROR(Get(x, "decode", &r.decode_tokens));
      RETURN_IF_ERROR(Get(x, "depths", &r.decode_depths));
      RETURN_IF_ERROR(Get(x, "reps", &r.speed_reps));
      RETURN_IF_ERROR(Get(x, "bandwidth", &r.bandwidth));
      if (r.decode_depths.empty()) return InvalidArgument("report grid: speed.depths is empty");
      for (int d : r.decode_depths)
        if (d < 0) return InvalidArgument("report grid: speed.depths holds {}", d);
      RETURN_IF_ERROR(Positive("speed.prefill/decode/reps",
                               std::vector<int>{r.prefill_tokens, r.decode_tokens, r.speed_reps}));
    }
    if (r.load) {
      const json& x = m["load"];
      RETURN_IF_ERROR(CheckKeys(x, "measures.load", {"clients", "requests", "prompt", "gen", "methods"}));
      RETURN_IF_ERROR(Get(x, "clients", &r.load_clients));
      RETURN_IF_ERROR(Get(x, "requests", &r.load_requests));
      RETURN_IF_ERROR(Get(x, "prompt", &r.load_prompt));
      RETURN_IF_ERROR(Get(x, "gen", &r.load_gen));
      RETURN_IF_ERROR(
          Positive("load", std::vector<int>{r.load_clients, r.load_requests, r.load_prompt, r.load_gen}));
      if (r.load_requests < r.load_clients)
        return InvalidArgument("report grid: load.requests < load.clients");
    }
    if (r.ppl) {
      const json& x = m["ppl"];
      RETURN_IF_ERROR(CheckKeys(x, "measures.ppl", {"ctx", "chunks", "policy_step", "methods"}));
      RETURN_IF_ERROR(Get(x, "ctx", &r.ppl_ctx));
      RETURN_IF_ERROR(Get(x, "chunks", &r.ppl_chunks));
      RETURN_IF_ERROR(Get(x, "policy_step", &r.ppl_policy_step));
      RETURN_IF_ERROR(Positive("ppl", std::vector<int>{r.ppl_ctx, r.ppl_chunks, r.ppl_policy_step}));
    }
    if (r.needle) {
      const json& x = m["needle"];
      RETURN_IF_ERROR(CheckKeys(x, "measures.needle", {"contexts", "depths", "methods"}));
      RETURN_IF_ERROR(Get(x, "contexts", &r.needle_contexts));
      RETURN_IF_ERROR(Get(x, "depths", &r.needle_depths));
      RETURN_IF_ERROR(Positive("needle.contexts", r.needle_contexts));
      if (r.needle_depths.empty()) return InvalidArgument("report grid: needle.depths is empty");
    }
    if (r.ruler) {
      const json& x = m["ruler"];
      RETURN_IF_ERROR(CheckKeys(x, "measures.ruler", {"tasks", "contexts", "samples", "methods"}));
      RETURN_IF_ERROR(Get(x, "tasks", &r.ruler_tasks));
      RETURN_IF_ERROR(Get(x, "contexts", &r.ruler_contexts));
      RETURN_IF_ERROR(Get(x, "samples", &r.ruler_samples));
      RETURN_IF_ERROR(Positive("ruler.contexts", r.ruler_contexts));
      if (r.ruler_tasks.empty() || r.ruler_samples < 1)
        return InvalidArgument("report grid: ruler needs tasks and samples");
    }
    for (const auto& [name, x] : m.items()) {
      if (!x.contains("methods")) continue;
      std::vector<std::string> labels;
      RETURN_IF_ERROR(Get(x, "methods", &labels));
      for (const auto& l : labels) {
        const auto methods = g.Methods();
        if (std::none_of(methods.begin(), methods.end(),
                         [&](const ReportMethod& me) { return me.Label() == l; })) {
          return InvalidArgument(
              "report grid: measures.{}.methods names '{}', "
              "which is not a method of the grid",
              name, l);
        }
      }
      r.only[name] = labels;
    }
  }
  return g;
}

json ReportGridJson(const ReportGrid& g) {
  json formats = json::array();
  for (const auto& f : g.formats) formats.push_back({{"label", f.label}, {"flags", f.flags}});
  const ReportMeasures& r = g.measures;
  json m = json::object();
  if (r.bytes) m["bytes"] = {{"contexts", r.bytes_contexts}, {"kv_mem_gib", r.kv_mem_gib}};
  if (r.speed) {
    m["speed"] = {{"prefill", r.prefill_tokens},
                  {"decode", r.decode_tokens},
                  {"depths", r.decode_depths},
                  {"reps", r.speed_reps},
                  {"bandwidth", r.bandwidth}};
  }
  if (r.load) {
    m["load"] = {{"clients", r.load_clients},
                 {"requests", r.load_requests},
                 {"prompt", r.load_prompt},
                 {"gen", r.load_gen}};
  }
  if (r.ppl) m["ppl"] = {{"ctx", r.ppl_ctx}, {"chunks", r.ppl_chunks}, {"policy_step", r.ppl_policy_step}};
  if (r.needle) m["needle"] = {{"contexts", r.needle_contexts}, {"depths", r.needle_depths}};
  if (r.ruler)
    m["ruler"] = {{"tasks", r.ruler_tasks}, {"contexts", r.ruler_contexts}, {"samples", r.ruler_samples}};
  for (const auto& [name, labels] : r.only)
    if (m.contains(name)) m[name]["methods"] = labels;
  return {{"name", g.name},         {"models", g.models},   {"formats", formats},
          {"policies", g.policies}, {"budgets", g.budgets}, {"policy_formats", g.policy_formats},
          {"measures", m},          {"threads", g.threads}, {"text", g.text}};
}

std::string ReportCell::Command() const {
  std::string s = "slimkv";
  for (const auto& a : args) {
    s += ' ';  // (not " " + ...: GCC 12 warns of a false overlap in that operator+)
    s += ShellQuote(a);
  }
  return s;
}

std::string ReportCellId(const std::vector<std::string>& args) {
  const std::string joined = Join(args, "\x1f");
  return fmt::format("{:016x}", SipHash24(joined.data(), joined.size()));
}

std::vector<ReportCell> ExpandReportGrid(const ReportGrid& g) {
  const ReportMeasures& r = g.measures;
  std::vector<ReportCell> cells;
  for (const std::string& model : g.models) {
    const double mc = ModelCost(model);
    for (const ReportMethod& method : g.Methods()) {
      auto add = [&](Measure measure, std::vector<std::string> args, double cost) {
        if (!r.Runs(measure, method.Label())) return;
        ReportCell c{.measure = measure, .model = model, .method = method, .cost = cost * mc};
        c.args = {Subcommand(measure), "-m", model};
        c.args.insert(c.args.end(), method.format.flags.begin(), method.format.flags.end());
        if (measure != Measure::kBytes) {
          c.args.push_back("-t");
          c.args.push_back(std::to_string(g.threads));
        }
        c.args.insert(c.args.end(), args.begin(), args.end());
        c.id = ReportCellId(c.args);
        cells.push_back(std::move(c));
      };
      const std::string policy = method.policy;
      const double share = method.budget;
      // --kv-budget for a context of `tokens` tokens.
      auto budget_of = [&](int64_t tokens) {
        return std::to_string(std::max<int64_t>(16, std::llround(tokens * share)));
      };
      auto fraction = [&] { return fmt::format("{:g}", share); };
      if (r.bytes) {
        std::vector<std::string> a = {"-c", JoinNumbers(r.bytes_contexts), "--kv-mem-gib",
                                      fmt::format("{:g}", r.kv_mem_gib), "--held"};
        if (method.evicts()) a.insert(a.end(), {"--kv-policy", policy, "--budget-fraction", fraction()});
        add(Measure::kBytes, a, 2);
      }
      if (r.speed) {
        std::vector<std::string> tests;
        double cost = 0;
        const int deepest = *std::max_element(r.decode_depths.begin(), r.decode_depths.end());
        if (!method.evicts()) {
          tests.push_back("pp" + std::to_string(r.prefill_tokens));
          cost += (r.speed_reps + 1) * r.prefill_tokens / 900.0;
        }
        for (int d : r.decode_depths) {
          if (method.evicts() && d != deepest) continue;
          tests.push_back(d > 0 ? fmt::format("tg{}@d{}", r.decode_tokens, d)
                                : fmt::format("tg{}", r.decode_tokens));
          cost += d / 700.0 + (r.speed_reps + 1) * r.decode_tokens / (250.0 / (1 + d / 8192.0));
        }
        std::vector<std::string> a = {"--tests", Join(tests, ","), "-r", std::to_string(r.speed_reps),
                                      "--same-context"};
        if (!r.bandwidth) a.push_back("--no-bandwidth");
        if (method.evicts()) a.insert(a.end(), {"--kv-policy", policy, "--kv-budget", budget_of(deepest)});
        add(Measure::kSpeed, a, cost + (r.bandwidth ? 3 : 0));
      }
      if (r.load && !method.evicts()) {
        add(Measure::kLoad,
            {"--clients", std::to_string(r.load_clients), "--requests", std::to_string(r.load_requests),
             "--prompt-tokens", std::to_string(r.load_prompt), "--gen-tokens", std::to_string(r.load_gen)},
            r.load_requests * (r.load_prompt / 900.0 + r.load_gen / 120.0));
      }
      if (r.ppl) {
        std::vector<std::string> a = {
            "-f", g.text, "-c", std::to_string(r.ppl_ctx), "--chunks", std::to_string(r.ppl_chunks)};
        double cost = r.ppl_chunks * r.ppl_ctx / 900.0 * 2;
        if (method.evicts()) {
          a.insert(a.end(), {"--kv-policy", policy, "--kv-budget", budget_of(r.ppl_ctx), "--step",
                             std::to_string(r.ppl_policy_step)});
          cost += r.ppl_chunks * r.ppl_ctx / 150.0 / std::sqrt(r.ppl_policy_step);
        }
        add(Measure::kPpl, a, cost);
      }
      if (r.needle) {
        std::vector<std::string> a = {"--contexts", JoinNumbers(r.needle_contexts), "--depths",
                                      JoinNumbers(r.needle_depths)};
        if (method.evicts()) a.insert(a.end(), {"--kv-policy", policy, "--budget-fraction", fraction()});
        double tokens = 0;
        for (int c : r.needle_contexts) tokens += c;
        add(Measure::kNeedle, a, static_cast<double>(r.needle_depths.size()) * (tokens / 800.0 + 32 / 150.0));
      }
      if (r.ruler) {
        std::vector<std::string> a = {"--tasks",    Join(r.ruler_tasks, ","),
                                      "--contexts", JoinNumbers(r.ruler_contexts),
                                      "--samples",  std::to_string(r.ruler_samples)};
        if (method.evicts()) a.insert(a.end(), {"--kv-policy", policy, "--budget-fraction", fraction()});
        double tokens = 0;
        for (int c : r.ruler_contexts) tokens += c;
        add(Measure::kRuler, a,
            static_cast<double>(r.ruler_samples * r.ruler_tasks.size()) * (tokens / 800.0 + 48 / 150.0 + 1));
      }
    }
  }
  return cells;
}

}  // namespace slimkv::eval
