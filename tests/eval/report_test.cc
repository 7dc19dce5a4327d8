#include <gtest/gtest.h>

#include <regex>
#include <set>
#include <string>

#include "eval/report_data.h"
#include "eval/report_grid.h"

namespace slimkv::eval {
namespace {

using nlohmann::json;

json SmallGrid() {
  return json::parse(R"({
    "name": "t", "models": ["smollm2-135m"], "formats": ["fp16", "int4"],
    "policies": ["h2o"], "budgets": [0.5], "policy_formats": ["int4"],
    "measures": {"bytes": {"contexts": [256, 2048]}, "speed": {"prefill": 64, "decode": 8, "depths": [0, 1024], "reps": 1},
                 "load": {"clients": 2, "requests": 2, "prompt": 16, "gen": 4},
                 "ppl": {"ctx": 128, "chunks": 1}, "needle": {"contexts": [1024], "depths": [0, 100]},
                 "ruler": {"tasks": ["mk"], "contexts": [1024], "samples": 1}}})");
}

TEST(ReportGridTest, ExpandsMethodsAndCellsWithTheirCommands) {
  auto g = ParseReportGrid(SmallGrid());
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  const auto methods = g->Methods();
  ASSERT_EQ(methods.size(), 3u);
  EXPECT_EQ(methods[2].Label(), "int4 + h2o 50%");
  const auto cells = ExpandReportGrid(*g);
  // fp16 and int4: six measures each; int4 + h2o: no load.
  EXPECT_EQ(cells.size(), 6u + 6u + 5u);
  std::set<std::string> ids;
  for (const auto& c : cells) {
    EXPECT_TRUE(ids.insert(c.id).second) << c.Command();
    EXPECT_EQ(c.id.size(), 16u);
    EXPECT_GT(c.cost, 0);
  }
  const ReportCell* ppl_h2o = nullptr;
  const ReportCell* speed_h2o = nullptr;
  for (const auto& c : cells) {
    if (c.method.evicts() && c.measure == Measure::kPpl) ppl_h2o = &c;
    if (c.method.evicts() && c.measure == Measure::kSpeed) speed_h2o = &c;
  }
  ASSERT_NE(ppl_h2o, nullptr);
  EXPECT_EQ(ppl_h2o->Command(),
            "slimkv ppl -m smollm2-135m --kv int4 -t 2 -f data/pg_essays.txt "
            "-c 128 --chunks 1 --kv-policy h2o "
            "--kv-budget 64 --step 16");
  // Eviction decodes only at the deepest context, its budget a share of that
  // depth.
  ASSERT_NE(speed_h2o, nullptr);
  EXPECT_NE(speed_h2o->Command().find("--tests tg8@d1024 "), std::string::npos) << speed_h2o->Command();
  EXPECT_NE(speed_h2o->Command().find("--kv-budget 512"), std::string::npos);
  // The same grid gives the same ids (the cache's file names).
  EXPECT_EQ(ExpandReportGrid(*ParseReportGrid(SmallGrid()))[4].id, cells[4].id);
  // Quoting for a shell.
  ReportCell q;
  q.args = {"ppl", "-f", "my text.txt", "it's"};
  EXPECT_EQ(q.Command(), "slimkv ppl -f 'my text.txt' 'it'\\''s'");
}

TEST(ReportGridTest, BadGridsAreErrorsNamingTheKey) {
  auto bad = [](const std::string& text, const std::string& says) {
    auto g = ParseReportGrid(json::parse(text));
    ASSERT_FALSE(g.ok()) << text;
    EXPECT_EQ(g.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(g.status().message().find(says), std::string::npos) << g.status().message();
  };
  bad(R"({"formats": ["fp16"], "modles": ["x"]})", "unknown key 'modles'");
  bad(R"({"formats": []})", "formats");
  bad(R"({"formats": ["fp16", "fp16"]})", "twice");
  bad(R"({"formats": ["fp16"], "policies": ["h2o"]})", "policies without budgets");
  bad(R"({"formats": ["fp16"], "policies": ["h2o"], "budgets": [1.5]})", "budget 1.5");
  bad(R"({"formats": ["fp16"], "policy_formats": ["int4"]})", "not a format");
  bad(R"({"formats": ["fp16"], "threads": "two"})", "'threads' has the wrong type");
  bad(R"({"formats": ["fp16"], "measures": {"ppl": {"ctx": 0}}})", "not a positive number");
  bad(R"({"formats": ["fp16"], "measures": {"speed": {"depth": [1]}}})", "unknown key 'depth'");
  bad(R"({"formats": [{"label": "x", "flags": []}]})", "no flags");
}

// A run's results: fp16 and int4 measured, int4 + h2o partly (its speed cell
// failed).
json Results() {
  json grid = ReportGridJson(*ParseReportGrid(SmallGrid()));
  auto cell = [](const std::string& id, const std::string& measure, const std::string& method, json result) {
    return json{{"id", id},
                {"measure", measure},
                {"model", "smollm2-135m"},
                {"method", {{"label", method}}},
                {"command", "slimkv " + measure + " --kv " + method},
                {"seconds", 1.5},
                {"finished", "today"},
                {"result", result}};
  };
  auto held = [](double total_256, double total_2k, int users) {
    return json{
        {"elements_per_token", 11520},
        {"rows",
         {{{"held",
            {{{"per_token", {{"data", 1}, {"meta", 2}, {"residual", 3}, {"waste", 4}, {"total", total_256}}},
              {"slots", 256},
              {"users", users * 8}},
             {{"per_token", {{"data", 1}, {"meta", 2}, {"residual", 3}, {"waste", 4}, {"total", total_2k}}},
              {"slots", 2048},
              {"users", users}}}}}}}};
  };
  json cells = json::array();
  cells.push_back(cell("00000000000000b1", "bytes", "fp16", held(23040, 23040, 22)));
  cells.push_back(cell("00000000000000b2", "bytes", "int4", held(23040, 7150.4, 71)));
  cells.push_back(cell("00000000000000b3", "bytes", "int4 + h2o 50%", held(12000, 3600, 140)));
  cells.push_back(cell("00000000000000p1", "ppl", "fp16", {{"ppl", 20.5}, {"ppl_stderr", 0.3}}));
  cells.push_back(cell("00000000000000p2", "ppl", "int4",
                       {{"ppl", 20.58},
                        {"ppl_stderr", 0.3},
                        {"base_ppl", 20.5},
                        {"ppl_delta", 0.0039024},
                        {"mean_kl", 0.0045},
                        {"top1_agreement", 0.9576}}));
  cells.push_back(cell("00000000000000p3", "ppl", "int4 + h2o 50%",
                       {{"ppl", 21.5},
                        {"base_ppl", 20.5},
                        {"ppl_delta", 0.0487},
                        {"mean_kl", 0.04},
                        {"top1_agreement", 0.88}}));
  cells.push_back(cell("00000000000000s1", "speed", "fp16",
                       {{"tests",
                         {{{"test", "pp64"}, {"tokens_per_s", 900.25}},
                          {{"test", "tg8"}, {"tokens_per_s", 300.0}},
                          {{"test", "tg8@d1024"}, {"tokens_per_s", 210.04}}}}}));
  cells.push_back(cell("00000000000000l1", "load", "fp16",
                       {{"load",
                         {{"ttft_p50", 0.0123},
                          {"ttft_p95", 0.02},
                          {"itl_p50", 0.004},
                          {"itl_p95", 0.005},
                          {"gen_tokens_per_s", 150}}}}));
  cells.push_back(cell("00000000000000n1", "needle", "fp16",
                       {{"accuracy", 1.0}, {"accuracy_by_context", {{"1024", 1.0}}}}));
  cells.push_back(cell("00000000000000n2", "needle", "int4",
                       {{"accuracy", 0.5}, {"accuracy_by_context", {{"1024", 0.5}}}}));
  cells.push_back(
      cell("00000000000000r1", "ruler", "fp16", {{"mean_score", 0.75}, {"task_scores", {{"mk", 0.75}}}}));
  return {{"grid", grid}, {"generated", "2026-12-04"}, {"machine", "2 cores"}, {"cells", cells}};
}

const ReportTable& Find(const std::vector<ReportTable>& ts, const std::string& id) {
  for (const auto& t : ts)
    if (t.id == id) return t;
  ADD_FAILURE() << "no table " << id;
  return ts.at(0);
}

TEST(ReportPageTest, TablesShowTheCellsNumbersAndWhereTheyCameFrom) {
  auto d = ReportData::From(Results());
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  const auto tables = ReportTables(*d, "smollm2-135m");
  const ReportTable& sum = Find(tables, "summary-smollm2-135m");
  ASSERT_EQ(sum.rows.size(), 3u);
  // method, B/token @ 2K, users @ 2K, decode @ 1K, dPPL, KL, top-1, needle,
  // RULER
  ASSERT_EQ(sum.head.size(), 9u);
  const auto& int4 = sum.rows[1];
  EXPECT_EQ(int4[0].text, "int4");
  EXPECT_EQ(int4[1].number.Text(), "7150");  // bytes without decimals
  EXPECT_EQ(int4[1].number.pointer, "/rows/0/held/1/per_token/total");
  EXPECT_EQ(int4[1].number.cell, "00000000000000b2");
  EXPECT_EQ(int4[2].number.Text(), "71");
  EXPECT_EQ(int4[4].number.Text(), "0.39 %");
  EXPECT_EQ(int4[5].number.Text(), "0.0045");
  EXPECT_EQ(int4[6].number.Text(), "95.8 %");
  EXPECT_EQ(int4[7].number.Text(), "50 %");
  EXPECT_FALSE(int4[3].number.ok());  // int4 has no speed cell
  EXPECT_EQ(int4[3].number.Text(), "–");
  EXPECT_EQ(sum.rows[0][3].number.Text(), "210.0");
  // fp16's own KL is not measured against itself: missing, not zero.
  EXPECT_FALSE(sum.rows[0][5].number.ok());
  const ReportTable& load = Find(tables, "load-smollm2-135m");
  EXPECT_EQ(load.rows.size(), 2u);  // eviction methods have no load row
  EXPECT_EQ(load.rows[0][1].number.Text(), "12.3");
}

TEST(ReportPageTest, HtmlIsSelfContainedAndLinksEveryNumberToItsCommand) {
  auto d = ReportData::From(Results());
  ASSERT_TRUE(d.ok());
  const std::string html = RenderReportHtml(*d);
  // Nothing fetched at view time.
  for (const char* net : {"http://", "https://", "src=\"", "<link"}) {
    std::string without_ns = std::regex_replace(html, std::regex("xmlns=\"http://www.w3.org/2000/svg\""), "");
    EXPECT_EQ(without_ns.find(net), std::string::npos) << net;
  }
  for (const char* chart : {"bytes", "users", "speed", "latency", "kl", "retrieval", "pareto"}) {
    EXPECT_NE(html.find(std::string("data-chart=\"") + chart + "\""), std::string::npos) << chart;
  }
  // Each number is an anchor to its command, and each command is on the page.
  const std::regex num("<a class=\"num\" href=\"#cmd-([0-9a-z]+)\"");
  int n = 0;
  for (auto it = std::sregex_iterator(html.begin(), html.end(), num); it != std::sregex_iterator();
       ++it, ++n) {
    EXPECT_NE(html.find("<li id=\"cmd-" + (*it)[1].str() + "\">"), std::string::npos) << (*it)[1];
  }
  EXPECT_GT(n, 30);
  EXPECT_EQ(html.find("nan"), std::string::npos);
  EXPECT_NE(html.find("title=\"slimkv ppl --kv int4\""), std::string::npos);
}

TEST(ReportPageTest, MarkdownHasTheTablesChartsAndCommands) {
  auto d = ReportData::From(Results());
  ASSERT_TRUE(d.ok());
  const std::string md = RenderReportMarkdown(*d, "figures/report/");
  EXPECT_NE(md.find("| int4 | 7150 | 71 | – | 0.39 % | 0.0045 | 95.8 % | 50 % | – |"), std::string::npos)
      << md;
  EXPECT_NE(md.find("](figures/report/smollm2-135m-pareto.svg)"), std::string::npos);
  EXPECT_NE(md.find("`slimkv ppl --kv int4`"), std::string::npos);
  EXPECT_FALSE(ReportData::From(json::parse(R"({"cells": []})")).ok());
}

}  // namespace
}  // namespace slimkv::eval
