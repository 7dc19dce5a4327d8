#include "eval/svg.h"

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string_view>

namespace slimkv::eval {
namespace {

constexpr double kEm = 0.62;  // estimated width of one character, in em (see svg.h)
constexpr double kTitleFont = 17, kLabelFont = 13, kTickFont = 12, kLegendFont = 12;
constexpr double kValueFont = 10.5, kCellFont = 12;
constexpr double kLegendRow = 20;       // pixels per legend entry
constexpr size_t kMaxLegendChars = 40;  // longer series names are cut with an ellipsis
constexpr int kMaxPixels = 20000;
constexpr double kPi = 3.14159265358979323846;

// Tableau 10: distinguishable, and readable for the common colour-vision
// deficiencies.
constexpr const char* kPalette[] = {"#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f",
                                    "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"};
constexpr int kPaletteSize = 10;
// Past ten series, lines repeat the colours with these dash patterns (bars get
// lighter).
constexpr const char* kDashes[] = {"", "7 4", "2 3", "9 3 2 3"};

const char* SeriesColor(size_t i) { return kPalette[i % kPaletteSize]; }
const char* SeriesDash(size_t i) { return kDashes[(i / kPaletteSize) % 4]; }

size_t CodePoints(std::string_view s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}
double TextWidth(std::string_view s, double font) { return static_cast<double>(CodePoints(s)) * kEm * font; }

std::string Escape(std::string_view s) { return XmlEscape(s); }

// Cuts a legend name to kMaxLegendChars code points.
std::string Elide(const std::string& s) {
  if (CodePoints(s) <= kMaxLegendChars) return s;
  size_t n = 0, i = 0;
  for (; i < s.size(); ++i) {
    if ((static_cast<unsigned char>(s[i]) & 0xC0) != 0x80 && ++n > kMaxLegendChars - 1) break;
  }
  return s.substr(0, i) + "\u2026";
}

std::string StripZeros(std::string s) {
  if (s.find('.') == std::string::npos || s.find('e') != std::string::npos) return s;
  while (s.back() == '0') s.pop_back();
  if (s.back() == '.') s.pop_back();
  return s;
}

// 131072 -> "131k", 2500000 -> "2.5M": three significant digits past 10^4.
std::string Compact(double v) {
  const double a = std::abs(v);
  static constexpr struct {
    double unit;
    const char* suffix;
  } kUnits[] = {{1e12, "T"}, {1e9, "G"}, {1e6, "M"}, {1e3, "k"}};
  if (a >= 1e4) {
    for (const auto& u : kUnits) {
      if (a >= u.unit)
        return StripZeros(
                   fmt::format("{:.{}f}", v / u.unit, a / u.unit >= 100 ? 0 : (a / u.unit >= 10 ? 1 : 2))) +
               u.suffix;
    }
  }
  if (a >= 100 || v == std::round(v)) return fmt::format("{:.0f}", v);
  return StripZeros(fmt::format("{:.3g}", v));
}

// A bar's value: exact integers below a million, else three significant digits.
std::string FormatValue(double v) {
  if (std::abs(v) < 1e6 && v == std::round(v)) return fmt::format("{:.0f}", v);
  return Compact(v);
}

std::string Fixed(double v, int decimals) {
  std::string s = fmt::format("{:.{}f}", v, decimals);
  if (s.starts_with("-") && s.find_first_not_of("-0.") == std::string::npos) s.erase(0, 1);  // "-0.00"
  return s;
}

// Pixel coordinates with one decimal: enough for any screen, and short.
std::string Px(double v) { return StripZeros(fmt::format("{:.1f}", v)); }

struct Axis {
  double lo = 0, hi = 1;
  bool log = false;
  double step = 0;  // linear: distance between ticks
  std::vector<double> ticks;
  std::vector<std::string> labels;

  double Frac(double v) const {
    if (log) return (std::log10(v) - std::log10(lo)) / (std::log10(hi) - std::log10(lo));
    return (v - lo) / (hi - lo);
  }
  bool Drawable(double v) const { return std::isfinite(v) && (!log || v > 0); }
};

double NiceStep(double raw) {
  const double e = std::pow(10.0, std::floor(std::log10(raw)));
  const double f = raw / e;
  return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 2.5 ? 2.5 : f <= 5 ? 5 : 10) * e;
}

void LabelLinear(Axis& a) {
  const double big = std::max(std::abs(a.lo), std::abs(a.hi));
  int decimals = std::max(0, static_cast<int>(-std::floor(std::log10(a.step) + 1e-9)));
  if (std::abs(a.step / std::pow(10.0, -decimals) - std::round(a.step / std::pow(10.0, -decimals))) > 1e-6)
    ++decimals;
  a.labels.clear();
  for (double t : a.ticks) a.labels.push_back(big >= 1e4 && a.step >= 1000 ? Compact(t) : Fixed(t, decimals));
}

Axis LinearAxis(double lo, double hi, bool include_zero) {
  if (include_zero) {
    lo = std::min(lo, 0.0);
    hi = std::max(hi, 0.0);
  }
  if (hi == lo) {
    const double d = lo == 0 ? 1 : std::abs(lo) * 0.5;
    hi += d;
    if (!(include_zero && lo == 0)) lo -= d;
  }
  Axis a;
  a.step = NiceStep((hi - lo) / 6);
  const double k_lo = std::floor(lo / a.step + 1e-9), k_hi = std::ceil(hi / a.step - 1e-9);
  a.lo = k_lo * a.step;
  a.hi = k_hi * a.step;
  for (double k = k_lo; k <= k_hi; ++k) a.ticks.push_back(k * a.step);
  LabelLinear(a);
  return a;
}

std::string LogLabel(int e, int mantissa) {
  const double v = mantissa * std::pow(10.0, e);
  if (e >= 0) return Compact(v);
  if (e >= -4) return Fixed(v, -e);
  return fmt::format("{}e{}", mantissa, e);
}

// Decades from 10^a to 10^b (b > a).
Axis LogAxisDecades(int a, int b) {
  Axis ax;
  ax.log = true;
  ax.lo = std::pow(10.0, a);
  ax.hi = std::pow(10.0, b);
  const int every = std::max(1, (b - a + 9) / 10);  // at most ~10 labelled decades
  for (int e = a; e <= b; ++e) {
    if ((e - a) % every == 0) {
      ax.ticks.push_back(std::pow(10.0, e));
      ax.labels.push_back(LogLabel(e, 1));
    }
    if (b - a <= 2 && e < b) {
      for (int m : {2, 5}) {
        ax.ticks.push_back(m * std::pow(10.0, e));
        ax.labels.push_back(LogLabel(e, m));
      }
    }
  }
  return ax;
}

Axis LogAxis(double lo, double hi) {
  const int a = static_cast<int>(std::floor(std::log10(lo) + 1e-9));
  int b = static_cast<int>(std::ceil(std::log10(hi) - 1e-9));
  if (b <= a) b = a + 1;
  return LogAxisDecades(a, b);
}

// A log axis that ends where the data ends (with a little room): lines need no
// baseline, and rounding 512..131072 out to whole decades would waste half the
// plot.
Axis TightLogAxis(double lo, double hi) {
  double llo = std::log10(lo), lhi = std::log10(hi);
  const double pad = lhi > llo ? 0.04 * (lhi - llo) : 0.5;
  llo -= pad;
  lhi += pad;
  Axis ax;
  ax.log = true;
  ax.lo = std::pow(10.0, llo);
  ax.hi = std::pow(10.0, lhi);
  const double span = lhi - llo;
  const std::vector<int> mantissas = span > 2.5 ? std::vector<int>{1}
                                     : span > 1 ? std::vector<int>{1, 2, 5}
                                                : std::vector<int>{1, 2, 3, 4, 5, 6, 7, 8, 9};
  const int first = static_cast<int>(std::floor(llo)), last = static_cast<int>(std::ceil(lhi));
  const int every = std::max(1, static_cast<int>(std::ceil(span / 10)));
  for (int e = first; e <= last; ++e) {
    if ((e - first) % every != 0) continue;
    for (int m : mantissas) {
      const double v = m * std::pow(10.0, e);
      if (v < ax.lo * (1 - 1e-9) || v > ax.hi * (1 + 1e-9)) continue;
      ax.ticks.push_back(v);
      ax.labels.push_back(LogLabel(e, m));
    }
  }
  return ax;
}

// Grows the axis upwards until `v` sits at most at `frac` of its height.
void ExtendTop(Axis& a, double v, double frac) {
  if (!a.Drawable(v)) return;
  frac = std::max(frac, 0.3);
  for (int i = 0; i < 40 && a.Frac(v) > frac; ++i) {
    if (a.log) {
      a = LogAxisDecades(static_cast<int>(std::lround(std::log10(a.lo))),
                         static_cast<int>(std::lround(std::log10(a.hi))) + 1);
    } else {
      a.hi += a.step;
      a.ticks.push_back(a.hi);
      LabelLinear(a);
    }
  }
}

struct Range {
  double lo = INFINITY, hi = -INFINITY;
  void Add(double v) {
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  bool empty() const { return lo > hi; }
};

// Finite values (positive ones for a log axis); InvalidArgument for an
// infinity.
Status Collect(const std::vector<double>& values, bool log, std::string_view what, Range* r) {
  for (double v : values) {
    if (std::isinf(v)) return InvalidArgument("{} holds an infinite value", what);
    if (std::isnan(v) || (log && v <= 0)) continue;
    r->Add(v);
  }
  return Status::Ok();
}

Status CheckSize(int width, int height) {
  if (width < 200 || height < 150 || width > kMaxPixels || height > kMaxPixels) {
    return InvalidArgument("chart size {}x{} pixels is outside [200, {}] x [150, {}]", width, height,
                           kMaxPixels, kMaxPixels);
  }
  return Status::Ok();
}

void Begin(std::string& out, double w, double h) {
  out += fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" "
      "height=\"{1}\" viewBox=\"0 0 {0} {1}\" "
      "font-family=\"DejaVu Sans, Helvetica, Arial, "
      "sans-serif\" fill=\"#222\">\n",
      Px(w), Px(h));
  out += fmt::format("<rect width=\"{}\" height=\"{}\" fill=\"white\"/>\n", Px(w), Px(h));
}

void Text(std::string& out, double x, double y, std::string_view s, double font, std::string_view anchor,
          std::string_view extra = "") {
  out += fmt::format(
      "<text x=\"{}\" y=\"{}\" font-size=\"{}\" "
      "text-anchor=\"{}\"{}>{}</text>\n",
      Px(x), Px(y), Px(font), anchor, extra, Escape(s));
}

// The title cut into lines at spaces so that each fits `width` less a margin (a
// word longer than that keeps its own line).
std::vector<std::string> TitleLines(const std::string& title, double width) {
  std::vector<std::string> lines;
  if (title.empty()) return lines;
  const double room = width - 24;
  std::string line;
  size_t i = 0;
  while (i < title.size()) {
    size_t j = title.find(' ', i);
    if (j == std::string::npos) j = title.size();
    const std::string word = title.substr(i, j - i);
    const std::string joined = line.empty() ? word : line + " " + word;
    if (!line.empty() && TextWidth(joined, kTitleFont) > room) {
      lines.push_back(line);
      line = word;
    } else {
      line = joined;
    }
    i = j + 1;
  }
  if (!line.empty()) lines.push_back(line);
  return lines;
}

constexpr double kTitleLine = 22;  // pixels between title lines

void Title(std::string& out, double width, const std::string& title) {
  const std::vector<std::string> lines = TitleLines(title, width);
  for (size_t i = 0; i < lines.size(); ++i) {
    Text(out, width / 2, 28 + kTitleLine * static_cast<double>(i), lines[i], kTitleFont, "middle",
         " font-weight=\"bold\"");
  }
}

// An axis label that says when its axis is logarithmic.
std::string AxisLabel(const std::string& label, bool log) {
  if (!log || label.find("log") != std::string::npos) return label;
  return label.empty() ? "log scale" : label + " (log scale)";
}

// The plot area in pixels.
struct Frame {
  double left = 0, top = 0, right = 0, bottom = 0;
  double Width() const { return right - left; }
  double Height() const { return bottom - top; }
  double Y(const Axis& a, double v) const { return bottom - a.Frac(v) * Height(); }
  double X(const Axis& a, double v) const { return left + a.Frac(v) * Width(); }
};

double TitleSpace(const std::string& title, double width) {
  const size_t lines = TitleLines(title, width).size();
  return lines == 0 ? 16 : 50 + kTitleLine * static_cast<double>(lines - 1);
}

double MaxWidth(const std::vector<std::string>& labels, double font) {
  double w = 0;
  for (const auto& l : labels) w = std::max(w, TextWidth(l, font));
  return w;
}

double LegendWidth(const std::vector<std::string>& names) {
  if (names.empty()) return 0;
  std::vector<std::string> cut;
  for (const auto& n : names) cut.push_back(Elide(n));
  return 16 + 26 + MaxWidth(cut, kLegendFont) + 12;
}

// Left margin for the y axis: its label and its tick labels.
double YAxisSpace(const Axis& y, const std::string& y_label) {
  return 12 + (y_label.empty() ? 0 : kLabelFont + 10) + MaxWidth(y.labels, kTickFont) + 10;
}

// Horizontal grid lines, the y tick labels and the y label.
void DrawYAxis(std::string& out, const Frame& f, const Axis& y, const std::string& y_label) {
  out += "<g stroke=\"#e3e3e3\" stroke-width=\"1\">\n";
  for (double t : y.ticks) {
    out += fmt::format("<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\"/>\n", Px(f.left), Px(f.Y(y, t)),
                       Px(f.right), Px(f.Y(y, t)));
  }
  out += "</g>\n";
  for (size_t i = 0; i < y.ticks.size(); ++i) {
    Text(out, f.left - 7, f.Y(y, y.ticks[i]) + kTickFont * 0.35, y.labels[i], kTickFont, "end");
  }
  out += fmt::format("<line x1=\"{0}\" y1=\"{1}\" x2=\"{0}\" y2=\"{2}\" stroke=\"#444\"/>\n", Px(f.left),
                     Px(f.top), Px(f.bottom));
  if (!y_label.empty()) {
    const double x = 12 + kLabelFont, yc = (f.top + f.bottom) / 2;
    Text(out, x, yc, y_label, kLabelFont, "middle",
         fmt::format(" transform=\"rotate(-90 {} {})\"", Px(x), Px(yc)));
  }
}

void DrawLegendEntry(std::string& out, double x, double y, size_t i, const std::string& name, bool line) {
  if (line) {
    const std::string_view dash = SeriesDash(i);
    out += fmt::format(
        "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"{}\" "
        "stroke-width=\"2.5\"{}/>\n",
        Px(x), Px(y), Px(x + 22), Px(y), SeriesColor(i),
        dash.empty() ? "" : fmt::format(" stroke-dasharray=\"{}\"", dash));
  } else {
    out += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"14\" height=\"14\" fill=\"{}\"{}/>\n", Px(x + 4),
                       Px(y - 7), SeriesColor(i), i >= kPaletteSize ? " fill-opacity=\"0.55\"" : "");
  }
  Text(out, x + 28, y + kLegendFont * 0.35, Elide(name), kLegendFont, "start");
}

// Width, then height, grown so that `rows` legend entries fit beside the plot.
double HeightForLegend(double height, double top, double bottom_margin, size_t rows) {
  return std::max(height, top + 8 + static_cast<double>(rows) * kLegendRow + bottom_margin);
}

}  // namespace

std::string XmlEscape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&apos;";
        break;
      default:
        // Control characters are not allowed in XML 1.0 text.
        if (static_cast<unsigned char>(c) >= 0x20 || c == '\t' || c == '\n') out += c;
    }
  }
  return out;
}

Status WriteTextFile(const std::string& path, const std::string& text) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) return IoError("cannot write '{}': {}", path, std::strerror(errno));
  const bool wrote = std::fwrite(text.data(), 1, text.size(), f) == text.size();
  const int err = errno;
  if (std::fclose(f) != 0 || !wrote)
    return IoError("cannot write '{}': {}", path, std::strerror(wrote ? errno : err));
  return Status::Ok();
}

// ---- line chart ----

Result<std::string> LineChart::ToSvg() const {
  RETURN_IF_ERROR(CheckSize(width, height));
  if (series.empty()) return InvalidArgument("line chart '{}' has no series", title);
  Range xr, yr;
  std::vector<std::string> names;
  for (const auto& s : series) {
    if (s.x.empty() || s.x.size() != s.y.size()) {
      return InvalidArgument(
          "line chart '{}': series '{}' has {} x and {} y "
          "values (need as many, at least one)",
          title, s.name, s.x.size(), s.y.size());
    }
    for (double x : s.x) {
      if (!std::isfinite(x))
        return InvalidArgument("line chart '{}': series '{}' has a non-finite x", title, s.name);
      if (log_x && x <= 0)
        return InvalidArgument("line chart '{}': log x axis needs x > 0, series '{}' has {}", title, s.name,
                               x);
    }
    RETURN_IF_ERROR(Collect(s.y, log_y, fmt::format("line chart '{}' series '{}'", title, s.name), &yr));
    for (size_t i = 0; i < s.x.size(); ++i)
      if (std::isfinite(s.y[i]) && (!log_y || s.y[i] > 0)) xr.Add(s.x[i]);
    names.push_back(s.name);
  }
  if (yr.empty()) return InvalidArgument("line chart '{}' has no value to draw", title);
  Axis xa = log_x ? TightLogAxis(xr.lo, xr.hi) : LinearAxis(xr.lo, xr.hi, false);
  const Axis ya = log_y ? TightLogAxis(yr.lo, yr.hi) : LinearAxis(yr.lo, yr.hi, false);
  if (!x_ticks.empty()) {
    if (!x_tick_labels.empty() && x_tick_labels.size() != x_ticks.size()) {
      return InvalidArgument("line chart '{}': {} x tick labels for {} x ticks", title, x_tick_labels.size(),
                             x_ticks.size());
    }
    Range tr = xr;
    for (double t : x_ticks) {
      if (!std::isfinite(t) || (log_x && t <= 0)) {
        return InvalidArgument("line chart '{}': x tick {} cannot be drawn on this axis", title, t);
      }
      tr.Add(t);
    }
    xa = log_x ? TightLogAxis(tr.lo, tr.hi) : LinearAxis(tr.lo, tr.hi, false);
    xa.ticks = x_ticks;
    xa.labels.clear();
    for (size_t i = 0; i < x_ticks.size(); ++i) {
      xa.labels.push_back(x_tick_labels.empty() ? Compact(x_ticks[i]) : x_tick_labels[i]);
    }
  }

  const std::string ylab = AxisLabel(y_label, log_y), xlab = AxisLabel(x_label, log_x);
  Frame f;
  f.top = TitleSpace(title, width);
  f.left = YAxisSpace(ya, ylab);
  const double bottom_margin = 12 + kTickFont + 8 + (xlab.empty() ? 0 : kLabelFont + 14);
  const double w = width;
  const double h = HeightForLegend(height, f.top, bottom_margin, series.size());
  f.right = w - std::max(24.0, LegendWidth(names));
  f.bottom = h - bottom_margin;
  // Half of the last x tick label may stick out right of the plot: keep it
  // inside.
  f.right = std::min(f.right, w - MaxWidth(xa.labels, kTickFont) / 2 - 6);

  std::string out;
  Begin(out, w, h);
  Title(out, w, title);
  DrawYAxis(out, f, ya, ylab);
  out += "<g stroke=\"#eeeeee\" stroke-width=\"1\">\n";
  for (double t : xa.ticks) {
    out += fmt::format("<line x1=\"{0}\" y1=\"{1}\" x2=\"{0}\" y2=\"{2}\"/>\n", Px(f.X(xa, t)), Px(f.top),
                       Px(f.bottom));
  }
  out += "</g>\n";
  out += fmt::format("<line x1=\"{0}\" y1=\"{2}\" x2=\"{1}\" y2=\"{2}\" stroke=\"#444\"/>\n", Px(f.left),
                     Px(f.right), Px(f.bottom));
  for (size_t i = 0; i < xa.ticks.size(); ++i) {
    Text(out, f.X(xa, xa.ticks[i]), f.bottom + 8 + kTickFont, xa.labels[i], kTickFont, "middle");
  }
  if (!xlab.empty()) Text(out, (f.left + f.right) / 2, h - 14, xlab, kLabelFont, "middle");

  for (size_t i = 0; i < series.size(); ++i) {
    const LineSeries& s = series[i];
    std::string path;
    bool pen_down = false;
    size_t points = 0;
    for (size_t p = 0; p < s.x.size(); ++p) {
      if (!ya.Drawable(s.y[p])) {
        pen_down = false;
        continue;
      }
      path += fmt::format("{}{} {} ", pen_down ? "L" : "M", Px(f.X(xa, s.x[p])), Px(f.Y(ya, s.y[p])));
      pen_down = true;
      ++points;
    }
    const std::string_view dash = SeriesDash(i);
    out += fmt::format("<g fill=\"{0}\" stroke=\"{0}\"><title>{1}</title>\n", SeriesColor(i), Escape(s.name));
    if (!path.empty()) {
      path.pop_back();
      out += fmt::format(
          "<path d=\"{}\" fill=\"none\" stroke-width=\"2\" "
          "stroke-linejoin=\"round\"{}/>\n",
          path, dash.empty() ? "" : fmt::format(" stroke-dasharray=\"{}\"", dash));
    }
    if (points <= 60) {
      for (size_t p = 0; p < s.x.size(); ++p) {
        if (!ya.Drawable(s.y[p])) continue;
        out += fmt::format(
            "<circle cx=\"{}\" cy=\"{}\" r=\"3\"><title>{}: {}, "
            "{}</title></circle>\n",
            Px(f.X(xa, s.x[p])), Px(f.Y(ya, s.y[p])), Escape(s.name), Compact(s.x[p]), Compact(s.y[p]));
      }
    }
    out += "</g>\n";
    DrawLegendEntry(out, f.right + 16, f.top + 8 + static_cast<double>(i) * kLegendRow, i, s.name, true);
  }
  out += "</svg>\n";
  return out;
}

Status LineChart::WriteFile(const std::string& path) const {
  ASSIGN_OR_RETURN(std::string svg, ToSvg());
  return WriteTextFile(path, svg);
}

// ---- grouped bar chart ----

Result<std::string> BarChart::ToSvg() const {
  RETURN_IF_ERROR(CheckSize(width, height));
  if (categories.empty()) return InvalidArgument("bar chart '{}' has no categories", title);
  if (series.empty()) return InvalidArgument("bar chart '{}' has no series", title);
  Range yr;
  std::vector<std::string> names;
  for (const auto& s : series) {
    if (s.values.size() != categories.size()) {
      return InvalidArgument("bar chart '{}': series '{}' has {} values for {} categories", title, s.name,
                             s.values.size(), categories.size());
    }
    RETURN_IF_ERROR(Collect(s.values, log_y, fmt::format("bar chart '{}' series '{}'", title, s.name), &yr));
    names.push_back(s.name);
  }
  bool any = false;
  for (const auto& s : series)
    for (double v : s.values) any |= !std::isnan(v);
  if (!any) return InvalidArgument("bar chart '{}' has no value", title);
  // A log axis with nothing positive still gets a frame: 1..10.
  Axis ya =
      log_y ? (yr.empty() ? LogAxisDecades(0, 1) : LogAxis(yr.lo, yr.hi)) : LinearAxis(yr.lo, yr.hi, true);

  const std::string ylab = AxisLabel(y_label, log_y);
  const double n_cat = static_cast<double>(categories.size()), n_ser = static_cast<double>(series.size());
  const double legend_w = std::max(24.0, LegendWidth(names));
  const double w = width;
  // Category labels: horizontal when each fits its group, else rotated by 35
  // degrees.
  const double cat_w = MaxWidth(categories, kTickFont);
  const double first_left = YAxisSpace(ya, ylab) + 40;  // room for a value label of 6 digits
  const double group_guess = (w - first_left - legend_w) / n_cat;
  const bool rotate = cat_w > group_guess - 6;
  const double angle = 35 * kPi / 180;
  const double cat_h = rotate ? cat_w * std::sin(angle) + kTickFont * std::cos(angle) : kTickFont;
  const double bottom_margin = 12 + cat_h + 10 + (x_label.empty() ? 0 : kLabelFont + 14);

  Frame f;
  f.top = TitleSpace(title, width);
  f.left = YAxisSpace(ya, ylab);
  if (rotate) f.left = std::max(f.left, cat_w * std::cos(angle) - group_guess / 2 + 8);
  const double h = HeightForLegend(height, f.top, bottom_margin, series.size());
  f.right = w - legend_w;
  f.bottom = h - bottom_margin;
  if (f.Width() < 40 || f.Height() < 40) {
    return InvalidArgument("bar chart '{}': {}x{} pixels leave no room for the plot", title, width, height);
  }
  // Value labels: horizontal above the bar when they fit its width, else
  // vertical; the axis grows upwards to leave them room, which may widen its
  // tick labels and so narrow the bars: repeat until the left margin is stable.
  const Axis data_axis = ya;
  bool vertical_values = false, show_values = false;
  for (int pass = 0; value_labels && pass < 4; ++pass) {
    const double bar_w = f.Width() / n_cat * 0.82 / n_ser;
    double label_w = 0, top_value = -INFINITY;
    vertical_values = false;
    for (const auto& s : series) {
      for (double v : s.values) {
        if (std::isnan(v)) continue;
        const double tw = TextWidth(FormatValue(v), kValueFont);
        vertical_values |= tw > bar_w + 1;
        label_w = std::max(label_w, tw);
        if (data_axis.Drawable(v)) top_value = std::max(top_value, v);
      }
    }
    // Vertical labels over bars narrower than their text height would run into
    // each other: then only the tooltips carry the values.
    show_values = !vertical_values || bar_w >= kValueFont + 1;
    const double label_room = !show_values ? 0 : vertical_values ? label_w + 8 : kValueFont + 6;
    ya = data_axis;
    ExtendTop(ya, top_value, 1 - label_room / f.Height());
    const double left = std::max(f.left, YAxisSpace(ya, ylab));
    if (left == f.left) break;
    f.left = left;
  }
  const double group_w2 = f.Width() / n_cat;
  const double bar_w2 = group_w2 * 0.82 / n_ser;

  std::string out;
  Begin(out, w, h);
  Title(out, w, title);
  DrawYAxis(out, f, ya, ylab);
  const double base = ya.log ? f.bottom : f.Y(ya, 0.0);
  for (size_t c = 0; c < categories.size(); ++c) {
    const double gx = f.left + group_w2 * static_cast<double>(c);
    const double cx = gx + group_w2 / 2;
    for (size_t i = 0; i < series.size(); ++i) {
      const double v = series[i].values[c];
      if (std::isnan(v)) continue;
      const double x = gx + group_w2 * 0.09 + bar_w2 * static_cast<double>(i);
      const std::string label = FormatValue(v);
      double label_y = base;
      if (ya.Drawable(v)) {
        const double y = f.Y(ya, v);
        const double top = std::min(y, base), height_px = std::abs(base - y);
        out += fmt::format(
            "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" "
            "fill=\"{}\"{}><title>{}, {}: {}</title></rect>\n",
            Px(x), Px(top), Px(std::max(1.0, bar_w2 - 1)), Px(height_px), SeriesColor(i),
            i >= kPaletteSize ? " fill-opacity=\"0.55\"" : "", Escape(series[i].name), Escape(categories[c]),
            label);
        label_y = top;
      }
      if (!show_values) continue;
      const double bx = x + bar_w2 / 2;
      if (vertical_values) {
        const double lx = bx + kValueFont * 0.35, ly = label_y - 4;
        Text(out, lx, ly, label, kValueFont, "start",
             fmt::format(" transform=\"rotate(-90 {} {})\"", Px(lx), Px(ly)));
      } else {
        Text(out, bx, label_y - 4, label, kValueFont, "middle");
      }
    }
    const double ly = f.bottom + 8 + kTickFont;
    if (rotate) {
      Text(out, cx, ly, categories[c], kTickFont, "end",
           fmt::format(" transform=\"rotate(-35 {} {})\"", Px(cx), Px(ly)));
    } else {
      Text(out, cx, ly, categories[c], kTickFont, "middle");
    }
  }
  out += fmt::format("<line x1=\"{0}\" y1=\"{2}\" x2=\"{1}\" y2=\"{2}\" stroke=\"#444\"/>\n", Px(f.left),
                     Px(f.right), Px(base));
  if (!x_label.empty()) Text(out, (f.left + f.right) / 2, h - 14, x_label, kLabelFont, "middle");
  for (size_t i = 0; i < series.size(); ++i) {
    DrawLegendEntry(out, f.right + 16, f.top + 8 + static_cast<double>(i) * kLegendRow, i, series[i].name,
                    false);
  }
  out += "</svg>\n";
  return out;
}

Status BarChart::WriteFile(const std::string& path) const {
  ASSIGN_OR_RETURN(std::string svg, ToSvg());
  return WriteTextFile(path, svg);
}

// ---- heat map ----

namespace {

struct Rgb {
  double r, g, b;
};
// ColorBrewer RdYlGn, five classes: red (bad) to green (good).
constexpr Rgb kScale[] = {{215, 48, 39}, {252, 141, 89}, {254, 224, 139}, {145, 207, 96}, {26, 152, 80}};

Rgb ScaleColor(double t) {
  t = std::clamp(t, 0.0, 1.0) * 4;
  const int i = std::min(3, static_cast<int>(t));
  const double u = t - i;
  const Rgb& a = kScale[i];
  const Rgb& b = kScale[i + 1];
  return {a.r + (b.r - a.r) * u, a.g + (b.g - a.g) * u, a.b + (b.b - a.b) * u};
}

std::string Hex(const Rgb& c) {
  return fmt::format("#{:02x}{:02x}{:02x}", static_cast<int>(std::lround(c.r)),
                     static_cast<int>(std::lround(c.g)), static_cast<int>(std::lround(c.b)));
}

// Dark text on light cells, white on dark ones.
const char* TextOn(const Rgb& c) {
  return 0.299 * c.r + 0.587 * c.g + 0.114 * c.b < 140 ? "#ffffff" : "#1a1a1a";
}

}  // namespace

Result<std::string> HeatMap::ToSvg() const {
  if (values.empty() || values[0].empty()) return InvalidArgument("heat map '{}' has no cells", title);
  const size_t rows = values.size(), cols = values[0].size();
  for (size_t r = 0; r < rows; ++r) {
    if (values[r].size() != cols) {
      return InvalidArgument("heat map '{}': row {} has {} values, row 0 has {}", title, r, values[r].size(),
                             cols);
    }
  }
  if (row_labels.size() != rows || column_labels.size() != cols) {
    return InvalidArgument("heat map '{}': {} row and {} column labels for a {}x{} grid", title,
                           row_labels.size(), column_labels.size(), rows, cols);
  }
  if (decimals < 0 || decimals > 6)
    return InvalidArgument("heat map '{}': decimals {} outside [0, 6]", title, decimals);
  if (rows * cols > 10000)
    return InvalidArgument("heat map '{}': {}x{} cells is more than 10000", title, rows, cols);
  Range vr;
  for (const auto& row : values)
    RETURN_IF_ERROR(Collect(row, false, fmt::format("heat map '{}'", title), &vr));
  if (vr.empty()) return InvalidArgument("heat map '{}' has no value", title);
  if (std::isinf(scale_min) || std::isinf(scale_max))
    return InvalidArgument("heat map '{}': infinite scale end", title);
  const double lo = std::isnan(scale_min) ? vr.lo : scale_min;
  const double hi = std::isnan(scale_max) ? vr.hi : scale_max;
  if (lo > hi)
    return InvalidArgument("heat map '{}': scale minimum {} is above its maximum {}", title, lo, hi);
  auto color_at = [&](double v) {
    double t = hi > lo ? (v - lo) / (hi - lo) : 1.0;
    return ScaleColor(high_is_good ? t : 1 - t);
  };

  double value_w = 0;
  for (const auto& row : values)
    for (double v : row)
      if (!std::isnan(v)) value_w = std::max(value_w, TextWidth(Fixed(v, decimals), kCellFont));
  const double col_label_w = MaxWidth(column_labels, kTickFont);
  const double cell_w = std::max(46.0, value_w + 14);
  const double cell_h = 28;
  const bool rotate = col_label_w > cell_w - 6;
  const double angle = 45 * kPi / 180;
  const double col_label_h = rotate ? col_label_w * std::sin(angle) + kTickFont * std::cos(angle) : kTickFont;

  // Colour bar ticks at quarters of the scale, with the digits their step needs
  // (a 0..1 scale of whole-number cells reads 0.00 0.25 .. 1.00, not 0 0 0 1
  // 1).
  int scale_decimals = decimals;
  if (hi > lo) {
    const double step = (hi - lo) / 4;
    while (scale_decimals < 6 && std::abs(step * std::pow(10.0, scale_decimals) -
                                          std::round(step * std::pow(10.0, scale_decimals))) > 1e-6) {
      ++scale_decimals;
    }
  }
  std::vector<std::string> scale_labels;
  for (int k = 0; k <= 4; ++k) scale_labels.push_back(Fixed(lo + (hi - lo) * k / 4, scale_decimals));
  // The gradient's id is unique to this map's content, so several maps inlined
  // into one page (the report) do not share one id.
  uint64_t id_hash = 1469598103934665603ull;  // FNV-1a over the title and the values
  auto mix = [&](std::string_view bytes) {
    for (unsigned char ch : bytes) id_hash = (id_hash ^ ch) * 1099511628211ull;
  };
  mix(title);
  for (const auto& row : values)
    for (double v : row) mix(std::string_view(reinterpret_cast<const char*>(&v), sizeof v));
  const std::string gradient_id = fmt::format("scale-{:016x}", id_hash);
  const double grid_w = cell_w * static_cast<double>(cols), grid_h = cell_h * static_cast<double>(rows);
  const double bar_h = std::max(grid_h, 120.0);

  Frame f;                                // the grid
  f.top = TitleSpace(title, kMaxPixels);  // one line: the map grows to fit its title
  f.left = 12 + (y_label.empty() ? 0 : kLabelFont + 10) + MaxWidth(row_labels, kTickFont) + 10;
  if (rotate) f.left = std::max(f.left, col_label_w * std::cos(angle) - cell_w / 2 + 8);
  f.right = f.left + grid_w;
  f.bottom = f.top + grid_h;
  const double bar_x = f.right + 24, bar_w = 16;
  const double scale_right = bar_x + bar_w + 6 + MaxWidth(scale_labels, kTickFont) +
                             (scale_label.empty() ? 0 : 10 + kLabelFont) + 14;
  const double w = std::max(scale_right, TextWidth(title, kTitleFont) + 30);
  const double h =
      f.top + std::max(grid_h + 8 + col_label_h + 10 + (x_label.empty() ? 0 : kLabelFont + 14), bar_h) + 12;
  if (w > kMaxPixels || h > kMaxPixels)
    return InvalidArgument("heat map '{}' would be {}x{} pixels", title, w, h);

  std::string out;
  Begin(out, w, h);
  Title(out, w, title);
  out += "<g stroke=\"white\" stroke-width=\"1.5\">\n";
  for (size_t r = 0; r < rows; ++r) {
    for (size_t c = 0; c < cols; ++c) {
      const double v = values[r][c];
      const double x = f.left + cell_w * static_cast<double>(c), y = f.top + cell_h * static_cast<double>(r);
      const std::string text = std::isnan(v) ? "" : Fixed(v, decimals);
      const Rgb color = std::isnan(v) ? Rgb{240, 240, 240} : color_at(v);
      out += fmt::format(
          "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" "
          "fill=\"{}\"><title>{}, {}: {}</title></rect>\n",
          Px(x), Px(y), Px(cell_w), Px(cell_h), Hex(color), Escape(row_labels[r]), Escape(column_labels[c]),
          std::isnan(v) ? "no value" : text);
      if (!text.empty()) {
        Text(out, x + cell_w / 2, y + cell_h / 2 + kCellFont * 0.35, text, kCellFont, "middle",
             fmt::format(" fill=\"{}\" stroke=\"none\"", TextOn(color)));
      }
    }
  }
  out += "</g>\n";
  for (size_t r = 0; r < rows; ++r) {
    Text(out, f.left - 7, f.top + cell_h * (static_cast<double>(r) + 0.5) + kTickFont * 0.35, row_labels[r],
         kTickFont, "end");
  }
  const double ly = f.bottom + 8 + kTickFont;
  for (size_t c = 0; c < cols; ++c) {
    const double cx = f.left + cell_w * (static_cast<double>(c) + 0.5);
    if (rotate) {
      Text(out, cx, ly, column_labels[c], kTickFont, "end",
           fmt::format(" transform=\"rotate(-45 {} {})\"", Px(cx), Px(ly)));
    } else {
      Text(out, cx, ly, column_labels[c], kTickFont, "middle");
    }
  }
  if (!x_label.empty()) {
    Text(out, (f.left + f.right) / 2, f.bottom + 8 + col_label_h + 10 + kLabelFont, x_label, kLabelFont,
         "middle");
  }
  if (!y_label.empty()) {
    const double x = 12 + kLabelFont, yc = (f.top + f.bottom) / 2;
    Text(out, x, yc, y_label, kLabelFont, "middle",
         fmt::format(" transform=\"rotate(-90 {} {})\"", Px(x), Px(yc)));
  }
  // Colour bar: low at the bottom, high at the top.
  out += fmt::format("<defs><linearGradient id=\"{}\" x1=\"0\" y1=\"1\" x2=\"0\" y2=\"0\">\n", gradient_id);
  for (int k = 0; k <= 4; ++k) {
    const double t = k / 4.0;
    out += fmt::format("<stop offset=\"{}\" stop-color=\"{}\"/>\n", Px(t),
                       Hex(ScaleColor(high_is_good ? t : 1 - t)));
  }
  out += "</linearGradient></defs>\n";
  out += fmt::format(
      "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" "
      "fill=\"url(#{})\" stroke=\"#888\"/>\n",
      Px(bar_x), Px(f.top), Px(bar_w), Px(bar_h), gradient_id);
  for (int k = 0; k <= 4; ++k) {
    const double y = f.top + bar_h * (1 - k / 4.0);
    out += fmt::format("<line x1=\"{0}\" y1=\"{1}\" x2=\"{2}\" y2=\"{1}\" stroke=\"#444\"/>\n",
                       Px(bar_x + bar_w), Px(y), Px(bar_x + bar_w + 4));
    Text(out, bar_x + bar_w + 6, y + kTickFont * 0.35, scale_labels[k], kTickFont, "start");
  }
  if (!scale_label.empty()) {
    const double x = scale_right - 14 - kLabelFont * 0.3, yc = f.top + bar_h / 2;
    Text(out, x, yc, scale_label, kLabelFont, "middle",
         fmt::format(" transform=\"rotate(90 {} {})\"", Px(x), Px(yc)));
  }
  out += "</svg>\n";
  return out;
}

Status HeatMap::WriteFile(const std::string& path) const {
  ASSIGN_OR_RETURN(std::string svg, ToSvg());
  return WriteTextFile(path, svg);
}

}  // namespace slimkv::eval
