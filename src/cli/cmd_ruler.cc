// slimkv ruler: RULER-style long-context tasks (multi-key and multi-value
// needles, variable tracking, common-word extraction) generated from the eval
// text with a fixed seed (eval/ruler.h), with any KV format and eviction
// policy.
#include <algorithm>
#include <cstdio>
#include <memory>

#include "cli/commands.h"
#include "cli/common.h"
#include "eval/result_json.h"
#include "eval/ruler.h"

namespace slimkv::cli {
namespace {

struct RulerFlags {
  CommonFlags common;
  std::string file = "data/pg_essays.txt";
  std::vector<std::string> tasks = {"mk", "mv", "vt", "cwe"};
  std::vector<int> contexts = {2048};
  int samples = 4;
  uint64_t seed = 1;
  double budget_fraction = 0;
  bool outputs = false;
  std::string json;
  std::string prompt = "auto";
};

int RulerMain(const RulerFlags& f) {
  auto text = ReadFile(ResolveDataFile(f.file));
  if (!text.ok()) return Fail(text.status());
  for (const auto& t : f.tasks)
    if (auto s = eval::FindRulerTask(t); !s.ok()) return Fail(s.status());
  for (int c : f.contexts)
    if (c < 256)
      return Fail(InvalidArgument("--contexts: {} tokens is too short for a RULER task (at least 256)", c));
  eval::RulerOptions o;
  o.tasks = f.tasks;
  o.contexts = f.contexts;
  o.samples = f.samples;
  o.seed = f.seed;
  o.budget_fraction = f.budget_fraction;
  o.prompt = eval::ParsePromptStyle(f.prompt);
  int max_ctx = 0;
  for (int c : f.contexts) max_ctx = std::max(max_ctx, c);
  // As `needle`: RunRuler sets the policy per context.
  CommonFlags cf = f.common;
  auto policy = PerContextPolicy(&cf, f.budget_fraction, max_ctx);
  if (!policy.ok()) return Fail(policy.status());
  o.policy = *policy;
  auto engine_or = MakeEngine(cf, max_ctx + 256);  // room for the estimate of the template's tokens
  if (!engine_or.ok()) return Fail(engine_or.status());
  engine::Engine& eng = **engine_or;
  auto r = eval::RunRuler(eng, *text, o);
  if (!r.ok()) return Fail(r.status());
  std::string what = KvDescription(eng);
  if (o.policy.active()) {
    what += ", " + kv::PolicyName(o.policy) +
            (f.budget_fraction > 0 ? fmt::format(" at {:.0f}% of the context", 100 * f.budget_fraction)
                                   : fmt::format(" budget {}", o.policy.budget));
  }
  if (r->plain) what += ", plain prompt";
  std::printf("RULER-style tasks: %s; %s; %d samples per cell, seed %llu\n\n",
              eng.model().config().name.c_str(), what.c_str(), f.samples,
              static_cast<unsigned long long>(f.seed));
  std::fputs(eval::FormatRulerTable(*r).c_str(), stdout);
  if (f.outputs) {
    for (const auto& c : r->cells) {
      std::printf("[%s, %d tokens, sample %d, score %.2f] %s\n", c.task.c_str(), c.context, c.sample, c.score,
                  c.output.c_str());
    }
  }
  if (!f.json.empty()) {
    if (Status st = eval::WriteJsonFile(f.json, eval::ToJson(*r)); !st.ok()) return Fail(st);
  }
  return 0;
}

}  // namespace

CommandMain AddRulerCommand(CLI::App& app) {
  auto f = std::make_shared<RulerFlags>();
  CLI::App* cmd = app.add_subcommand("ruler",
                                     "RULER-style long-context tasks: multi-key/multi-value needles, "
                                     "variable tracking, common words");
  f->common.Add(cmd);
  cmd->add_option("-f,--file", f->file, "text the tasks are cut from (default data/pg_essays.txt)");
  cmd->add_option("--tasks", f->tasks, "tasks, comma-separated: " + eval::RulerTaskList() + " (default all)")
      ->delimiter(',');
  cmd->add_option("--contexts", f->contexts, "prompt lengths in tokens (default 2048)")->delimiter(',');
  cmd->add_option("--samples", f->samples, "samples per task and context (default 4)")
      ->check(CLI::Range(1, 1000));
  cmd->add_option("--seed", f->seed, "seed of the generated samples (default 1)");
  cmd->add_option("--budget-fraction", f->budget_fraction,
                  "with --kv-policy: budget as a fraction of each context "
                  "(instead of --kv-budget)");
  cmd->add_flag("--outputs", f->outputs, "print every generated answer");
  AddPromptOption(cmd, &f->prompt);
  cmd->add_option("--json", f->json, "also write the results to this JSON file");
  return [f] { return RulerMain(*f); };
}

}  // namespace slimkv::cli
