// The slimkv subcommands. Each registers its flags on a CLI11 subcommand and runs when it
// is chosen; the return value is the process exit code.
#pragma once

#include <CLI/CLI.hpp>

#include <functional>

namespace slimkv::cli {

using CommandMain = std::function<int()>;

CommandMain AddRunCommand(CLI::App& app);
CommandMain AddPerplexityCommand(CLI::App& app);
CommandMain AddInfoCommand(CLI::App& app);
CommandMain AddBenchCommand(CLI::App& app);
CommandMain AddPlanCommand(CLI::App& app);
CommandMain AddInspectKvCommand(CLI::App& app);
CommandMain AddNeedleCommand(CLI::App& app);
CommandMain AddRulerCommand(CLI::App& app);
CommandMain AddReportCommand(CLI::App& app);
CommandMain AddServeCommand(CLI::App& app);

}  // namespace slimkv::cli
