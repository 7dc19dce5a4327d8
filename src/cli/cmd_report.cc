// slimkv report: runs a declared grid of models x KV methods x measures, one
// slimkv command per cell, and writes one self-contained HTML page (and
// optionally markdown) of memory, speed and quality side by side
// (eval/report_grid.h, eval/report_data.h).
//
// Each cell runs as a child process of this binary with `--json`, its output
// kept in OUT/cells/ID.log and its result in OUT/cells/ID.json; a cell whose
// JSON exists with the same arguments is not run again, so an interrupted
// report resumes where it stopped.
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <thread>

#include "base/log.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "eval/report_data.h"
#include "eval/report_grid.h"
#include "eval/result_json.h"
#include "eval/svg.h"

extern char** environ;

namespace slimkv::cli {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

struct ReportFlags {
  std::string grid;
  bool quick = false;
  std::string out;
  std::string markdown;
  std::vector<std::string> rerun;  // measures to run again although cached
  bool render_only = false;
  bool dry_run = false;
};

std::string UtcNow() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M UTC", &tm);
  return buf;
}

std::string LoadAverage() {
  std::ifstream in("/proc/loadavg");
  std::string a, b, c;
  in >> a >> b >> c;
  return a.empty() ? "unknown" : a + " " + b + " " + c;
}

std::string CpuName() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  }
  return "unknown CPU";
}

std::string Clock(double seconds) {
  const int s = static_cast<int>(seconds + 0.5);
  return s >= 3600 ? fmt::format("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
                   : fmt::format("{}:{:02}", s / 60, s % 60);
}

// Runs this binary with `args`, stdout and stderr into `log`; the exit status
// (-1: could not start).
int RunChild(const std::vector<std::string>& args, const std::string& log) {
  std::error_code ec;
  const std::string exe = fs::read_symlink("/proc/self/exe", ec).string();
  if (ec) return -1;
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  std::vector<char*> argv;
  argv.push_back(const_cast<char*>(exe.c_str()));
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  pid_t pid = 0;
  const int err = posix_spawn(&pid, exe.c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (err != 0) return -1;
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

json MethodJson(const eval::ReportMethod& m) {
  return {{"label", m.Label()},
          {"format", m.format.label},
          {"flags", m.format.flags},
          {"policy", m.policy},
          {"budget", m.budget}};
}

// Runs one command as a cell (or takes it from the cache): its JSON result, or null when it failed (reported
// on stderr).
struct CellRunner {
  std::string out;
  bool render_only = false;

  // The cell's JSON when it ran before with the same arguments, else null.
  json Cached(const std::string& id, const std::vector<std::string>& args) const {
    auto cached = eval::ReadJsonFile((fs::path(out) / "cells" / (id + ".json")).string());
    if (cached.ok() && cached->is_object() && cached->value("args", json()) == json(args) &&
        cached->contains("result")) {
      return *cached;
    }
    return nullptr;
  }

  // Cached (seconds = -1) unless `force`, else run (null when it failed or
  // render_only).
  json Run(const std::string& id, const std::vector<std::string>& args, bool force, double* seconds) const {
    const std::string base = (fs::path(out) / "cells" / id).string();
    if (json cached = force ? json(nullptr) : Cached(id, args); !cached.is_null()) {
      *seconds = -1;
      return cached;
    }
    if (render_only) return nullptr;
    std::vector<std::string> child = args;
    child.push_back("--json");
    child.push_back(base + ".result.json");
    const double start = NowSeconds();
    const int rc = RunChild(child, base + ".log");
    *seconds = NowSeconds() - start;
    auto result =
        rc == 0 ? eval::ReadJsonFile(base + ".result.json") : Result<json>(Internal("exit status {}", rc));
    if (!result.ok()) {
      std::fprintf(stderr, "  FAILED (%s) after %.1f s: see %s.log\n", result.status().message().c_str(),
                   *seconds, base.c_str());
      return nullptr;
    }
    std::error_code ec;
    fs::remove(base + ".result.json", ec);
    return {{"id", id},
            {"args", args},
            {"seconds", *seconds},
            {"finished", UtcNow()},
            {"load", LoadAverage()},
            {"result", *result}};
  }
};

// KVSharer's search runs once per model and grid spec (a `plan --kv-share
// kvsharer:...` cell); every cell of that model then names the map it found, so
// its command repeats the number without searching again. The search cells join
// the results (measure "share").
Status ResolveSharing(const CellRunner& runner, std::vector<eval::ReportCell>* cells, json* share_cells,
                      int* failed) {
  std::map<std::string, std::string> found;  // model + spec -> map
  for (eval::ReportCell& c : *cells) {
    for (size_t i = 1; i < c.args.size(); ++i) {
      if (c.args[i - 1] != "--kv-share" || !c.args[i].starts_with("kvsharer:")) continue;
      const std::string key = c.model + "\x1f" + c.args[i];
      if (!found.count(key)) {
        const std::vector<std::string> args = {"plan", "-m",           c.model, "--kv",       "fp16",   "-c",
                                               "256",  "--kv-mem-gib", "1",     "--kv-share", c.args[i]};
        eval::ReportCell search;
        search.model = c.model;
        search.args = args;
        std::fprintf(stderr, "KVSharer search for %s: %s\n", c.model.c_str(), search.Command().c_str());
        double seconds = 0;
        json cell = runner.Run(eval::ReportCellId(args), args, false, &seconds);
        if (cell.is_null() || !cell["result"].contains("kv_share_map")) {
          ++*failed;
          found[key] = "";
        } else {
          found[key] = cell["result"]["kv_share_map"].get<std::string>();
          if (seconds >= 0) {
            if (Status st = eval::WriteJsonFile(
                    (fs::path(runner.out) / "cells" / (eval::ReportCellId(args) + ".json")).string(), cell);
                !st.ok()) {
              return st;
            }
          }
          cell["measure"] = "share";
          cell["model"] = c.model;
          cell["method"] = {{"label", c.args[i]}};
          cell["command"] = search.Command();
          share_cells->push_back(cell);
          std::fprintf(stderr, "  %s -> %s\n", c.args[i].c_str(), found[key].c_str());
        }
      }
      if (!found[key].empty()) c.args[i] = found[key];
      c.id = eval::ReportCellId(c.args);
    }
  }
  return Status::Ok();
}

int ReportMain(const ReportFlags& f) {
  const std::string grid_file = ResolveDataFile(
      !f.grid.empty() ? f.grid : (f.quick ? "bench/report/quick.json" : "bench/report/default.json"));
  auto grid_json = eval::ReadJsonFile(grid_file);
  if (!grid_json.ok()) return Fail(grid_json.status());
  auto grid = eval::ParseReportGrid(*grid_json);
  if (!grid.ok()) return Fail(Status(grid.status().code(), grid_file + ": " + grid.status().message()));
  if (grid->name.empty()) grid->name = fs::path(grid_file).stem().string();
  const std::string out = f.out.empty() ? "out/report/" + grid->name : f.out;
  std::error_code ec;
  fs::create_directories(fs::path(out) / "cells", ec);
  if (ec) return Fail(IoError("cannot create '{}': {}", out, ec.message()));
  std::vector<eval::ReportCell> cells = eval::ExpandReportGrid(*grid);
  const std::string load_start = LoadAverage(), started = UtcNow();
  const double t0 = NowSeconds();
  const CellRunner runner{.out = out, .render_only = f.render_only || f.dry_run};
  json share_cells = json::array();
  int failed = 0;
  if (Status st = ResolveSharing(runner, &cells, &share_cells, &failed); !st.ok()) return Fail(st);
  double total_cost = 0;
  for (const auto& c : cells) total_cost += c.cost;
  std::fprintf(stderr,
               "report %s: %zu cells (%zu models x %zu methods), estimated %s "
               "on an idle machine; into %s\n",
               grid->name.c_str(), cells.size(), grid->models.size(), grid->Methods().size(),
               Clock(total_cost).c_str(), out.c_str());
  if (f.dry_run) {
    for (const auto& c : cells) std::printf("%s  %s\n", c.id.c_str(), c.Command().c_str());
    return 0;
  }
  json results_cells = share_cells;
  int ran = 0;
  double cost_done = 0, cost_ran = 0, seconds_ran = 0;
  for (size_t i = 0; i < cells.size(); ++i) {
    const eval::ReportCell& c = cells[i];
    const bool rerun =
        std::find(f.rerun.begin(), f.rerun.end(), eval::MeasureName(c.measure)) != f.rerun.end() ||
        std::find(f.rerun.begin(), f.rerun.end(), "all") != f.rerun.end();
    // The time left scales the estimate by how the cells run so far compared
    // with theirs.
    const double pace = cost_ran > 0 ? seconds_ran / cost_ran : 1.0;
    const std::string what =
        fmt::format("{} / {} / {}", c.model, c.method.Label(), eval::MeasureName(c.measure));
    const std::string head =
        fmt::format("[{}/{}] {} elapsed, ~{} left | {}", i + 1, cells.size(), Clock(NowSeconds() - t0),
                    Clock((total_cost - cost_done) * pace), what);
    const bool cached = !rerun && !runner.Cached(c.id, c.args).is_null();
    if (cached) {
      std::fprintf(stderr, "[%zu/%zu] cached: %s\n", i + 1, cells.size(), what.c_str());
    } else if (!f.render_only) {
      std::fprintf(stderr, "%s\n  %s\n", head.c_str(), c.Command().c_str());
    }
    double seconds = 0;
    json cell = runner.Run(c.id, c.args, rerun, &seconds);
    cost_done += c.cost;
    if (cell.is_null()) {
      failed += !f.render_only;
      continue;
    }
    cell["measure"] = eval::MeasureName(c.measure);
    cell["model"] = c.model;
    cell["method"] = MethodJson(c.method);
    cell["command"] = c.Command();
    if (seconds >= 0) {
      if (Status st = eval::WriteJsonFile((fs::path(out) / "cells" / (c.id + ".json")).string(), cell);
          !st.ok()) {
        return Fail(st);
      }
      std::fprintf(stderr, "  done in %.1f s (estimated %.0f)\n", seconds, c.cost);
      ++ran;
      cost_ran += c.cost;
      seconds_ran += seconds;
    }
    results_cells.push_back(cell);
  }
  const double wall = NowSeconds() - t0;
  // Cells reused from earlier runs were measured then: say when, and the highest 1-minute
  // load average at the end of a cell.
  std::string first, last;
  double max_load = 0;
  int reused = 0;
  for (const json& c : results_cells) {
    const std::string at = c.value("finished", "");
    if (at.empty()) continue;
    reused += at < started;
    if (first.empty() || at < first) first = at;
    if (at > last) last = at;
    max_load = std::max(max_load, std::atof(c.value("load", "0").c_str()));
  }
  std::string machine = fmt::format("{} cores ({}), load average {} at the start and {} at the end",
                                    std::thread::hardware_concurrency(), CpuName(), load_start, LoadAverage());
  if (!first.empty()) {
    machine += fmt::format("; cells measured {} to {} ({} reused from earlier runs), 1-minute load at most {:.2f} "
                           "when one ended",
                           first, last, reused, max_load);
  }
  json results = {
      {"grid", eval::ReportGridJson(*grid)},
      {"grid_file", grid_file},
      {"generated", UtcNow()},
      {"machine", machine},
      {"wall_seconds", wall},
      {"cells_run", ran},
      {"cells", results_cells}};
  if (Status st = eval::WriteJsonFile((fs::path(out) / "results.json").string(), results); !st.ok())
    return Fail(st);
  auto data = eval::ReportData::From(results);
  if (!data.ok()) return Fail(data.status());
  const std::string page = (fs::path(out) / "report.html").string();
  if (Status st = eval::WriteTextFile(page, eval::RenderReportHtml(*data)); !st.ok()) return Fail(st);
  if (!f.markdown.empty()) {
    // Charts beside the markdown, under figures/report/.
    const fs::path dir = fs::path(f.markdown).parent_path();
    fs::create_directories(dir / "figures" / "report", ec);
    for (const auto& model : grid->models) {
      for (const auto& chart : eval::ReportCharts(*data, model)) {
        const std::string path =
            (dir / "figures" / "report" / (eval::ReportChartStem(model, chart.id) + ".svg")).string();
        if (Status st = eval::WriteTextFile(path, chart.svg); !st.ok()) return Fail(st);
      }
    }
    if (Status st = eval::WriteTextFile(f.markdown, eval::RenderReportMarkdown(*data, "figures/report/"));
        !st.ok()) {
      return Fail(st);
    }
  }
  std::fprintf(stderr, "report: %d cells run, %zu cached, %d failed in %s; %s\n", ran,
               results_cells.size() - share_cells.size() - static_cast<size_t>(ran), failed,
               Clock(wall).c_str(), page.c_str());
  return failed ? 1 : 0;
}

}  // namespace

CommandMain AddReportCommand(CLI::App& app) {
  auto f = std::make_shared<ReportFlags>();
  CLI::App* cmd = app.add_subcommand("report",
                                     "run a grid of models x KV methods x measures and write one "
                                     "self-contained HTML page");
  cmd->add_option("--grid", f->grid,
                  "grid file (default bench/report/default.json, about 30 "
                  "minutes on 2 cores)");
  cmd->add_flag("--quick", f->quick, "the quick grid, bench/report/quick.json (about 3 minutes)");
  cmd->add_option("-o,--out", f->out,
                  "directory for cells/, results.json and report.html (default "
                  "out/report/NAME)");
  cmd->add_option("--markdown", f->markdown,
                  "also write the tables as markdown to this file and the "
                  "charts beside it under figures/report/");
  cmd->add_option("--rerun", f->rerun,
                  "run these measures again although cached (bytes, speed, "
                  "load, ppl, needle, "
                  "ruler, or all)")
      ->delimiter(',');
  cmd->add_flag("--render-only", f->render_only, "run nothing: render the page from the cells already there");
  cmd->add_flag("--dry-run", f->dry_run, "print every cell's command and run nothing");
  return [f] { return ReportMain(*f); };
}

}  // namespace slimkv::cli
