// The report as one self-contained HTML page and as markdown (report_data.h).
#include <fmt/format.h>

#include <cctype>
#include <map>

#include "eval/report_data.h"
#include "eval/svg.h"

namespace slimkv::eval {
namespace {

using nlohmann::json;

std::string Html(std::string_view s) { return XmlEscape(s); }

// Which chart follows which table on the page.
const std::map<std::string, std::vector<std::string>> kChartsAfter = {{"bytes", {"bytes", "users"}},
                                                                      {"speed", {"speed"}},
                                                                      {"load", {"latency"}},
                                                                      {"quality", {"kl", "pareto"}},
                                                                      {"long", {"retrieval"}}};

std::string TableKind(const std::string& id) { return id.substr(0, id.find('-')); }

constexpr const char* kStyle = R"(
body { font-family: "DejaVu Sans", Helvetica, Arial, sans-serif; margin: 0 auto; max-width: 1180px; padding: 0 18px 40px;
       color: #1d2330; background: #fafbfc; }
h1 { margin: 22px 0 4px; } h2 { margin-top: 36px; border-bottom: 2px solid #d8dde6; padding-bottom: 4px; }
h3 { margin: 26px 0 6px; }
p.meta, p.caption { color: #4a5468; font-size: 14px; max-width: 1000px; }
nav a { margin-right: 14px; }
table.report { border-collapse: collapse; margin: 6px 0 4px; font-size: 14px; background: white; }
table.report th, table.report td { border: 1px solid #d8dde6; padding: 4px 9px; }
table.report th { background: #eef1f6; cursor: pointer; user-select: none; position: sticky; top: 0; }
table.report th.sorted-asc::after { content: " \25B2"; font-size: 10px; }
table.report th.sorted-desc::after { content: " \25BC"; font-size: 10px; }
td.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
a.num { color: #1f4e8c; text-decoration: none; border-bottom: 1px dotted #9bb0cc; }
a.num:hover { background: #e6eefb; }
figure.chart { margin: 14px 0; background: white; border: 1px solid #e3e7ee; display: inline-block; max-width: 100%;
               overflow-x: auto; }
figure.chart figcaption { font-size: 13px; color: #4a5468; padding: 4px 8px; }
ol.commands { font-size: 13px; padding-left: 28px; }
ol.commands li { margin: 3px 0; }
ol.commands li:target { background: #fff4c2; }
code { font-size: 12.5px; background: #eef1f6; padding: 1px 4px; border-radius: 3px; word-break: break-all; }
#js-errors:empty { display: none; }
#js-errors { color: #b00020; border: 1px solid #b00020; padding: 6px; }
)";

// Sorting by a header click; nothing is fetched. Errors are collected on the
// page so a test (and a reader) sees them.
constexpr const char* kScript = R"(
(function () {
  function key(cell) {
    var a = cell.querySelector('a.num');
    var t = (a ? a.textContent : cell.textContent).trim();
    var v = parseFloat(t.replace(/[^0-9eE.+-]/g, ''));
    return isNaN(v) ? t : v;
  }
  document.querySelectorAll('table.report').forEach(function (table) {
    table.querySelectorAll('thead th').forEach(function (th, col) {
      th.addEventListener('click', function () {
        var asc = !th.classList.contains('sorted-asc');
        table.querySelectorAll('thead th').forEach(function (h) { h.classList.remove('sorted-asc', 'sorted-desc'); });
        th.classList.add(asc ? 'sorted-asc' : 'sorted-desc');
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (r1, r2) {
          var a = key(r1.cells[col]), b = key(r2.cells[col]);
          if (typeof a !== typeof b) return typeof a === 'number' ? -1 : 1;
          return (a < b ? -1 : a > b ? 1 : 0) * (asc ? 1 : -1);
        });
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
  });
  document.body.setAttribute('data-ready', 'yes');
})();
)";

void RenderTable(std::string& out, const ReportData& d, const ReportTable& t) {
  out += fmt::format(
      "<h3 id=\"{}\">{}</h3>\n<table class=\"report\" "
      "data-table=\"{}\"><thead><tr>",
      Html(t.id), Html(t.title), Html(t.id));
  for (const auto& h : t.head) out += "<th>" + Html(h) + "</th>";
  out += "</tr></thead><tbody>\n";
  for (const auto& row : t.rows) {
    out += "<tr>";
    for (const auto& e : row) {
      if (!e.is_number) {
        out += "<td>" + Html(e.text) + "</td>";
      } else if (!e.number.ok()) {
        out += "<td class=\"n\">–</td>";
      } else {
        std::string command;
        for (const json& c : d.cells())
          if (c["id"] == e.number.cell) command = c["command"].get<std::string>();
        out += fmt::format(
            "<td class=\"n\"><a class=\"num\" href=\"#cmd-{0}\" title=\"{1}\" "
            "data-cell=\"{0}\" data-pointer=\"{2}\" "
            "data-scale=\"{3}\" data-digits=\"{4}\">{5}</a></td>",
            Html(e.number.cell), Html(command), Html(e.number.pointer), e.number.scale, e.number.digits,
            Html(e.number.Text()));
      }
    }
    out += "</tr>\n";
  }
  out += "</tbody></table>\n";
  if (!t.caption.empty()) out += "<p class=\"caption\">" + Html(t.caption) + "</p>\n";
}

std::string Anchor(const std::string& s) {
  std::string a;
  for (char c : s) a += std::isalnum(static_cast<unsigned char>(c)) ? c : '-';
  return a;
}

}  // namespace

std::string ReportChartStem(const std::string& model, const std::string& chart_id) {
  return Anchor(model) + "-" + chart_id;
}

std::string RenderReportHtml(const ReportData& d) {
  const json& j = d.results();
  const ReportGrid& g = d.grid();
  std::string out = "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n";
  out += fmt::format("<title>slimkv KV cache report: {}</title>\n", Html(g.name));
  out +=
      "<script>window.addEventListener('error', function (e) { var el = "
      "document.getElementById('js-errors'); "
      "if (el) el.textContent += e.message + '\\n'; });</script>\n";
  out += "<style>" + std::string(kStyle) + "</style></head><body>\n";
  out += "<h1>slimkv KV cache report</h1>\n<pre id=\"js-errors\"></pre>\n";
  out += fmt::format(
      "<p class=\"meta\">Grid <b>{}</b>: {} cells of {} models "
      "&times; {} methods; generated {}; {}.</p>\n",
      Html(g.name), d.cells().size(), g.models.size(), g.Methods().size(), Html(j.value("generated", "")),
      Html(j.value("machine", "")));
  out +=
      "<p class=\"meta\">Memory, speed and quality of every KV method on "
      "the same model. Each number links to "
      "the slimkv command that produced it (listed at the end, with its "
      "JSON); rerunning that command repeats it. "
      "Click a column header to sort.</p>\n<nav>";
  for (const auto& m : g.models) out += fmt::format("<a href=\"#model-{}\">{}</a>", Anchor(m), Html(m));
  out += "<a href=\"#commands\">commands</a></nav>\n";
  for (const auto& model : g.models) {
    out += fmt::format("<section id=\"model-{}\"><h2>{}</h2>\n", Anchor(model), Html(model));
    const std::vector<ReportChart> charts = ReportCharts(d, model);
    for (const ReportTable& t : ReportTables(d, model)) {
      RenderTable(out, d, t);
      auto it = kChartsAfter.find(TableKind(t.id));
      if (it == kChartsAfter.end()) continue;
      for (const auto& id : it->second) {
        for (const ReportChart& c : charts) {
          if (c.id != id) continue;
          out += fmt::format(
              "<figure class=\"chart\" id=\"chart-{}-{}\" "
              "data-chart=\"{}\">{}<figcaption>{}</figcaption>"
              "</figure>\n",
              Anchor(model), c.id, c.id, c.svg, Html(c.title));
        }
      }
    }
    out += "</section>\n";
  }
  out +=
      "<section id=\"commands\"><h2>Commands</h2>\n<p class=\"caption\">Every "
      "cell of the grid: the command "
      "(run from the checkout; the binary is build/bin/slimkv), what it "
      "measured, how long it took, and its JSON "
      "under cells/ in the report's directory.</p>\n<ol class=\"commands\">\n";
  for (const json& c : d.cells()) {
    out += fmt::format(
        "<li id=\"cmd-{0}\"><code>{1}</code> &mdash; {2}, {3}, "
        "{4}; {5:.1f} s, {6}; "
        "<a href=\"cells/{0}.json\">cells/{0}.json</a></li>\n",
        Html(c["id"].get<std::string>()), Html(c["command"].get<std::string>()),
        Html(c["model"].get<std::string>()), Html(c["method"]["label"].get<std::string>()),
        Html(c["measure"].get<std::string>()), c.value("seconds", 0.0), Html(c.value("finished", "")));
  }
  out += "</ol></section>\n<script>" + std::string(kScript) + "</script>\n</body></html>\n";
  return out;
}

std::string RenderReportMarkdown(const ReportData& d, const std::string& chart_prefix) {
  const json& j = d.results();
  const ReportGrid& g = d.grid();
  std::string out = fmt::format(
      "<!-- Written by `slimkv report`; edits are "
      "overwritten. -->\n# KV cache report: {}\n\n",
      g.name);
  out += fmt::format(
      "Generated {}; {}. {} cells ({} models × {} methods); the "
      "command of every cell is listed under "
      "each model, and `slimkv report --grid {}` repeats the "
      "whole run (cells already in its "
      "directory are reused).\n",
      j.value("generated", ""), j.value("machine", ""), d.cells().size(), g.models.size(), g.Methods().size(),
      j.value("grid_file", "GRID"));
  for (const auto& model : g.models) {
    out += "\n## " + model + "\n";
    const std::vector<ReportChart> charts = ReportCharts(d, model);
    for (const ReportTable& t : ReportTables(d, model)) {
      out += "\n### " + t.title + "\n\n" + (t.caption.empty() ? "" : t.caption + "\n\n") + "|";
      for (const auto& h : t.head) out += " " + h + " |";
      out += "\n|";
      for (size_t i = 0; i < t.head.size(); ++i)
        out += i == 0 || (i == 1 && t.id.starts_with("bytes")) ? "---|" : "---:|";
      out += "\n";
      for (const auto& row : t.rows) {
        out += "|";
        for (const auto& e : row) out += " " + (e.is_number ? e.number.Text() : e.text) + " |";
        out += "\n";
      }
      auto it = kChartsAfter.find(TableKind(t.id));
      if (it == kChartsAfter.end()) continue;
      for (const auto& id : it->second)
        for (const ReportChart& c : charts)
          if (c.id == id)
            out += fmt::format("\n![{}]({}{}.svg)\n", c.title, chart_prefix, ReportChartStem(model, c.id));
    }
    out += "\n### Commands\n\n";
    for (const json& c : d.cells()) {
      if (c["model"] != model) continue;
      out += fmt::format("- {} / {}: `{}` ({:.0f} s)\n", c["method"]["label"].get<std::string>(),
                         c["measure"].get<std::string>(), c["command"].get<std::string>(),
                         c.value("seconds", 0.0));
    }
  }
  return out;
}

}  // namespace slimkv::eval
