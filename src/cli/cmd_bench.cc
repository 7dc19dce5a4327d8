// slimkv bench: prefill and decode throughput (llama-bench's pp / tg tests) against the
// machine's measured memory bandwidth.
#include <cstdio>
#include <memory>
#include <sstream>

#include "cli/commands.h"
#include "cli/common.h"
#include "eval/bandwidth.h"
#include "eval/bench.h"

namespace slimkv::cli {
namespace {

struct BenchFlags {
  CommonFlags common;
  std::vector<std::string> tests = {"pp512", "tg128", "tg128@d2048"};
  int reps = 3;
  uint64_t seed = 1;
  bool no_bandwidth = false;
};

int BenchMain(const BenchFlags& f) {
  std::vector<eval::BenchCase> cases;
  int need_ctx = 0;
  for (const auto& s : f.tests) {
    auto c = eval::ParseBenchCase(s);
    if (!c.ok()) return Fail(c.status());
    need_ctx = std::max(need_ctx, c->prompt_tokens + c->gen_tokens + 1);
    cases.push_back(*c);
  }
  auto engine_or = MakeEngine(f.common, std::max(need_ctx, f.common.n_ctx));
  if (!engine_or.ok()) return Fail(engine_or.status());
  engine::Engine& eng = **engine_or;
  double bw = 0;
  if (!f.no_bandwidth) {
    bw = eval::MeasureReadBandwidth(eng.pool(), size_t{1} << 30, 5).read_gbps;
  }
  std::printf("model %s, KV %s (%zu bytes/token), %d threads, weights %.1f MiB read per token\n",
              eng.model().config().name.c_str(), kv::ConfigName(eng.kv().config()).c_str(),
              eng.kv().DataBytesPerToken() + eng.kv().MetaBytesPerToken(), f.common.threads,
              eng.model().WeightBytesPerToken() / 1048576.0);
  if (bw > 0) std::printf("measured read bandwidth: %.1f GB/s (%d threads)\n", bw, f.common.threads);
  std::printf("| %-14s | %14s | %12s | %10s | %12s |\n", "test", "tokens/s", "MB/step", "GB/s",
              "of bandwidth");
  std::printf("|%s|%s|%s|%s|%s|\n", std::string(16, '-').c_str(), std::string(16, '-').c_str(),
              std::string(14, '-').c_str(), std::string(12, '-').c_str(), std::string(14, '-').c_str());
  for (const auto& c : cases) {
    auto r = eval::RunBench(eng, c, f.reps, f.seed);
    if (!r.ok()) return Fail(r.status());
    if (c.gen_tokens > 0) {
      std::printf("| %-14s | %8.1f ± %4.1f | %12.1f | %10.1f | %11.0f%% |\n", c.name.c_str(), r->tokens_per_s,
                  r->stddev, r->bytes_per_step / 1e6, r->gbps, bw > 0 ? 100 * r->gbps / bw : 0.0);
    } else {
      std::printf("| %-14s | %8.1f ± %4.1f | %12s | %10s | %12s |\n", c.name.c_str(), r->tokens_per_s,
                  r->stddev, "", "", "");
    }
    std::fflush(stdout);
  }
  return 0;
}

}  // namespace

CommandMain AddBenchCommand(CLI::App& app) {
  auto f = std::make_shared<BenchFlags>();
  CLI::App* cmd = app.add_subcommand("bench", "prefill and decode throughput (llama-bench style)");
  f->common.Add(cmd);
  cmd->add_option("-c,--ctx-size", f->common.n_ctx, "context size (default: what the tests need)")
      ->check(CLI::Range(0, 1 << 24));
  cmd->add_option("--tests", f->tests, "tests: ppN, tgN, tgN@dD (default pp512 tg128 tg128@d2048)");
  cmd->add_option("-r,--repetitions", f->reps, "timed repetitions per test")->check(CLI::Range(1, 100));
  cmd->add_option("-s,--seed", f->seed, "seed of the random tokens");
  cmd->add_flag("--no-bandwidth", f->no_bandwidth, "skip the memory bandwidth probe");
  return [f] { return BenchMain(*f); };
}

}  // namespace slimkv::cli
