// SVG charts for eval reports: line charts, grouped bar charts and heat maps. Plain SVG 1.1
// text, no dependency beyond fmt; every chart is a struct filled with designated
// initializers, then ToSvg() (or WriteFile()).
//
// Layout rules that keep charts readable with ~10 series and ~20 categories:
//   - the legend sits right of the plot, one entry per row, never over the data;
//   - category and column labels that do not fit their slot are rotated;
//   - bar value labels that are wider than their bar are written vertically;
//   - axes get 1-2-5 ticks (linear) or decade ticks (log; 2 and 5 too within two decades);
//   - text widths are estimated at 0.62 em per character (DejaVu Sans digits are 0.64 em,
//     the average letter narrower), so margins err on the wide side.
// Values: NaN is "no value" (a gap in a line, a missing bar, an empty cell); infinities are
// an error; on a log axis non-positive values are not drawn (a bar's label still says them).
// Charts with no series, no categories, mismatched lengths or no finite value are
// InvalidArgument, never a crash or an empty picture.
#pragma once

#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace slimkv::eval {

// One line: point i is (x[i], y[i]); x.size() == y.size() > 0.
struct LineSeries {
  std::string name;
  std::vector<double> x, y;
};

struct LineChart {
  std::string title, x_label, y_label;
  std::vector<LineSeries> series;
  bool log_x = false;  // x must then be positive
  bool log_y = false;
  // Ticks of the x axis (positions in data units) and their labels; empty: automatic
  // ticks, labels the numbers. Lets a context axis say 2K 8K 32K 128K.
  std::vector<double> x_ticks;
  std::vector<std::string> x_tick_labels;  // empty or one per tick
  int width = 880, height = 520;  // pixels; grown when the legend needs more rows

  Result<std::string> ToSvg() const;
  Status WriteFile(const std::string& path) const;
};

// One bar per category: values[c] belongs to categories[c].
struct BarSeries {
  std::string name;
  std::vector<double> values;
};

// Groups of bars along x, one group per category, one bar per series in each group.
struct BarChart {
  std::string title, x_label, y_label;
  std::vector<std::string> categories;
  std::vector<BarSeries> series;
  bool log_y = false;
  // Each bar's value printed above it (vertically when wider than the bar; left to the
  // tooltips when even that would overlap).
  bool value_labels = true;
  int width = 880, height = 520;

  Result<std::string> ToSvg() const;
  Status WriteFile(const std::string& path) const;
};

// A grid of values [rows][columns], each cell coloured on a red-yellow-green scale and
// labelled with its value (the needle-in-a-haystack picture: context along x, depth along y).
struct HeatMap {
  std::string title, x_label, y_label;
  std::string scale_label;  // caption of the colour bar ("score")
  std::vector<std::string> row_labels, column_labels;
  std::vector<std::vector<double>> values;  // [rows][columns]
  // Ends of the colour scale; NaN: the data's minimum and maximum.
  double scale_min = std::numeric_limits<double>::quiet_NaN();
  double scale_max = std::numeric_limits<double>::quiet_NaN();
  bool high_is_good = true;  // high values green (false: high values red)
  int decimals = 2;          // digits after the point in cell labels, 0..6
  // The size follows from the grid: cells grow to fit their labels.

  Result<std::string> ToSvg() const;
  Status WriteFile(const std::string& path) const;
};

// Writes `text` to `path` (replacing it); errors name the path.
Status WriteTextFile(const std::string& path, const std::string& text);
// Text for an XML or HTML attribute or element: & < > " ' as entities.
std::string XmlEscape(std::string_view s);

}  // namespace slimkv::eval
