// slimkv <command>: argument parsing and wiring only.
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <map>

#include "cli/commands.h"
#include "cli/common.h"
#include "cli/llama_flags.h"

int main(int argc, char** argv) {
  CLI::App app{"slimkv: an LLM inference engine built around a small, fast KV cache"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "slimkv 0.1.0");
  spdlog::set_level(spdlog::level::warn);
  // Every option shows its default in --help (subcommands inherit this; ShowDefaults below
  // settles the options whose stored default is a sentinel).
  app.option_defaults()->always_capture_default();
  std::map<CLI::App*, slimkv::cli::CommandMain> commands;
  auto add = [&](slimkv::cli::CommandMain (*adder)(CLI::App&)) {
    const size_t before = app.get_subcommands({}).size();
    slimkv::cli::CommandMain fn = adder(app);
    commands[app.get_subcommands({})[before]] = std::move(fn);
  };
  add(slimkv::cli::AddRunCommand);
  add(slimkv::cli::AddPerplexityCommand);
  add(slimkv::cli::AddInfoCommand);
  add(slimkv::cli::AddBenchCommand);
  add(slimkv::cli::AddPlanCommand);
  add(slimkv::cli::AddInspectKvCommand);
  add(slimkv::cli::AddNeedleCommand);
  add(slimkv::cli::AddServeCommand);
  slimkv::cli::ShowDefaults(app);
  auto args = slimkv::cli::RewriteLlamaCppFlags(argc, argv);
  if (!args.ok()) return slimkv::cli::Fail(args.status());
  // CLI11 parses a vector back to front.
  std::vector<std::string> reversed(args->rbegin(), args->rend());
  app.name(argv[0]);
  try {
    app.parse(reversed);
  } catch (const CLI::ParseError& e) {
    // --help and --version arrive as "errors" that exit 0. The rest are bad flags: reported
    // like every other bad input ("error: ...", exit 2), not with CLI11's own 10x codes.
    if (e.get_exit_code() == 0) return app.exit(e);
    std::fprintf(stderr, "error: %s\nRun with --help for more information.\n", e.what());
    return 2;
  }
  for (auto& [sub, fn] : commands) {
    if (sub->parsed()) return fn();
  }
  return 1;
}
