// slimkv <command>: argument parsing and wiring only.
#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include <map>

#include "cli/commands.h"

int main(int argc, char** argv) {
  CLI::App app{"slimkv: an LLM inference engine built around a small, fast KV cache"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "slimkv 0.1.0");
  spdlog::set_level(spdlog::level::warn);
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
  CLI11_PARSE(app, argc, argv);
  for (auto& [sub, fn] : commands) {
    if (sub->parsed()) return fn();
  }
  return 1;
}
