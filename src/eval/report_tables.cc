// ReportData and the tables of the report (report_data.h).
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>

#include "eval/report_data.h"

namespace slimkv::eval {

using nlohmann::json;

std::string ReportNumber::Text() const {
  if (!ok()) return "–";
  return fmt::format("{:.{}f}{}", value, digits, suffix);
}

Result<ReportData> ReportData::From(const json& results) {
  if (!results.is_object() || !results.contains("grid") || !results.contains("cells") ||
      !results["cells"].is_array()) {
    return InvalidArgument(
        "not a report's results: an object with 'grid' and "
        "'cells' is expected");
  }
  ReportData d;
  ASSIGN_OR_RETURN(d.grid_, ParseReportGrid(results["grid"]));
  for (const json& c : results["cells"]) {
    for (const char* key : {"id", "model", "method", "measure", "command", "result"}) {
      if (!c.contains(key)) return InvalidArgument("a cell of the results has no '{}'", key);
    }
  }
  d.json_ = results;
  return d;
}

const json* ReportData::Cell(const std::string& model, const std::string& method, Measure m) const {
  for (const json& c : json_["cells"]) {
    if (c["model"] == model && c["method"]["label"] == method && c["measure"] == MeasureName(m)) return &c;
  }
  return nullptr;
}

ReportNumber ReportData::Number(const json* cell, const std::string& pointer, double scale, int digits,
                                std::string suffix) const {
  ReportNumber n{.scale = scale, .digits = digits, .suffix = std::move(suffix)};
  if (!cell) return n;
  n.cell = (*cell)["id"].get<std::string>();
  n.pointer = pointer;
  const json::json_pointer p(pointer);
  const json& result = (*cell)["result"];
  if (result.contains(p) && result[p].is_number()) n.value = result[p].get<double>() * scale;
  return n;
}

namespace {

ReportEntry Text(std::string s) { return {.text = std::move(s)}; }
ReportEntry Num(ReportNumber n) { return {.number = std::move(n), .is_number = true}; }

std::string Ctx(int64_t tokens) {
  return tokens >= 1024 && tokens % 1024 == 0 ? fmt::format("{}K", tokens / 1024) : std::to_string(tokens);
}

// Index of the bench test named `name` in a speed cell's result, or -1.
int TestIndex(const json* cell, const std::string& name) {
  if (!cell) return -1;
  const json& tests = (*cell)["result"].value("tests", json::array());
  for (size_t i = 0; i < tests.size(); ++i)
    if (tests[i].value("test", "") == name) return static_cast<int>(i);
  return -1;
}

std::string DecodeTest(const ReportMeasures& m, int depth) {
  return depth > 0 ? fmt::format("tg{}@d{}", m.decode_tokens, depth) : fmt::format("tg{}", m.decode_tokens);
}

// The bytes context the summary shows: 2K when measured, else the middle one.
size_t SummaryBytesContext(const ReportMeasures& m) {
  for (size_t i = 0; i < m.bytes_contexts.size(); ++i)
    if (m.bytes_contexts[i] == 2048) return i;
  return m.bytes_contexts.size() / 2;
}

}  // namespace

std::map<std::string, std::string> QualityByFormat(const ReportData& d, const std::string& model,
                                                   std::string* model_used) {
  const auto& models = d.grid().models;
  *model_used = std::find(models.begin(), models.end(), model) != models.end() ? model : models.front();
  std::map<std::string, std::string> q;
  for (const ReportMethod& me : d.grid().Methods()) {
    if (me.evicts()) continue;
    const json* c = d.Cell(*model_used, me.Label(), Measure::kPpl);
    const ReportNumber delta = d.Number(c, "/ppl_delta", 100, 2), kl = d.Number(c, "/mean_kl", 1, 4);
    if (delta.ok() && kl.ok()) {
      q[me.Label()] = fmt::format("{:+.2f} % / {:.4f}", delta.value, kl.value);
    } else if (d.Number(c, "/ppl").ok() && !delta.ok()) {
      q[me.Label()] = "reference";  // the fp16 cache is what the others are compared with
    }
  }
  return q;
}

std::vector<ReportTable> ReportTables(const ReportData& d, const std::string& model) {
  const ReportGrid& g = d.grid();
  const ReportMeasures& m = g.measures;
  const std::vector<ReportMethod> methods = g.Methods();
  std::vector<ReportTable> tables;
  const std::string sfx = "-" + model;

  // Summary.
  {
    ReportTable t{.id = "summary" + sfx, .title = "Summary"};
    t.head = {"method"};
    const size_t bi = SummaryBytesContext(m);
    if (m.bytes) {
      t.head.push_back(fmt::format("B/token @ {}", Ctx(m.bytes_contexts[bi])));
      t.head.push_back(fmt::format("users @ {}", Ctx(m.bytes_contexts.back())));
    }
    const int deepest = m.speed ? *std::max_element(m.decode_depths.begin(), m.decode_depths.end()) : 0;
    if (m.speed) t.head.push_back(fmt::format("decode tok/s @ {}", Ctx(deepest)));
    if (m.ppl) t.head.insert(t.head.end(), {"ΔPPL", "KL (nats)", "top-1"});
    if (m.needle) t.head.push_back("needle");
    if (m.ruler) t.head.push_back("RULER");
    t.caption = fmt::format(
        "Bytes per token as held and users in {:g} GiB of "
        "KV memory; decode speed at the deepest "
        "context; perplexity change, mean KL and top-1 "
        "agreement against the fp16 cache on the "
        "same windows; needle and RULER-style accuracy "
        "(means over their grids). Every number links "
        "to the command that produced it.",
        m.kv_mem_gib);
    for (const ReportMethod& me : methods) {
      const std::string label = me.Label();
      std::vector<ReportEntry> row = {Text(label)};
      if (m.bytes) {
        const json* c = d.Cell(model, label, Measure::kBytes);
        row.push_back(Num(d.Number(c, fmt::format("/rows/0/held/{}/per_token/total", bi), 1, 0)));
        row.push_back(
            Num(d.Number(c, fmt::format("/rows/0/held/{}/users", m.bytes_contexts.size() - 1), 1, 0)));
      }
      if (m.speed) {
        const json* c = d.Cell(model, label, Measure::kSpeed);
        const int i = TestIndex(c, DecodeTest(m, deepest));
        row.push_back(Num(d.Number(i >= 0 ? c : nullptr, fmt::format("/tests/{}/tokens_per_s", i), 1, 1)));
      }
      if (m.ppl) {
        const json* c = d.Cell(model, label, Measure::kPpl);
        row.push_back(Num(d.Number(c, "/ppl_delta", 100, 2, " %")));
        row.push_back(Num(d.Number(c, "/mean_kl", 1, 4)));
        row.push_back(Num(d.Number(c, "/top1_agreement", 100, 1, " %")));
      }
      if (m.needle)
        row.push_back(Num(d.Number(d.Cell(model, label, Measure::kNeedle), "/accuracy", 100, 0, " %")));
      if (m.ruler)
        row.push_back(Num(d.Number(d.Cell(model, label, Measure::kRuler), "/mean_score", 100, 0, " %")));
      t.rows.push_back(std::move(row));
    }
    tables.push_back(std::move(t));
  }

  if (m.bytes) {
    ReportTable t{.id = "bytes" + sfx, .title = "Bytes per token as held"};
    t.head = {"method", "context", "data",        "metadata", "fp16 window",
              "waste",  "total",   "tokens held", "users"};
    t.caption = fmt::format(
        "What one sequence holds in a real cache after a "
        "prompt of that many tokens, per token of "
        "context (slimkv plan --held): codes, scales and "
        "zero points, the fp16 residual window, "
        "allocated slots no token fills; token slots held "
        "per layer and KV head; sequences that "
        "fit in {:g} GiB.",
        m.kv_mem_gib);
    for (const ReportMethod& me : methods) {
      if (!m.Runs(Measure::kBytes, me.Label())) continue;
      const json* c = d.Cell(model, me.Label(), Measure::kBytes);
      for (size_t i = 0; i < m.bytes_contexts.size(); ++i) {
        const std::string p = fmt::format("/rows/0/held/{}/", i);
        t.rows.push_back(
            {Text(me.Label()), Text(Ctx(m.bytes_contexts[i])), Num(d.Number(c, p + "per_token/data", 1, 1)),
             Num(d.Number(c, p + "per_token/meta", 1, 1)), Num(d.Number(c, p + "per_token/residual", 1, 1)),
             Num(d.Number(c, p + "per_token/waste", 1, 1)), Num(d.Number(c, p + "per_token/total", 1, 1)),
             Num(d.Number(c, p + "slots", 1, 0)), Num(d.Number(c, p + "users", 1, 0))});
      }
    }
    tables.push_back(std::move(t));
  }

  if (m.speed) {
    ReportTable t{.id = "speed" + sfx, .title = "Prefill and decode speed"};
    t.head = {"method", fmt::format("pp{} tok/s", m.prefill_tokens)};
    for (int dpt : m.decode_depths) t.head.push_back(fmt::format("decode @ {} tok/s", Ctx(dpt)));
    if (m.bandwidth) {
      for (int dpt : m.decode_depths) t.head.push_back(fmt::format("@ {} of bandwidth", Ctx(dpt)));
    }
    t.caption = fmt::format(
        "slimkv bench --same-context: prefill of {} tokens, and {} "
        "decode steps after a context of "
        "each depth (mean of {} repetitions, after a warm-up); the "
        "share of the memory bandwidth "
        "measured at the start of the same run that a decode "
        "step's weight and KV bytes make. "
        "Methods with eviction decode at the deepest context only.",
        m.prefill_tokens, m.decode_tokens, m.speed_reps);
    for (const ReportMethod& me : methods) {
      if (!m.Runs(Measure::kSpeed, me.Label())) continue;
      const json* c = d.Cell(model, me.Label(), Measure::kSpeed);
      std::vector<ReportEntry> row = {Text(me.Label())};
      const int pi = TestIndex(c, "pp" + std::to_string(m.prefill_tokens));
      row.push_back(Num(d.Number(pi >= 0 ? c : nullptr, fmt::format("/tests/{}/tokens_per_s", pi), 1, 1)));
      for (int dpt : m.decode_depths) {
        const int i = TestIndex(c, DecodeTest(m, dpt));
        row.push_back(Num(d.Number(i >= 0 ? c : nullptr, fmt::format("/tests/{}/tokens_per_s", i), 1, 1)));
      }
      if (m.bandwidth) {
        for (int dpt : m.decode_depths) {
          const int i = TestIndex(c, DecodeTest(m, dpt));
          row.push_back(
              Num(d.Number(i >= 0 ? c : nullptr, fmt::format("/tests/{}/bandwidth_share", i), 100, 0, " %")));
        }
      }
      t.rows.push_back(std::move(row));
    }
    tables.push_back(std::move(t));
  }

  if (m.load) {
    ReportTable t{.id = "load" + sfx, .title = "Latency under load"};
    t.head = {"method", "TTFT p50", "TTFT p95", "ITL p50", "ITL p95", "generated tok/s"};
    t.caption = fmt::format(
        "slimkv bench --clients {}: {} requests of {} "
        "random prompt tokens and {} generated tokens "
        "through the serving scheduler, {} in flight at "
        "all times; milliseconds.",
        m.load_clients, m.load_requests, m.load_prompt, m.load_gen, m.load_clients);
    for (const ReportMethod& me : methods) {
      if (me.evicts() || !m.Runs(Measure::kLoad, me.Label())) continue;
      const json* c = d.Cell(model, me.Label(), Measure::kLoad);
      t.rows.push_back(
          {Text(me.Label()), Num(d.Number(c, "/load/ttft_p50", 1000, 1)),
           Num(d.Number(c, "/load/ttft_p95", 1000, 1)), Num(d.Number(c, "/load/itl_p50", 1000, 1)),
           Num(d.Number(c, "/load/itl_p95", 1000, 1)), Num(d.Number(c, "/load/gen_tokens_per_s", 1, 1))});
    }
    tables.push_back(std::move(t));
  }

  if (m.ppl) {
    ReportTable t{.id = "quality" + sfx, .title = "Perplexity, KL and top-1 against fp16"};
    t.head = {"method", "PPL", "±", "fp16 PPL", "ΔPPL", "mean KL (nats)", "top-1 agreement"};
    t.caption = fmt::format(
        "slimkv ppl -c {} --chunks {}: llama.cpp's method "
        "(second half of each window scored); the "
        "fp16 cache runs the same windows. With eviction "
        "the window is fed {} tokens per step, "
        "the policy keeping its share of the window.",
        m.ppl_ctx, m.ppl_chunks, m.ppl_policy_step);
    for (const ReportMethod& me : methods) {
      if (!m.Runs(Measure::kPpl, me.Label())) continue;
      const json* c = d.Cell(model, me.Label(), Measure::kPpl);
      t.rows.push_back({Text(me.Label()), Num(d.Number(c, "/ppl", 1, 4)),
                        Num(d.Number(c, "/ppl_stderr", 1, 4)), Num(d.Number(c, "/base_ppl", 1, 4)),
                        Num(d.Number(c, "/ppl_delta", 100, 3, " %")), Num(d.Number(c, "/mean_kl", 1, 6)),
                        Num(d.Number(c, "/top1_agreement", 100, 2, " %"))});
    }
    tables.push_back(std::move(t));
  }

  if (m.needle || m.ruler) {
    ReportTable t{.id = "long" + sfx, .title = "Long-context retrieval"};
    t.head = {"method"};
    if (m.needle)
      for (int c : m.needle_contexts) t.head.push_back(fmt::format("needle @ {}", Ctx(c)));
    if (m.ruler)
      for (const auto& task : m.ruler_tasks) t.head.push_back("RULER " + task);
    t.caption = "Needle in a haystack (the needlehaystack package's needle, depths " +
                fmt::format("{}", fmt::join(m.needle_depths, "/")) +
                " %): share found. RULER-style tasks generated from the eval text with "
                "a fixed seed (mk: multi-key "
                "needles, mv: multi-value, vt: variable tracking, cwe: common words): "
                "mean share of the expected "
                "strings in the answer.";
    for (const ReportMethod& me : methods) {
      std::vector<ReportEntry> row = {Text(me.Label())};
      const json* nc = d.Cell(model, me.Label(), Measure::kNeedle);
      if (m.needle)
        for (int c : m.needle_contexts)
          row.push_back(Num(d.Number(nc, fmt::format("/accuracy_by_context/{}", c), 100, 0, " %")));
      const json* rc = d.Cell(model, me.Label(), Measure::kRuler);
      if (m.ruler)
        for (const auto& task : m.ruler_tasks)
          row.push_back(Num(d.Number(rc, "/task_scores/" + task, 100, 0, " %")));
      t.rows.push_back(std::move(row));
    }
    tables.push_back(std::move(t));
  }
  return tables;
}

}  // namespace slimkv::eval
