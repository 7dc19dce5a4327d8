// slimkv serve: the OpenAI-compatible HTTP server (continuous batching over one engine).
//
// Threads: the engine thread (the scheduler's loop) runs every forward pass; the main thread
// runs every connection (async I/O); --http-threads workers parse and tokenize; one thread
// waits for SIGTERM/SIGINT. The first signal drains: idle and half-sent connections close at
// once, new requests get 503, requests in flight finish; the second, or --drain-timeout
// seconds later, cancels what is left; the process then exits 0.
//
// API keys: --api-key (repeatable), --api-key-file (one per line), and SLIMKV_API_KEY (the
// only environment variable slimkv reads, here in the CLI).
#include <pthread.h>
#include <signal.h>

#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <sstream>
#include <thread>

#include <spdlog/sinks/stdout_color_sinks.h>

#include "cli/commands.h"
#include "cli/common.h"
#include "engine/scheduler.h"
#include "kv/format.h"
#include "kv/policy.h"
#include "server/server.h"

namespace slimkv::cli {
namespace {

struct ServeFlags {
  CommonFlags common;
  std::string host = "127.0.0.1";
  int port = 8080;
  int parallel = 8;          // full-context sequences the default KV budget holds
  int max_running = 32;
  int max_waiting = 256;
  int max_batch_tokens = 512;
  std::vector<std::string> api_keys;
  std::string api_key_file;
  int max_tokens_limit = 4096;
  int max_prompt_tokens = 0;
  int max_n = 4;
  double max_body_mib = 1.0;
  bool no_prefix_cache = false;
  int http_threads = 2;
  double drain_timeout = 30;
  server::HttpLimits http;
  double request_timeout = 0;
  std::vector<std::string> allow_hosts, cors_origins;
  std::string alias;
  engine::SamplingParams sampling;
};

// Blocks the shutdown signals in the calling thread, and so in every thread it starts.
sigset_t ShutdownSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGUSR1);  // internal: "the server has stopped, stop waiting"
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  return set;
}

// Every key from the flags, the key file and SLIMKV_API_KEY; InvalidArgument for an empty
// key file or an unreadable one.
Result<std::vector<std::string>> ApiKeys(const ServeFlags& f) {
  std::vector<std::string> keys = f.api_keys;
  if (!f.api_key_file.empty()) {
    ASSIGN_OR_RETURN(const std::string text, ReadFile(f.api_key_file));
    size_t found = 0;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) {
      while (!line.empty() && std::isspace(static_cast<unsigned char>(line.back()))) line.pop_back();
      const size_t start = line.find_first_not_of(" \t");
      if (start == std::string::npos || line[start] == '#') continue;
      keys.push_back(line.substr(start));
      ++found;
    }
    if (found == 0) {
      return InvalidArgument("--api-key-file '{}' holds no key (one per line, # for comments)", f.api_key_file);
    }
  }
  if (const char* env = std::getenv("SLIMKV_API_KEY"); env != nullptr && *env != '\0') keys.emplace_back(env);
  for (const std::string& k : keys) {
    if (k.empty() || k.find_first_of(" \t\r\n") != std::string::npos) {
      return InvalidArgument("an API key must be non-empty and have no spaces");
    }
  }
  return keys;
}

int ServeMain(const ServeFlags& f) {
  if (Status st = f.sampling.Validate(); !st.ok()) return Fail(st);
  if (!(f.max_body_mib > 0 && f.max_body_mib <= 1024)) {
    return Fail(InvalidArgument("--max-body must be in (0, 1024] MiB, got {}", f.max_body_mib));
  }
  if (!(f.drain_timeout >= 0)) return Fail(InvalidArgument("--drain-timeout must be >= 0, got {}", f.drain_timeout));
  auto keys = ApiKeys(f);
  if (!keys.ok()) return Fail(keys.status());
  // Before any thread exists, so that only the signal thread sees these signals; a client
  // that closes its socket must not kill the server with SIGPIPE.
  const sigset_t signals = ShutdownSignals();
  signal(SIGPIPE, SIG_IGN);

  engine::EngineOptions eo;
  auto path = ResolveModel(f.common.model);
  if (!path.ok()) return Fail(path.status());
  eo.model_path = *path;
  auto kv_config = KvConfigFromFlags(f.common);
  if (!kv_config.ok()) return Fail(kv_config.status());
  eo.kv = *kv_config;
  if (!f.common.kv_policy.empty()) {
    auto policy = kv::ParsePolicy(f.common.kv_policy, f.common.kv_budget);
    if (!policy.ok()) return Fail(policy.status());
    eo.policy = *policy;  // shared prefixes stay shared: each sequence evicts after them
  } else if (f.common.kv_budget > 0) {
    return Fail(InvalidArgument("--kv-budget {} needs --kv-policy (one of {})", f.common.kv_budget, kv::PolicyList()));
  }
  eo.n_ctx = f.common.n_ctx > 0 ? f.common.n_ctx : 4096;
  eo.n_seq = f.parallel;
  eo.threads = f.common.threads;
  eo.prefill_chunk = f.max_batch_tokens;
  if (!(f.common.kv_mem_mib >= 0 && f.common.kv_mem_mib <= (1 << 30))) {
    return Fail(InvalidArgument("--kv-mem must be a number of MiB, got {}", f.common.kv_mem_mib));
  }
  eo.kv_budget_bytes = static_cast<size_t>(f.common.kv_mem_mib * 1024 * 1024);
  eo.kv_share = f.common.kv_share;
  if (eo.kv_share.starts_with("kvsharer:")) {
    auto text = ReadFile(ResolveDataFile("data/pg_essays.txt"));
    if (!text.ok()) return Fail(text.status());
    eo.kv_share_text = *text;
  }
  if (Status st = SetTierOptions(f.common, &eo); !st.ok()) return Fail(st);
  if (f.no_prefix_cache && (!eo.kv_disk_dir.empty() || !eo.kv_redis.empty())) {
    return Fail(InvalidArgument("--kv-disk and --kv-redis hold prefix blocks: they need the prefix cache (drop --no-prefix-cache)"));
  }
  // Every log line on stderr: stdout carries only the "listening on" line (the KV tiers warn
  // while the engine loads, e.g. of a read-only --kv-disk).
  spdlog::set_default_logger(spdlog::stderr_color_mt("serve"));
  spdlog::set_level(spdlog::level::warn);
  auto eng = LoadEngine(eo);
  if (!eng.ok()) return Fail(eng.status());
  engine::Engine& e = **eng;

  engine::SchedulerOptions so;
  so.max_running = f.max_running;
  so.max_waiting = f.max_waiting;
  so.max_batch_tokens = f.max_batch_tokens;
  so.prefix_sharing = !f.no_prefix_cache;
  auto sched = engine::Scheduler::Create(&e, so);
  if (!sched.ok()) return Fail(sched.status());
  engine::Scheduler& scheduler = **sched;

  server::ServerOptions o;
  o.host = f.host;
  o.port = f.port;
  o.api_keys = *keys;
  o.model_name = f.alias.empty() ? std::filesystem::path(*path).stem().string() : f.alias;
  o.http = f.http;
  o.http.max_body_bytes = static_cast<size_t>(f.max_body_mib * 1024 * 1024);
  o.request_timeout_seconds = f.request_timeout;
  o.allowed_hosts = f.allow_hosts;
  o.cors_origins = f.cors_origins;
  o.access_log = f.common.verbose;
  // A policy that re-indexes (window, sinks) holds constant memory: one conversation may run past the
  // context; -c then only sizes the default KV budget.
  o.limits.n_ctx = eo.policy.reindexes() ? (1 << 30) : eo.n_ctx;
  o.limits.max_prompt_tokens = f.max_prompt_tokens;
  o.limits.max_tokens = f.max_tokens_limit;
  o.limits.max_n = f.max_n;
  o.default_sampling = f.sampling;
  o.worker_threads = f.http_threads;
  if (f.common.verbose) spdlog::set_level(spdlog::level::info);  // the access log
  server::HttpServer http(e, scheduler, o);
  if (Status st = http.Bind(); !st.ok()) return Fail(st);
  scheduler.Start();

  const kv::KvCache& kv = e.kv();
  std::fprintf(stderr,
               "slimkv serve: model %s, context %d, KV %s (%zu bytes/token), budget %s, up to %d running / "
               "%d waiting\n",
               o.model_name.c_str(), eo.n_ctx, KvDescription(e).c_str(),
               kv.DataBytesPerToken() + kv.MetaBytesPerToken(), HumanBytes(kv.budget_bytes()).c_str(),
               f.max_running, f.max_waiting);
  if (!eo.kv_disk_dir.empty() || !eo.kv_redis.empty()) {
    std::fprintf(stderr, "slimkv serve: prefix blocks also kept in%s%s%s%s\n",
                 eo.kv_disk_dir.empty() ? "" : " disk ", eo.kv_disk_dir.c_str(),
                 eo.kv_redis.empty() ? "" : " redis ", eo.kv_redis.c_str());
  }
  std::printf("listening on http://%s:%d\n", f.host.c_str(), http.port());
  std::fflush(stdout);

  std::thread waiter([&] {
    int sig = 0;
    sigwait(&signals, &sig);
    if (sig == SIGUSR1) return;  // the server stopped by itself
    std::fprintf(stderr, "slimkv serve: %s: draining (no new requests; %s again to cancel the rest)\n",
                 sig == SIGTERM ? "SIGTERM" : "SIGINT", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    http.Shutdown();
    timespec timeout{static_cast<time_t>(f.drain_timeout),
                     static_cast<long>((f.drain_timeout - static_cast<time_t>(f.drain_timeout)) * 1e9)};
    siginfo_t info;
    const int again = sigtimedwait(&signals, &info, &timeout);
    if (again == SIGUSR1) return;  // drained
    std::fprintf(stderr, "slimkv serve: cancelling the requests still in flight\n");
    scheduler.Stop();  // every request ends (cancelled); its client is told so
    const timespec grace{1, 0};
    if (sigtimedwait(&signals, &info, &grace) == SIGUSR1) return;
    http.Close();  // every connection, even one whose client stopped reading
  });
  http.Serve();
  pthread_kill(waiter.native_handle(), SIGUSR1);
  waiter.join();
  scheduler.Stop();
  const engine::SchedulerStats st = scheduler.Stats();
  std::fprintf(stderr, "slimkv serve: stopped after %llu requests (%llu cancelled, %llu failed), %llu tokens generated\n",
               static_cast<unsigned long long>(st.finished + st.cancelled + st.failed),
               static_cast<unsigned long long>(st.cancelled), static_cast<unsigned long long>(st.failed),
               static_cast<unsigned long long>(st.generated_tokens));
  return 0;
}

}  // namespace

CommandMain AddServeCommand(CLI::App& app) {
  auto f = std::make_shared<ServeFlags>();
  f->sampling = engine::SamplingParams{};  // llama.cpp's defaults; a request's fields override them
  CLI::App* cmd = app.add_subcommand(
      "serve", "OpenAI-compatible HTTP server with continuous batching (-v: an access log line per request on stderr)");
  f->common.Add(cmd);
  cmd->add_option("-c,--ctx,--ctx-size", f->common.n_ctx,
                  "context size per sequence in tokens (default 4096; with --kv-policy window or sinks, "
                  "requests may run past it)")
      ->check(CLI::Range(0, 1 << 24));
  cmd->add_option("--host", f->host, "address to listen on (default 127.0.0.1: this machine only)");
  cmd->add_option("--port", f->port, "port (0: any free port; the chosen one is printed)")->check(CLI::Range(0, 65535));
  cmd->add_option("--parallel", f->parallel,
                  "(-np) full-context sequences the default KV budget holds (without --kv-mem; default 8)")
      ->check(CLI::Range(1, 4096));
  cmd->add_option("--max-running", f->max_running, "sequences decoded together at most (default 32)")
      ->check(CLI::Range(1, 4096));
  cmd->add_option("--max-waiting", f->max_waiting, "requests queued at most; more get HTTP 429 (default 256)")
      ->check(CLI::Range(0, 1 << 20));
  cmd->add_option("--max-batch-tokens", f->max_batch_tokens,
                  "tokens per forward pass: decode tokens plus prompt chunks (default 512)")
      ->check(CLI::Range(1, 1 << 16));
  cmd->add_option("--api-key", f->api_keys,
                  "require 'Authorization: Bearer KEY' on /v1/ routes; repeat for several keys (each key is a "
                  "tenant of the prefix cache); also read from SLIMKV_API_KEY")
      ->allow_extra_args(false);
  cmd->add_option("--api-key-file", f->api_key_file, "file of API keys, one per line ('#' starts a comment)");
  cmd->add_option("--max-tokens-limit", f->max_tokens_limit, "largest max_tokens a request may ask for (default 4096)")
      ->check(CLI::Range(1, 1 << 24));
  cmd->add_option("--max-prompt-tokens", f->max_prompt_tokens, "longest prompt accepted (default: the context - 1)")
      ->check(CLI::Range(0, 1 << 24));
  cmd->add_option("--max-n", f->max_n, "choices per request at most (n; default 4)")->check(CLI::Range(1, 64));
  cmd->add_option("--max-body", f->max_body_mib,
                  "largest request body in MiB, chunked or not; larger gets HTTP 413 (default 1)");
  cmd->add_flag("--no-prefix-cache", f->no_prefix_cache, "do not share KV blocks between requests with a common prefix");
  cmd->add_option("--http-threads", f->http_threads,
                  "threads that parse and tokenize requests (default 2; connections need no thread)")
      ->check(CLI::Range(1, 256));
  cmd->add_option("--max-connections", f->http.max_connections,
                  "open connections at most; more are answered 503 and closed (default 1024)")
      ->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--max-connections-per-client", f->http.max_connections_per_peer,
                  "open connections per client address at most (default 128; raise it behind a proxy)")
      ->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--header-timeout", f->http.header_timeout_s,
                  "seconds a client has to send a request header, from its first byte (default 10)")
      ->check(CLI::Range(0.1, 3600.0));
  cmd->add_option("--idle-timeout", f->http.idle_timeout_s,
                  "seconds a kept-alive connection may wait for its next request (default 15)")
      ->check(CLI::Range(0.1, 3600.0));
  cmd->add_option("--body-timeout", f->http.body_timeout_s, "seconds a client has to send a request body (default 30)")
      ->check(CLI::Range(0.1, 3600.0));
  cmd->add_option("--write-timeout", f->http.write_timeout_s,
                  "seconds a client may leave a response unread before it is dropped (default 30)")
      ->check(CLI::Range(0.1, 3600.0));
  cmd->add_option("--request-timeout", f->request_timeout,
                  "seconds a request may run; then it ends with finish_reason 'length' (503 if it never started; "
                  "0: no limit; default 0)")
      ->check(CLI::Range(0.0, 1e7));
  cmd->add_option("--allow-host", f->allow_hosts,
                  "Host name accepted besides loopback names (repeat; '*' for any). Bound to loopback, only "
                  "loopback names are accepted by default (DNS rebinding)")
      ->allow_extra_args(false);
  cmd->add_option("--cors-origin", f->cors_origins,
                  "origin allowed to call from a browser, e.g. http://localhost:3000 (repeat; '*' for any; "
                  "default none)")
      ->allow_extra_args(false);
  cmd->add_option("--drain-timeout", f->drain_timeout,
                  "seconds to let requests finish after SIGTERM before cancelling them (default 30)");
  cmd->add_option("--alias", f->alias, "model id shown in /v1/models and responses (default: the file name)");
  cmd->add_option("--temp", f->sampling.temperature, "default temperature (a request's 'temperature' overrides)");
  cmd->add_option("--top-k", f->sampling.top_k, "default top-k (0 = off)");
  cmd->add_option("--top-p", f->sampling.top_p, "default top-p (1 = off)");
  cmd->add_option("--min-p", f->sampling.min_p, "default min-p (0 = off)");
  cmd->add_option("--repeat-penalty", f->sampling.repeat_penalty, "default repetition penalty (1 = off)");
  return [f] { return ServeMain(*f); };
}

}  // namespace slimkv::cli
