// slimkv needle: needle-in-a-haystack retrieval over contexts x depths (eval/needle.h), with
// any KV format and eviction policy, as a table and a heat map.
#include <cstdio>
#include <memory>
#include <sstream>

#include "cli/commands.h"
#include "cli/common.h"
#include "eval/needle.h"
#include "eval/result_json.h"

namespace slimkv::cli {
namespace {

struct NeedleFlags {
  CommonFlags common;
  std::string file = "data/pg_essays.txt";
  std::string spec = "data/needle.json";
  std::vector<int> contexts = {1024, 2048, 4096, 8192};
  std::vector<int> depths = {0, 25, 50, 75, 100};
  double budget_fraction = 0;
  int max_new = 32;
  std::string svg;
  bool outputs = false;
  std::string json;
  std::string prompt = "auto";
};

int NeedleMain(NeedleFlags f) {
  f.file = ResolveDataFile(f.file);
  f.spec = ResolveDataFile(f.spec);
  auto text = ReadFile(f.file);
  if (!text.ok()) return Fail(text.status());
  auto spec = eval::LoadNeedleSpec(f.spec);
  if (!spec.ok()) return Fail(spec.status());
  for (int c : f.contexts)
    if (c < 256) return Fail(InvalidArgument("--contexts: {} tokens is too short for a needle test (at least 256)", c));
  for (int d : f.depths)
    if (d < 0 || d > 100) return Fail(InvalidArgument("--depths: {} is not a percentage", d));
  eval::NeedleOptions o;
  o.contexts = f.contexts;
  o.depths = f.depths;
  o.max_new_tokens = f.max_new;
  o.budget_fraction = f.budget_fraction;
  o.prompt = eval::ParsePromptStyle(f.prompt);
  int max_ctx = 0;
  for (int c : f.contexts) max_ctx = std::max(max_ctx, c);
  // RunNeedle sets the policy per context; the engine is built with it at the longest one.
  CommonFlags cf = f.common;
  auto policy = PerContextPolicy(&cf, f.budget_fraction, max_ctx);
  if (!policy.ok()) return Fail(policy.status());
  o.policy = *policy;
  auto engine_or = MakeEngine(cf, max_ctx + f.max_new + 1);
  if (!engine_or.ok()) return Fail(engine_or.status());
  engine::Engine& eng = **engine_or;
  auto r = eval::RunNeedle(eng, *text, *spec, o);
  if (!r.ok()) return Fail(r.status());
  std::string what = KvDescription(eng);
  if (o.policy.active()) {
    what += ", " + kv::PolicyName(o.policy) +
            (f.budget_fraction > 0 ? fmt::format(" at {:.0f}% of the context", 100 * f.budget_fraction)
                                   : fmt::format(" budget {}", o.policy.budget));
  }
  if (r->plain) what += ", plain prompt";
  std::printf("needle in a haystack: %s; %s\n\n", eng.model().config().name.c_str(), what.c_str());
  std::fputs(eval::FormatNeedleTable(*r).c_str(), stdout);
  if (f.outputs) {
    for (const auto& c : r->cells) std::printf("[%d tokens, %d%%] %s\n", c.context, c.depth, c.output.c_str());
  }
  if (!f.svg.empty()) {
    const Status st = eval::WriteNeedleChart(*r, "needle: " + what, f.svg);
    if (!st.ok()) return Fail(st);
  }
  if (!f.json.empty()) {
    nlohmann::json j{{"model", eng.model().config().name}, {"kv", what}};
    j.update(eval::ToJson(*r));
    if (Status st = eval::WriteJsonFile(f.json, j); !st.ok()) return Fail(st);
  }
  return 0;
}

}  // namespace

CommandMain AddNeedleCommand(CLI::App& app) {
  auto f = std::make_shared<NeedleFlags>();
  CLI::App* cmd = app.add_subcommand("needle", "needle-in-a-haystack retrieval grid (contexts x depths)");
  f->common.Add(cmd);
  cmd->add_option("-f,--file", f->file, "haystack text (default data/pg_essays.txt)");
  cmd->add_option("--needle-spec", f->spec, "needle, question and answer (default data/needle.json)");
  cmd->add_option("--contexts", f->contexts, "context lengths in tokens")->delimiter(',');
  cmd->add_option("--depths", f->depths, "needle depths in percent")->delimiter(',');
  cmd->add_option("--budget-fraction", f->budget_fraction,
                  "with --kv-policy: budget as a fraction of each context (instead of --kv-budget)");
  cmd->add_option("--max-new", f->max_new, "answer tokens at most")->check(CLI::Range(1, 4096));
  cmd->add_option("--svg", f->svg, "write the heat map to this SVG file");
  cmd->add_flag("--outputs", f->outputs, "print every generated answer");
  AddPromptOption(cmd, &f->prompt);
  cmd->add_option("--json", f->json, "also write the results to this JSON file");
  return [f] { return NeedleMain(*f); };
}

}  // namespace slimkv::cli
