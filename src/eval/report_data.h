// What the report page is made of: the run's results (results.json: the grid
// and one object per cell with its command and its command's JSON), and the
// tables and charts built from them. Every number in a table keeps where it
// came from — the cell and the JSON pointer into that cell's result — so the
// page can link it to its command and a test can check it against the JSON.
#pragma once

#include <cmath>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "base/status.h"
#include "eval/report_grid.h"

namespace slimkv::eval {

// A number on the page: value = JSON value x scale, printed with `digits`
// decimals.
struct ReportNumber {
  double value = std::nan("");
  std::string cell;     // cell id ("" when derived from no single cell)
  std::string pointer;  // JSON pointer into the cell's "result"
  double scale = 1;
  int digits = 2;
  std::string suffix;  // printed after the number (" %", " ms")

  bool ok() const { return std::isfinite(value); }
  std::string Text() const;  // "12.34", "–" when missing
};

// A table cell: text, or a number with its source.
struct ReportEntry {
  std::string text;
  ReportNumber number;
  bool is_number = false;
};

struct ReportTable {
  std::string id;  // HTML id
  std::string title;
  std::string caption;  // what the numbers are, the unit
  std::vector<std::string> head;
  std::vector<std::vector<ReportEntry>> rows;
};

// A chart with its name (file stem) and its SVG.
struct ReportChart {
  std::string id;
  std::string title;
  std::string svg;
};

class ReportData {
 public:
  // InvalidArgument when the JSON is not a report's results.
  static Result<ReportData> From(const nlohmann::json& results);

  const ReportGrid& grid() const { return grid_; }
  const nlohmann::json& results() const { return json_; }
  // The cell of (model, method, measure), or nullptr when it has not run.
  const nlohmann::json* Cell(const std::string& model, const std::string& method, Measure m) const;
  // Every cell, in the grid's order, with its "id", "command", "result" ...
  const nlohmann::json& cells() const { return json_["cells"]; }

  // The value at `pointer` of a cell's result, or NaN.
  ReportNumber Number(const nlohmann::json* cell, const std::string& pointer, double scale = 1,
                      int digits = 2, std::string suffix = "") const;

 private:
  ReportGrid grid_;
  nlohmann::json json_;
};

// The measured quality of each KV format without eviction, for `slimkv plan`'s
// column: format label -> "+0.41 % / 0.0045" (ΔPPL against fp16 / mean KL),
// from the ppl cells of `model` when the results have it, else of their first
// model (*model_used says which).
std::map<std::string, std::string> QualityByFormat(const ReportData& d, const std::string& model,
                                                   std::string* model_used);

// Per model: the summary and the detailed tables.
std::vector<ReportTable> ReportTables(const ReportData& d, const std::string& model);
// Per model: the charts (bytes, users, speed, latency, quality, needle, RULER,
// Pareto), those the results hold data for.
std::vector<ReportChart> ReportCharts(const ReportData& d, const std::string& model);

// The file stem of a chart ("smollm2-135m-bytes"): the markdown links
// <prefix><stem>.svg.
std::string ReportChartStem(const std::string& model, const std::string& chart_id);

// The page: one self-contained HTML file (inline CSS, SVG and script; nothing
// fetched).
std::string RenderReportHtml(const ReportData& d);
// The same tables in markdown, the charts as files
// `<chart_prefix><model>-<chart id>.svg` (written by the caller from
// ReportCharts), linked relative to the markdown file.
std::string RenderReportMarkdown(const ReportData& d, const std::string& chart_prefix);

}  // namespace slimkv::eval
