// slimkv bench: prefill and decode throughput (llama-bench's pp / tg tests)
// against the machine's measured memory bandwidth, and latency under load
// (closed-loop clients through the serving scheduler: TTFT and inter-token
// latency).
#include <cstdio>
#include <memory>
#include <sstream>

#include "cli/commands.h"
#include "cli/common.h"
#include "eval/bandwidth.h"
#include "eval/bench.h"
#include "eval/load.h"
#include "eval/result_json.h"

namespace slimkv::cli {
namespace {

struct BenchFlags {
  CommonFlags common;
  std::vector<std::string> tests = {"pp512", "tg128", "tg128@d2048"};
  int reps = 3;
  uint64_t seed = 1;
  bool no_bandwidth = false;
  bool same_context = false;
  eval::LoadOptions load{.clients = 0};
  std::string json;
  CLI::Option* tests_opt = nullptr;
};

// A table cell padded to `width` columns (fmt pads by code points, so "±"
// counts as one).
std::string Cell(const std::string& s, int width, bool left = false) {
  return left ? fmt::format("{:<{}}", s, width) : fmt::format("{:>{}}", s, width);
}

int BenchMain(BenchFlags f) {
  const bool load = f.load.clients > 0;
  // With --clients alone only the load runs; name --tests to run both.
  if (load && f.tests_opt->count() == 0) f.tests.clear();
  std::vector<eval::BenchCase> cases;
  int need_ctx = 0;
  for (const auto& s : f.tests) {
    auto c = eval::ParseBenchCase(s);
    if (!c.ok()) return Fail(c.status());
    need_ctx = std::max(need_ctx, c->prompt_tokens + c->gen_tokens * (f.same_context ? f.reps + 1 : 1) + 1);
    cases.push_back(*c);
  }
  if (load) {
    if (f.load.requests == 0) f.load.requests = 4 * f.load.clients;
    need_ctx = std::max(need_ctx, f.load.prompt_tokens + f.load.gen_tokens + 1);
  }
  auto engine_or = MakeEngine(f.common, std::max(need_ctx, f.common.n_ctx), load ? f.load.clients : 1);
  if (!engine_or.ok()) return Fail(engine_or.status());
  engine::Engine& eng = **engine_or;
  double bw = 0;
  if (!f.no_bandwidth && !cases.empty()) {
    bw = eval::MeasureReadBandwidth(eng.pool(), size_t{1} << 30, 5).read_gbps;
  }
  std::printf(
      "model %s, KV %s (%zu bytes/token), %d threads, weights %.1f MiB "
      "read per token\n",
      eng.model().config().name.c_str(), KvDescription(eng).c_str(),
      eng.kv().DataBytesPerToken() + eng.kv().MetaBytesPerToken(), f.common.threads,
      eng.model().WeightBytesPerToken() / 1048576.0);
  nlohmann::json out{{"model", eng.model().config().name},
                     {"kv", KvDescription(eng)},
                     {"threads", f.common.threads},
                     {"tests", nlohmann::json::array()}};
  if (bw > 0) {
    std::printf("measured read bandwidth: %.1f GB/s (%d threads)\n", bw, f.common.threads);
    out["bandwidth_gbps"] = bw;
  }
  if (!cases.empty()) {
    // Without the probe there is no bandwidth to compare with: the column says
    // so.
    std::printf("| %s | %s | %s | %s | %s |\n", Cell("test", 14, true).c_str(), Cell("tokens/s", 16).c_str(),
                Cell("MB/step", 12).c_str(), Cell("GB/s", 10).c_str(), Cell("of bandwidth", 12).c_str());
    std::printf("|%s|%s:|%s:|%s:|%s:|\n", std::string(16, '-').c_str(), std::string(17, '-').c_str(),
                std::string(13, '-').c_str(), std::string(11, '-').c_str(), std::string(13, '-').c_str());
  }
  for (const auto& c : cases) {
    auto r = eval::RunBench(eng, c, f.reps, f.seed, f.same_context);
    if (!r.ok()) return Fail(r.status());
    const std::string rate = fmt::format("{:.1f} ± {:.1f}", r->tokens_per_s, r->stddev);
    std::string mb, gbps, share;
    if (c.gen_tokens > 0) {
      mb = fmt::format("{:.1f}", r->bytes_per_step / 1e6);
      gbps = fmt::format("{:.1f}", r->gbps);
      share = bw > 0 ? fmt::format("{:.0f} %", 100 * r->gbps / bw) : "n/a";
    }
    std::printf("| %s | %s | %s | %s | %s |\n", Cell(c.name, 14, true).c_str(), Cell(rate, 16).c_str(),
                Cell(mb, 12).c_str(), Cell(gbps, 10).c_str(), Cell(share, 12).c_str());
    std::fflush(stdout);
    nlohmann::json t = eval::ToJson(*r);
    if (c.gen_tokens > 0 && bw > 0) t["bandwidth_share"] = r->gbps / bw;
    out["tests"].push_back(t);
  }
  if (!cases.empty() && eng.kv().policy().recall) {  // recall's traffic over every test (warm-ups too)
    const kv::EvictionStats e = eng.kv().eviction_stats();
    std::printf("%s\n", kv::RecallSummary(e).c_str());
    out["recall"] = eval::RecallJson(e);
  }
  if (load) {
    auto r = eval::RunLoad(eng, f.load);
    if (!r.ok()) return Fail(r.status());
    std::printf(
        "\nload: %d clients, %d requests of %d prompt + %d generated "
        "tokens, %.1f s\n",
        f.load.clients, r->requests, f.load.prompt_tokens, f.load.gen_tokens, r->seconds);
    std::printf("  TTFT  p50 %.1f ms, p95 %.1f ms, mean %.1f ms\n", 1e3 * r->ttft_p50, 1e3 * r->ttft_p95,
                1e3 * r->ttft_mean);
    std::printf("  ITL   p50 %.1f ms, p95 %.1f ms, mean %.1f ms\n", 1e3 * r->itl_p50, 1e3 * r->itl_p95,
                1e3 * r->itl_mean);
    std::printf("  %.1f generated tokens/s in all, request p50 %.2f s\n", r->gen_tokens_per_s, r->e2e_p50);
    out["load"] = {{"clients", f.load.clients},
                   {"requests", r->requests},
                   {"prompt_tokens", f.load.prompt_tokens},
                   {"gen_tokens", f.load.gen_tokens},
                   {"seconds", r->seconds},
                   {"ttft_p50", r->ttft_p50},
                   {"ttft_p95", r->ttft_p95},
                   {"ttft_mean", r->ttft_mean},
                   {"itl_p50", r->itl_p50},
                   {"itl_p95", r->itl_p95},
                   {"itl_mean", r->itl_mean},
                   {"e2e_p50", r->e2e_p50},
                   {"gen_tokens_per_s", r->gen_tokens_per_s}};
  }
  if (!f.json.empty()) {
    if (Status st = eval::WriteJsonFile(f.json, out); !st.ok()) return Fail(st);
  }
  return 0;
}

}  // namespace

CommandMain AddBenchCommand(CLI::App& app) {
  auto f = std::make_shared<BenchFlags>();
  CLI::App* cmd =
      app.add_subcommand("bench", "prefill and decode throughput (llama-bench style), latency under load");
  f->common.Add(cmd);
  cmd->add_option("-c,--ctx-size", f->common.n_ctx, "context size (default: what the tests need)")
      ->check(CLI::Range(0, 1 << 24));
  f->tests_opt =
      cmd->add_option("--tests", f->tests, "tests: ppN, tgN, tgN@dD (default pp512 tg128 tg128@d2048)")
          ->delimiter(',');
  cmd->add_option("-r,--repetitions", f->reps, "timed repetitions per test")->check(CLI::Range(1, 100));
  cmd->add_option("-s,--seed", f->seed, "seed of the random tokens");
  cmd->add_flag("--no-bandwidth", f->no_bandwidth, "skip the memory bandwidth probe");
  cmd->add_flag("--same-context", f->same_context,
                "tgN@dD: build the D-token context once and time the repetitions one "
                "after another on it (the "
                "depth grows by N per repetition) instead of rebuilding it for each");
  cmd->add_option("--clients", f->load.clients,
                  "latency under load: this many closed-loop clients through "
                  "the serving scheduler (TTFT, ITL); "
                  "alone it runs only the load, with --tests both")
      ->check(CLI::Range(0, 1024));
  cmd->add_option("--requests", f->load.requests, "with --clients: requests in all (default 4 per client)")
      ->check(CLI::Range(0, 1 << 20));
  cmd->add_option("--prompt-tokens", f->load.prompt_tokens,
                  "with --clients: prompt tokens per request (default 128)")
      ->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--gen-tokens", f->load.gen_tokens,
                  "with --clients: generated tokens per request (default 32)")
      ->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--json", f->json, "also write the results to this JSON file");
  return [f] { return BenchMain(*f); };
}

}  // namespace slimkv::cli
