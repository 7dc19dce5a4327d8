// The charts of the report (report_data.h), drawn by eval/svg.h.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "eval/report_data.h"
#include "eval/svg.h"

namespace slimkv::eval {
namespace {

using nlohmann::json;

std::string Ctx(int64_t tokens) {
  return tokens >= 1024 && tokens % 1024 == 0 ? fmt::format("{}K", tokens / 1024) : std::to_string(tokens);
}

// A value of a cell's result, NaN when missing.
double At(const json* cell, const std::string& pointer) {
  if (!cell) return std::nan("");
  const json::json_pointer p(pointer);
  const json& r = (*cell)["result"];
  return r.contains(p) && r[p].is_number() ? r[p].get<double>() : std::nan("");
}

double TestValue(const json* cell, const std::string& test, const char* field) {
  if (!cell) return std::nan("");
  for (const json& t : (*cell)["result"].value("tests", json::array()))
    if (t.value("test", "") == test && t.contains(field)) return t[field].get<double>();
  return std::nan("");
}

bool AnyFinite(const std::vector<BarSeries>& series) {
  for (const auto& s : series)
    for (double v : s.values)
      if (std::isfinite(v)) return true;
  return false;
}

void Add(std::vector<ReportChart>* out, const std::string& id, const std::string& title,
         Result<std::string> svg) {
  if (svg.ok()) out->push_back({id, title, std::move(*svg)});
}

}  // namespace

std::vector<ReportChart> ReportCharts(const ReportData& d, const std::string& model) {
  const ReportGrid& g = d.grid();
  const ReportMeasures& m = g.measures;
  const std::vector<ReportMethod> methods = g.Methods();
  std::vector<std::string> methods_all,
      plain_all;  // every method; those without eviction
  for (const auto& me : methods) {
    methods_all.push_back(me.Label());
    if (!me.evicts()) plain_all.push_back(me.Label());
  }
  const std::vector<std::string>& labels = methods_all;
  // The methods a measure ran for: its chart's categories.
  auto ran = [&](Measure me, const std::vector<std::string>& from) {
    std::vector<std::string> out;
    for (const auto& l : from)
      if (m.Runs(me, l)) out.push_back(l);
    return out;
  };
  std::vector<ReportChart> charts;

  if (m.bytes) {
    const std::vector<std::string> labels = ran(Measure::kBytes, methods_all);
    BarChart bytes{.title = "Bytes per token as held, " + model,
                   .x_label = "method",
                   .y_label = "bytes per token",
                   .categories = labels};
    BarChart users{.title = fmt::format("Sequences in {:g} GiB of KV memory, {}", m.kv_mem_gib, model),
                   .x_label = "method",
                   .y_label = "users",
                   .categories = labels,
                   .log_y = true};
    for (size_t i = 0; i < m.bytes_contexts.size(); ++i) {
      BarSeries b{.name = Ctx(m.bytes_contexts[i]) + " tokens"}, u{.name = b.name};
      for (const auto& l : labels) {
        const json* c = d.Cell(model, l, Measure::kBytes);
        b.values.push_back(At(c, fmt::format("/rows/0/held/{}/per_token/total", i)));
        u.values.push_back(At(c, fmt::format("/rows/0/held/{}/users", i)));
      }
      bytes.series.push_back(std::move(b));
      users.series.push_back(std::move(u));
    }
    if (AnyFinite(bytes.series)) {
      Add(&charts, "bytes", bytes.title, bytes.ToSvg());
      Add(&charts, "users", users.title, users.ToSvg());
    }
  }

  if (m.speed) {
    const std::vector<std::string> labels = ran(Measure::kSpeed, methods_all);
    BarChart speed{.title = "Prefill and decode tokens/s, " + model,
                   .x_label = "method",
                   .y_label = "tokens/s",
                   .categories = labels};
    BarSeries pp{.name = fmt::format("prefill {}", m.prefill_tokens)};
    for (const auto& l : labels)
      pp.values.push_back(TestValue(d.Cell(model, l, Measure::kSpeed), fmt::format("pp{}", m.prefill_tokens),
                                    "tokens_per_s"));
    speed.series.push_back(std::move(pp));
    for (int dpt : m.decode_depths) {
      BarSeries s{.name = "decode @ " + Ctx(dpt)};
      const std::string test =
          dpt > 0 ? fmt::format("tg{}@d{}", m.decode_tokens, dpt) : fmt::format("tg{}", m.decode_tokens);
      for (const auto& l : labels)
        s.values.push_back(TestValue(d.Cell(model, l, Measure::kSpeed), test, "tokens_per_s"));
      speed.series.push_back(std::move(s));
    }
    if (AnyFinite(speed.series)) Add(&charts, "speed", speed.title, speed.ToSvg());
  }

  if (m.load) {
    const std::vector<std::string> plain = ran(Measure::kLoad, plain_all);
    BarChart lat{.title = fmt::format("Latency with {} clients, {}", m.load_clients, model),
                 .x_label = "method",
                 .y_label = "milliseconds",
                 .categories = plain};
    BarSeries ttft{.name = "TTFT p50"}, ttft95{.name = "TTFT p95"}, itl{.name = "ITL p50"},
        itl95{.name = "ITL p95"};
    for (const auto& l : plain) {
      const json* c = d.Cell(model, l, Measure::kLoad);
      ttft.values.push_back(1000 * At(c, "/load/ttft_p50"));
      ttft95.values.push_back(1000 * At(c, "/load/ttft_p95"));
      itl.values.push_back(1000 * At(c, "/load/itl_p50"));
      itl95.values.push_back(1000 * At(c, "/load/itl_p95"));
    }
    lat.series = {ttft, ttft95, itl, itl95};
    if (AnyFinite(lat.series)) Add(&charts, "latency", lat.title, lat.ToSvg());
  }

  if (m.ppl) {
    const std::vector<std::string> labels = ran(Measure::kPpl, methods_all);
    BarChart kl{.title = "Mean KL divergence from the fp16 cache, " + model,
                .x_label = "method",
                .y_label = "KL (nats per token)",
                .categories = labels,
                .log_y = true};
    BarSeries s{.name = "KL(fp16 || method)"};
    for (const auto& l : labels) s.values.push_back(At(d.Cell(model, l, Measure::kPpl), "/mean_kl"));
    kl.series.push_back(std::move(s));
    if (AnyFinite(kl.series)) Add(&charts, "kl", kl.title, kl.ToSvg());
  }

  if (m.needle || m.ruler) {
    HeatMap h{.title = "Long-context retrieval, " + model,
              .x_label = "task",
              .y_label = "method",
              .scale_label = "share found",
              .row_labels = labels,
              .scale_min = 0,
              .scale_max = 1,
              .decimals = 2};
    if (m.needle)
      for (int c : m.needle_contexts) h.column_labels.push_back("needle " + Ctx(c));
    if (m.ruler)
      for (const auto& t : m.ruler_tasks) h.column_labels.push_back(t);
    for (const auto& l : labels) {
      std::vector<double> row;
      if (m.needle)
        for (int c : m.needle_contexts)
          row.push_back(At(d.Cell(model, l, Measure::kNeedle), fmt::format("/accuracy_by_context/{}", c)));
      if (m.ruler)
        for (const auto& t : m.ruler_tasks)
          row.push_back(At(d.Cell(model, l, Measure::kRuler), "/task_scores/" + t));
      h.values.push_back(std::move(row));
    }
    Add(&charts, "retrieval", h.title, h.ToSvg());
  }

  // Quality against the bits an element really costs: held bytes x 8 / (tokens
  // x elements).
  if (m.bytes && m.ppl) {
    size_t bi = m.bytes_contexts.size() / 2;
    for (size_t i = 0; i < m.bytes_contexts.size(); ++i)
      if (m.bytes_contexts[i] == 2048) bi = i;
    LineChart p{.title = fmt::format("Quality against true bits per element at {} tokens, {}",
                                     Ctx(m.bytes_contexts[bi]), model),
                .x_label = "bits per K/V element as held (data, metadata, fp16 window, waste)",
                .y_label = "mean KL from fp16 (nats)",
                .log_y = true};
    std::vector<std::pair<double, double>> points;  // (bits, KL)
    for (const auto& l : labels) {
      const json* bc = d.Cell(model, l, Measure::kBytes);
      const double elems = bc ? (*bc)["result"].value("elements_per_token", 0.0) : 0.0;
      const double bits =
          elems > 0 ? 8 * At(bc, fmt::format("/rows/0/held/{}/per_token/total", bi)) / elems : std::nan("");
      const double kl = At(d.Cell(model, l, Measure::kPpl), "/mean_kl");
      if (!std::isfinite(bits) || !(kl > 0)) continue;
      points.emplace_back(bits, kl);
      p.series.push_back({.name = l, .x = {bits}, .y = {kl}});
    }
    // The front: no other method has both fewer bits and a lower KL.
    std::sort(points.begin(), points.end());
    LineSeries front{.name = "Pareto front"};
    double best = INFINITY;
    for (const auto& [bits, kl] : points) {
      if (kl < best) {
        front.x.push_back(bits);
        front.y.push_back(kl);
        best = kl;
      }
    }
    if (!front.x.empty()) {
      p.series.insert(p.series.begin(), std::move(front));
      Add(&charts, "pareto", p.title, p.ToSvg());
    }
  }
  return charts;
}

}  // namespace slimkv::eval
