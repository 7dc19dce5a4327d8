#include "eval/svg.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

namespace slimkv::eval {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// "" if `s` is well-formed XML as far as these charts go: one root element,
// every tag closed in order, quoted attributes, no raw '<' in attributes, only
// the five named entities after '&', nothing but white space outside the root.
// Else what is wrong.
std::string XmlProblem(const std::string& s) {
  std::vector<std::string> open;
  int roots = 0;
  auto check_amp = [&](size_t i) {
    for (const char* e : {"&amp;", "&lt;", "&gt;", "&quot;", "&apos;"})
      if (s.compare(i, std::strlen(e), e) == 0) return true;
    return false;
  };
  for (size_t i = 0; i < s.size();) {
    if (s[i] == '<') {
      const size_t end = s.find('>', i);
      if (end == std::string::npos) return "unterminated tag at " + std::to_string(i);
      const std::string tag = s.substr(i + 1, end - i - 1);
      if (std::count(tag.begin(), tag.end(), '"') % 2 != 0) return "odd quotes in <" + tag + ">";
      if (tag.find('<') != std::string::npos) return "'<' inside <" + tag + ">";
      for (size_t k = 0; k < tag.size(); ++k)
        if (tag[k] == '&' && !check_amp(i + 1 + k)) return "bad entity in <" + tag + ">";
      if (tag.empty()) return "empty tag";
      if (tag[0] == '/') {
        if (open.empty() || open.back() != tag.substr(1)) return "unexpected </" + tag.substr(1) + ">";
        open.pop_back();
      } else {
        if (open.empty()) ++roots;
        if (tag.back() != '/') open.push_back(tag.substr(0, tag.find_first_of(" \n")));
      }
      i = end + 1;
    } else {
      if (s[i] == '&' && !check_amp(i)) return "bad entity at " + std::to_string(i);
      if (s[i] == '>') return "raw '>' in text at " + std::to_string(i);
      if (open.empty() && !std::isspace(static_cast<unsigned char>(s[i]))) return "text outside the root";
      ++i;
    }
  }
  if (!open.empty()) return "<" + open.back() + "> is never closed";
  if (roots != 1) return std::to_string(roots) + " root elements";
  return "";
}

// The contents of every <text> element, in order.
std::vector<std::string> Texts(const std::string& svg) {
  std::vector<std::string> out;
  static const std::regex re("<text[^>]*>([^<]*)</text>");
  for (auto it = std::sregex_iterator(svg.begin(), svg.end(), re); it != std::sregex_iterator(); ++it) {
    out.push_back((*it)[1].str());
  }
  return out;
}

bool Has(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

BarChart UsersChart() {
  return BarChart{.title = "Concurrent users, Llama-3.1-8B",
                  .x_label = "context",
                  .y_label = "users",
                  .categories = {"2K", "8K", "32K", "128K"},
                  .series = {{"fp16", {296, 74, 18, 4}}, {"int4", {1184, 296, 74, 18}}},
                  .log_y = true};
}

TEST(SvgTest, BarChartIsWellFormedAndShowsItsValues) {
  auto svg = UsersChart().ToSvg();
  ASSERT_TRUE(svg.ok()) << svg.status().ToString();
  EXPECT_EQ(XmlProblem(*svg), "");
  EXPECT_TRUE(svg->starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
  const auto texts = Texts(*svg);
  for (const char* s : {"296", "74", "18", "4", "1184", "2K", "8K", "32K", "128K", "fp16", "int4",
                        "users (log scale)", "context", "Concurrent users, Llama-3.1-8B"}) {
    EXPECT_TRUE(Has(texts, s)) << s;
  }
  // Eight bars, each with a tooltip naming it.
  EXPECT_NE(svg->find("<title>int4, 128K: 18</title>"), std::string::npos);
}

TEST(SvgTest, LogAxisTicksAreDecadesOverWideRanges) {
  const auto texts = Texts(*UsersChart().ToSvg());
  // 4 .. 1184 spans more than two decades: ticks at powers of ten only.
  for (const char* s : {"1", "10", "100", "1000"}) EXPECT_TRUE(Has(texts, s)) << s;
  EXPECT_FALSE(Has(texts, "20"));
  EXPECT_FALSE(Has(texts, "500"));
}

TEST(SvgTest, LogAxisTicksIncludeTwoAndFiveWithinTwoDecades) {
  // Bars start from a whole decade.
  BarChart b{.categories = {"a", "b", "c"}, .series = {{"s", {3, 12, 40}}}, .log_y = true};
  auto svg = b.ToSvg();
  ASSERT_TRUE(svg.ok()) << svg.status().ToString();
  EXPECT_EQ(XmlProblem(*svg), "");
  const auto texts = Texts(*svg);
  for (const char* s : {"1", "2", "5", "10", "20", "50", "100"}) EXPECT_TRUE(Has(texts, s)) << s;
  // Lines end where their data ends.
  LineChart c{.series = {{"s", {1, 2, 3}, {3, 12, 40}}}, .log_y = true};
  const auto t2 = Texts(*c.ToSvg());
  for (const char* s : {"5", "10", "20"}) EXPECT_TRUE(Has(t2, s)) << s;
  EXPECT_FALSE(Has(t2, "1"));
  EXPECT_FALSE(Has(t2, "100"));
}

TEST(SvgTest, LogXAxisLabelsLargeNumbersCompactly) {
  LineChart c{.series = {{"ppl", {2048, 8192, 32768, 131072}, {10.5, 10.2, 10.1, 10.3}}}, .log_x = true};
  auto svg = c.ToSvg();
  ASSERT_TRUE(svg.ok()) << svg.status().ToString();
  EXPECT_EQ(XmlProblem(*svg), "");
  const auto texts = Texts(*svg);
  for (const char* s : {"2000", "5000", "10k", "20k", "50k", "100k"}) EXPECT_TRUE(Has(texts, s)) << s;
  EXPECT_FALSE(Has(texts, "10000"));
  EXPECT_FALSE(Has(texts, "1M"));
  // Ticks of one's own: a context axis in powers of two.
  c.x_ticks = {2048, 8192, 32768, 131072};
  c.x_tick_labels = {"2K", "8K", "32K", "128K"};
  const auto t2 = Texts(*c.ToSvg());
  for (const char* s : {"2K", "8K", "32K", "128K"}) EXPECT_TRUE(Has(t2, s)) << s;
  EXPECT_FALSE(Has(t2, "10k"));
  c.x_tick_labels = {"2K"};
  EXPECT_FALSE(c.ToSvg().ok());
}

TEST(SvgTest, LinearAxisHasNiceTicksFromZero) {
  BarChart c = UsersChart();
  c.log_y = false;
  const auto texts = Texts(*c.ToSvg());
  for (const char* s : {"0", "200", "400", "1000", "1200"}) EXPECT_TRUE(Has(texts, s)) << s;
  EXPECT_FALSE(Has(texts, "1184.0"));
  LineChart small{.series = {{"kl", {0, 1, 2}, {0.01, 0.025, 0.04}}}};
  const auto t2 = Texts(*small.ToSvg());
  for (const char* s : {"0.010", "0.020", "0.030", "0.040"}) EXPECT_TRUE(Has(t2, s)) << s;
}

TEST(SvgTest, NamesAreEscaped) {
  BarChart c = UsersChart();
  c.title = "K<V & \"both\"";
  c.series[0].name = "a<b>'c'";
  auto svg = c.ToSvg();
  ASSERT_TRUE(svg.ok());
  EXPECT_EQ(XmlProblem(*svg), "");
  EXPECT_NE(svg->find("K&lt;V &amp; &quot;both&quot;"), std::string::npos);
  EXPECT_NE(svg->find("a&lt;b&gt;&apos;c&apos;"), std::string::npos);
}

TEST(SvgTest, LineGapsAtMissingValues) {
  LineChart c{.series = {{"s", {1, 2, 3, 4, 5}, {1, 2, kNaN, 4, 5}}}};
  auto svg = c.ToSvg();
  ASSERT_TRUE(svg.ok());
  EXPECT_EQ(XmlProblem(*svg), "");
  const size_t p = svg->find("<path d=\"");
  ASSERT_NE(p, std::string::npos);
  const std::string d = svg->substr(p + 9, svg->find('"', p + 9) - p - 9);
  EXPECT_EQ(std::count(d.begin(), d.end(), 'M'), 2) << d;
  EXPECT_EQ(std::count(d.begin(), d.end(), 'L'), 2) << d;
}

TEST(SvgTest, ManySeriesAndCategoriesStayReadable) {
  BarChart c{.title = "ten series, twenty categories", .y_label = "value"};
  for (int i = 0; i < 20; ++i) c.categories.push_back("category " + std::to_string(i));
  for (int s = 0; s < 10; ++s) {
    BarSeries bs{.name = "series number " + std::to_string(s)};
    for (int i = 0; i < 20; ++i) bs.values.push_back(1000.0 * (s + 1) + 37 * i);
    c.series.push_back(bs);
  }
  auto svg = c.ToSvg();
  ASSERT_TRUE(svg.ok()) << svg.status().ToString();
  EXPECT_EQ(XmlProblem(*svg), "");
  const auto texts = Texts(*svg);
  for (int s = 0; s < 10; ++s) EXPECT_TRUE(Has(texts, "series number " + std::to_string(s)));
  // Category labels do not fit side by side: rotated, and far enough apart that
  // parallel rotated labels (12 px text at 35 degrees) do not touch.
  std::vector<double> xs;
  static const std::regex re("<text x=\"([0-9.]+)\"[^>]*rotate\\(-35[^>]*>category");
  for (auto it = std::sregex_iterator(svg->begin(), svg->end(), re); it != std::sregex_iterator(); ++it) {
    xs.push_back(std::stod((*it)[1].str()));
  }
  ASSERT_EQ(xs.size(), 20u);
  for (size_t i = 1; i < xs.size(); ++i) EXPECT_GE((xs[i] - xs[i - 1]) * std::sin(35 * M_PI / 180), 13.0);
  // 200 values over bars ~2.5 px wide would overlap even written vertically:
  // tooltips only.
  const std::string vertical_value = "font-size=\"10.5\" text-anchor=\"start\" transform=\"rotate(-90";
  EXPECT_EQ(svg->find(vertical_value), std::string::npos);
  EXPECT_FALSE(Has(texts, "1037"));
  EXPECT_NE(svg->find("<title>series number 0, category 1: 1037</title>"), std::string::npos);
  // Eight series over four categories: vertical value labels, each bar wider
  // than the text height.
  BarChart eight = UsersChart();
  for (int i = 0; i < 6; ++i) eight.series.push_back({"copy " + std::to_string(i), {1184, 296, 74, 18}});
  EXPECT_NE(eight.ToSvg()->find(vertical_value), std::string::npos);
  EXPECT_EQ(UsersChart().ToSvg()->find(vertical_value),
            std::string::npos);  // wide bars: horizontal
  // Few short categories stay horizontal.
  EXPECT_EQ(UsersChart().ToSvg()->find("rotate(-35"), std::string::npos);
}

TEST(SvgTest, HeatMapPrintsEveryCellWithItsColour) {
  HeatMap h{.title = "needle",
            .x_label = "context",
            .y_label = "depth",
            .scale_label = "score",
            .row_labels = {"0%", "50%", "100%"},
            .column_labels = {"1K", "2K", "4K", "8K"},
            .values = {{1, 1, 0.75, 0.5}, {1, 0.25, 0, kNaN}, {1, 1, 1, 0.3}}};
  auto svg = h.ToSvg();
  ASSERT_TRUE(svg.ok()) << svg.status().ToString();
  EXPECT_EQ(XmlProblem(*svg), "");
  const auto texts = Texts(*svg);
  for (const char* s :
       {"1.00", "0.75", "0.50", "0.25", "0.00", "0.30", "0%", "100%", "8K", "score", "needle"}) {
    EXPECT_TRUE(Has(texts, s)) << s;
  }
  EXPECT_EQ(std::count(texts.begin(), texts.end(), "1.00"),
            6 + 1);  // 6 cells and the colour bar's top
  // Lowest value red, highest green, the missing cell grey.
  EXPECT_NE(svg->find("<title>50%, 4K: 0.00</title>"), std::string::npos);
  EXPECT_NE(svg->find("fill=\"#d73027\"><title>50%, 4K"), std::string::npos);
  EXPECT_NE(svg->find("fill=\"#1a9850\"><title>0%, 1K"), std::string::npos);
  EXPECT_NE(svg->find("fill=\"#f0f0f0\"><title>50%, 8K: no value"), std::string::npos);
  h.high_is_good = false;
  EXPECT_NE(h.ToSvg()->find("fill=\"#1a9850\"><title>50%, 4K"), std::string::npos);
  // A fixed scale: 0.5 is the middle colour.
  h.high_is_good = true;
  h.scale_min = 0;
  h.scale_max = 1;
  h.values = {{0.5}};
  h.row_labels = {"r"};
  h.column_labels = {"c"};
  EXPECT_NE(h.ToSvg()->find("fill=\"#fee08b\"><title>r, c"), std::string::npos);
}

TEST(SvgTest, EmptyOrBadDataIsAnError) {
  auto bad = [](const Result<std::string>& r) {
    return !r.ok() && r.status().code() == StatusCode::kInvalidArgument;
  };
  EXPECT_TRUE(bad(LineChart{}.ToSvg()));
  EXPECT_TRUE(bad(LineChart{.series = {{"s", {}, {}}}}.ToSvg()));
  EXPECT_TRUE(bad(LineChart{.series = {{"s", {1, 2}, {1}}}}.ToSvg()));
  EXPECT_TRUE(bad(LineChart{.series = {{"s", {1, 2}, {kNaN, kNaN}}}}.ToSvg()));
  EXPECT_TRUE(bad(LineChart{.series = {{"s", {1, 2}, {1, INFINITY}}}}.ToSvg()));
  EXPECT_TRUE(bad(LineChart{.series = {{"s", {0, 2}, {1, 2}}}, .log_x = true}.ToSvg()));
  EXPECT_TRUE(bad(LineChart{.series = {{"s", {1, 2}, {-1, 0}}}, .log_y = true}.ToSvg()));
  EXPECT_TRUE(bad(LineChart{.series = {{"s", {1}, {1}}}, .width = 0}.ToSvg()));
  EXPECT_TRUE(bad(BarChart{}.ToSvg()));
  EXPECT_TRUE(bad(BarChart{.categories = {"a"}}.ToSvg()));
  EXPECT_TRUE(bad(BarChart{.categories = {"a", "b"}, .series = {{"s", {1}}}}.ToSvg()));
  EXPECT_TRUE(bad(BarChart{.categories = {"a"}, .series = {{"s", {kNaN}}}}.ToSvg()));
  EXPECT_TRUE(bad(HeatMap{}.ToSvg()));
  EXPECT_TRUE(bad(HeatMap{.row_labels = {"r"}, .column_labels = {}, .values = {{}}}.ToSvg()));
  EXPECT_TRUE(
      bad(HeatMap{.row_labels = {"a", "b"}, .column_labels = {"x", "y"}, .values = {{1, 2}, {3}}}.ToSvg()));
  EXPECT_TRUE(bad(HeatMap{.row_labels = {"a"}, .column_labels = {"x"}, .values = {{1}, {2}}}.ToSvg()));
  EXPECT_TRUE(bad(HeatMap{.row_labels = {"a"}, .column_labels = {"x"}, .values = {{kNaN}}}.ToSvg()));
  EXPECT_TRUE(bad(
      HeatMap{.row_labels = {"a"}, .column_labels = {"x"}, .values = {{1}}, .scale_min = 2, .scale_max = 1}
          .ToSvg()));
  EXPECT_FALSE(UsersChart().WriteFile("/nonexistent-dir/x.svg").ok());
  EXPECT_FALSE(BarChart{}.WriteFile(::testing::TempDir() + "/never_written.svg").ok());
  EXPECT_FALSE(std::filesystem::exists(::testing::TempDir() + "/never_written.svg"));
}

TEST(SvgTest, NonPositiveBarsOnALogAxisAreLabelledNotDrawn) {
  BarChart c{.categories = {"2K", "128K"}, .series = {{"fp16", {3, 0}}}, .log_y = true};
  auto svg = c.ToSvg();
  ASSERT_TRUE(svg.ok()) << svg.status().ToString();
  EXPECT_EQ(XmlProblem(*svg), "");
  EXPECT_TRUE(Has(Texts(*svg), "0"));
  EXPECT_EQ(svg->find("<title>fp16, 128K"), std::string::npos);
  c.series[0].values = {0, 0};  // nothing to draw: a frame and the labels
  EXPECT_TRUE(c.ToSvg().ok());
}

// A title wider than the chart is broken into lines that fit (it was one line,
// clipped at both edges: the attention charts' titles).
TEST(SvgTest, LongTitlesWrapInsteadOfBeingClipped) {
  const std::string title =
      "Attention per decode step, one layer of SmolLM2-135M (3 KV heads, 9 "
      "query heads, head dim 64), 2 threads";
  LineChart c{.title = title,
              .x_label = "cached tokens",
              .y_label = "µs per step",
              .series = {{"fp16", {4096, 16384}, {10, 40}}}};
  auto svg = c.ToSvg();
  ASSERT_TRUE(svg.ok()) << svg.status().ToString();
  EXPECT_EQ(XmlProblem(*svg), "");
  static const std::regex bold(
      "<text "
      "x=\"([0-9.]+)\"[^>]*font-size=\"17\"[^>]*font-"
      "weight=\"bold\">([^<]*)</text>");
  std::string joined;
  int lines = 0;
  for (auto it = std::sregex_iterator(svg->begin(), svg->end(), bold); it != std::sregex_iterator();
       ++it, ++lines) {
    const std::string line = (*it)[2].str();
    EXPECT_LE(line.size() * 0.62 * 17, c.width - 20.0) << line;  // the width estimate of svg.h
    joined += (joined.empty() ? "" : " ") + line;
  }
  EXPECT_GE(lines, 2);
  EXPECT_EQ(joined, title);
  // The plot starts below the last title line.
  BarChart b{.title = title, .categories = {"a"}, .series = {{"s", {1}}}};
  EXPECT_TRUE(b.ToSvg().ok());
}

TEST(SvgTest, LogAxesSayTheyAreLogarithmic) {
  LineChart c{.x_label = "cached tokens",
              .y_label = "µs per step",
              .series = {{"fp16", {4096, 65536}, {10, 400}}},
              .log_x = true,
              .log_y = true};
  auto texts = Texts(*c.ToSvg());
  EXPECT_TRUE(Has(texts, "cached tokens (log scale)"));
  EXPECT_TRUE(Has(texts, "µs per step (log scale)"));
  c.log_x = false;
  texts = Texts(*c.ToSvg());
  EXPECT_TRUE(Has(texts, "cached tokens"));
  // A label that says so already is left alone.
  BarChart b = UsersChart();
  b.y_label = "users (log scale)";
  EXPECT_TRUE(Has(Texts(*b.ToSvg()), "users (log scale)"));
  EXPECT_FALSE(Has(Texts(*b.ToSvg()), "users (log scale) (log scale)"));
}

// Whole-number cells on a 0..1 scale (the needle map): the colour bar's five
// labels are the quarters, not "0 0 0 1 1".
TEST(SvgTest, ColourBarLabelsAreDistinctWhateverTheCellDecimals) {
  HeatMap h{.scale_label = "found",
            .row_labels = {"0%", "100%"},
            .column_labels = {"1024", "2048"},
            .values = {{1, 0}, {1, 1}},
            .scale_min = 0,
            .scale_max = 1,
            .decimals = 0};
  auto svg = h.ToSvg();
  ASSERT_TRUE(svg.ok()) << svg.status().ToString();
  const auto texts = Texts(*svg);
  for (const char* s : {"0.00", "0.25", "0.50", "0.75", "1.00"}) EXPECT_TRUE(Has(texts, s)) << s;
  EXPECT_EQ(std::count(texts.begin(), texts.end(), "1"),
            3);  // the cells keep their own decimals
}

// Several maps inlined in one page (the report) must not share one gradient id.
TEST(SvgTest, HeatMapsHaveTheirOwnGradientIds) {
  HeatMap a{.row_labels = {"r"}, .column_labels = {"c"}, .values = {{0.5}}};
  HeatMap b = a;
  b.values = {{0.25}};
  static const std::regex id("linearGradient id=\"([^\"]+)\"");
  std::smatch ma, mb;
  const std::string sa = *a.ToSvg(), sb = *b.ToSvg();
  ASSERT_TRUE(std::regex_search(sa, ma, id));
  ASSERT_TRUE(std::regex_search(sb, mb, id));
  EXPECT_NE(ma[1].str(), mb[1].str());
  EXPECT_NE(sa.find("fill=\"url(#" + ma[1].str() + ")\""), std::string::npos);
  EXPECT_EQ(sa, *a.ToSvg());  // deterministic
}

TEST(SvgTest, WriteFileWritesTheSvg) {
  const std::string path = ::testing::TempDir() + "/slimkv_svg_test.svg";
  ASSERT_TRUE(UsersChart().WriteFile(path).ok());
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  EXPECT_EQ(ss.str(), *UsersChart().ToSvg());
  std::remove(path.c_str());
}

}  // namespace
}  // namespace slimkv::eval
