// loadgen: a load generator for OpenAI-compatible servers (slimkv serve, llama-server),
// bounded in requests and time, loopback only.
//
//   loadgen --url http://127.0.0.1:8080 throughput --clients 1,4,16,64 --requests-per-client 4
//   loadgen --url ... prefix --requests 32 --prefix-words 900
//   loadgen --url http://127.0.0.1:8080,http://127.0.0.1:8081 prefix --stagger-ms 200
//   loadgen --url ... soak --requests 1000 --clients 16
//
// throughput: closed-loop clients, each sending streamed /v1/completions with a prompt of its
//   own (no prefix hits) and ignore_eos, so every request generates exactly --max-tokens.
//   Per level: aggregate generated tokens/s over the level's wall time, and p50/p99 of the
//   time to first token and of the gaps between tokens.
// prefix: --requests requests at once sharing a long system text, each with its own question;
//   time to first token, prompt tokens served from the cache (usage.prompt_tokens_details),
//   and the peak of slimkv_kv_blocks_used while they run (from /metrics, slimkv only).
//   Several comma-separated --url: request i goes to url i mod n (round-robin, as a load
//   balancer would send them); --stagger-ms: request i starts i x that many ms after the first;
//   --warm: the first instance has answered one request with the system text before.
// soak: a mix of good requests (streamed or not), clients that disconnect mid-stream, and
//   bad requests (malformed JSON, bad fields, too long prompts, unknown routes, oversized
//   bodies); checks every good request got a full answer, every bad one an OpenAI error
//   with a 4xx status, the server is alive, and once idle the KV pool holds only the prefix
//   cache's blocks (no block leaked).
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

struct Target {
  std::string host;
  int port = 0;
};

struct Outcome {
  int status = 0;               // HTTP status, 0 if the connection failed
  bool done = false;            // a stream ended with [DONE] / a body was complete
  std::string finish_reason;
  std::string text;
  std::string error;            // error object message or transport error
  std::string error_type;
  double ttft = -1;             // seconds to the first non-empty text
  std::vector<double> token_times;  // seconds since the request, one per text chunk
  int completion_tokens = -1;   // from usage
  int prompt_tokens = -1;
  int cached_tokens = -1;
  bool aborted = false;         // we closed the connection on purpose
};

// Sends one POST; streams SSE when the body asks for it. abort_after > 0: disconnect after
// that many text chunks.
Outcome Post(const Target& t, const std::string& path, const std::string& body, bool stream, int abort_after = 0,
             int timeout_s = 600) {
  Outcome o;
  httplib::Client cli(t.host, t.port);
  cli.set_read_timeout(timeout_s, 0);
  cli.set_write_timeout(60, 0);
  cli.set_connection_timeout(10, 0);
  httplib::Request req;
  req.method = "POST";
  req.path = path;
  req.body = body;
  req.set_header("Content-Type", "application/json");
  const auto t0 = Clock::now();
  std::string buf, raw;
  int chunks = 0;
  auto handle_event = [&](const std::string& data) {
    if (data == "[DONE]") {
      o.done = true;
      return true;
    }
    json j = json::parse(data, nullptr, false);
    if (j.is_discarded()) return true;
    if (j.contains("error")) {
      o.error = j["error"].value("message", "error");
      return true;
    }
    if (j.contains("usage") && j["usage"].is_object()) {
      o.completion_tokens = j["usage"].value("completion_tokens", -1);
      o.prompt_tokens = j["usage"].value("prompt_tokens", -1);
      if (j["usage"].contains("prompt_tokens_details") && j["usage"]["prompt_tokens_details"].is_object())
        o.cached_tokens = j["usage"]["prompt_tokens_details"].value("cached_tokens", -1);
    }
    if (j.contains("choices") && j["choices"].is_array() && !j["choices"].empty()) {
      const json& c = j["choices"][0];
      std::string piece;
      if (c.contains("text") && c["text"].is_string()) piece = c["text"];
      if (c.contains("delta") && c["delta"].contains("content") && c["delta"]["content"].is_string())
        piece = c["delta"]["content"];
      if (c.contains("finish_reason") && c["finish_reason"].is_string()) o.finish_reason = c["finish_reason"];
      if (!piece.empty()) {
        const double now = Seconds(t0, Clock::now());
        if (o.ttft < 0) o.ttft = now;
        o.token_times.push_back(now);
        o.text += piece;
        if (abort_after > 0 && ++chunks >= abort_after) return false;
      }
    }
    return true;
  };
  req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
    if (!stream) {
      raw.append(data, n);
      return true;
    }
    buf.append(data, n);
    size_t pos;
    while ((pos = buf.find("\n\n")) != std::string::npos) {
      std::string event = buf.substr(0, pos);
      buf.erase(0, pos + 2);
      for (size_t start = 0; start < event.size();) {
        size_t end = event.find('\n', start);
        if (end == std::string::npos) end = event.size();
        const std::string line = event.substr(start, end - start);
        if (line.rfind("data: ", 0) == 0 && !handle_event(line.substr(6))) {
          o.aborted = true;
          return false;
        }
        start = end + 1;
      }
    }
    return true;
  };
  httplib::Result res = cli.send(req);
  if (!res) {
    if (!o.aborted) o.error = "transport: " + httplib::to_string(res.error());
    return o;
  }
  o.status = res->status;
  const std::string& payload = stream && o.status == 200 ? std::string() : (raw.empty() ? res->body : raw);
  if (!payload.empty()) {
    json j = json::parse(payload, nullptr, false);
    if (!j.is_discarded() && j.is_object()) {
      if (j.contains("error") && j["error"].is_object()) {
        o.error = j["error"].value("message", "");
        o.error_type = j["error"].value("type", "");
      } else if (j.contains("choices") && j["choices"].is_array() && !j["choices"].empty()) {
        const json& c = j["choices"][0];
        if (c.contains("text") && c["text"].is_string()) o.text = c["text"];
        if (c.contains("message")) o.text = c["message"].value("content", "");
        if (c.contains("finish_reason") && c["finish_reason"].is_string()) o.finish_reason = c["finish_reason"];
        if (j.contains("usage")) {
          o.completion_tokens = j["usage"].value("completion_tokens", -1);
          o.prompt_tokens = j["usage"].value("prompt_tokens", -1);
        }
        o.done = true;
      }
    }
  }
  return o;
}

std::pair<int, std::string> Get(const Target& t, const std::string& path) {
  httplib::Client cli(t.host, t.port);
  cli.set_read_timeout(30, 0);
  auto res = cli.Get(path.c_str());
  if (!res) return {0, ""};
  return {res->status, res->body};
}

std::map<std::string, double> Metrics(const Target& t) {
  std::map<std::string, double> m;
  auto [status, body] = Get(t, "/metrics");
  if (status != 200) return m;
  size_t start = 0;
  while (start < body.size()) {
    size_t end = body.find('\n', start);
    if (end == std::string::npos) end = body.size();
    const std::string line = body.substr(start, end - start);
    start = end + 1;
    if (line.empty() || line[0] == '#') continue;
    const size_t sp = line.rfind(' ');
    if (sp == std::string::npos) continue;
    m[line.substr(0, sp)] = std::atof(line.c_str() + sp + 1);
  }
  return m;
}

double Quantile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size() - 1) + 0.5));
  return v[i];
}

// Prompt text of about `words` words (most are one token each for the models used here).
const char* kWords[] = {"the", "river", "morning", "light", "across", "old", "stone", "bridge", "quiet", "village",
                        "market", "people", "walk", "slowly", "under", "green", "trees", "while", "children", "play",
                        "near", "water", "small", "boats", "drift", "past", "houses", "with", "red", "roofs",
                        "and", "bright", "windows", "open", "to", "warm", "air", "of", "early", "summer"};
std::string Words(int words, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string s;
  for (int i = 0; i < words; ++i) {
    if (i) s += ' ';
    s += kWords[rng() % std::size(kWords)];
  }
  return s;
}

struct CommonOptions {
  std::string url = "http://127.0.0.1:8080";
  std::string model = "default";
  std::string label = "server";
  double max_seconds = 600;  // every phase stops sending after this
};

Target ParseUrl(const std::string& url) {
  std::string rest = url;
  if (rest.rfind("http://", 0) == 0) rest = rest.substr(7);
  while (!rest.empty() && rest.back() == '/') rest.pop_back();
  const size_t colon = rest.rfind(':');
  Target t;
  t.host = colon == std::string::npos ? rest : rest.substr(0, colon);
  t.port = colon == std::string::npos ? 80 : std::atoi(rest.c_str() + colon + 1);
  if (t.host.front() == '[') t.host = t.host.substr(1, t.host.size() - 2);
  // Loopback only: this tool never sends load anywhere else.
  if (!(t.host == "localhost" || t.host.rfind("127.", 0) == 0 || t.host == "::1")) {
    std::fprintf(stderr, "error: --url must be a loopback address (127.0.0.0/8, localhost, ::1), got %s\n",
                 t.host.c_str());
    std::exit(2);
  }
  return t;
}

// ---------------------------------------------------------------------------------------
struct ThroughputOptions {
  std::vector<int> clients = {1, 4, 16, 64};
  int requests_per_client = 4;
  int max_requests = 128;  // per level
  int prompt_words = 64;
  int max_tokens = 64;
  double level_seconds = 120;
};

int RunThroughput(const CommonOptions& co, const ThroughputOptions& o) {
  const Target t = ParseUrl(co.url);
  const auto start_all = Clock::now();
  // Warm-up: one request, not measured.
  Post(t, "/v1/completions",
       json{{"model", co.model}, {"prompt", Words(o.prompt_words, 1)}, {"max_tokens", 4}, {"stream", true}}.dump(), true);
  // "decode tok/s": text chunks after each request's first, over the time during which at
  // least one request was between its first and last chunk: the aggregate decode rate,
  // prefill stalls of running requests included, idle gaps before a first token not (with
  // one client those gaps are the prompt's prefill; a server that caps its slots is not
  // credited with clients it does not run).
  std::printf("| server | clients | requests | errors | gen tokens | wall s | tokens/s | per client | decode tok/s | TTFT p50 | TTFT p99 | ITL p50 | ITL p99 |\n");
  std::printf("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  std::fflush(stdout);
  uint64_t seed = 1000;
  for (int clients : o.clients) {
    if (Seconds(start_all, Clock::now()) > co.max_seconds) break;
    const int total = std::min(o.max_requests, clients * o.requests_per_client);
    std::atomic<int> next{0};
    std::mutex mu;
    std::vector<double> ttft, itl;
    int64_t tokens = 0, decode_chunks = 0;
    std::vector<std::pair<double, double>> decoding;  // [first chunk, last chunk] since t0
    int done = 0, errors = 0;
    const auto t0 = Clock::now();
    const uint64_t level_seed = seed;
    seed += 10000;
    std::vector<std::thread> threads;
    for (int c = 0; c < clients; ++c) {
      threads.emplace_back([&] {
        for (;;) {
          const int i = next.fetch_add(1);
          if (i >= total || Seconds(t0, Clock::now()) > o.level_seconds) return;
          const json body = {{"model", co.model},
                             {"prompt", "Request " + std::to_string(level_seed + i) + ": " +
                                            Words(o.prompt_words, level_seed + i)},
                             {"max_tokens", o.max_tokens},
                             {"temperature", 0},
                             {"ignore_eos", true},
                             {"stream", true},
                             {"stream_options", {{"include_usage", true}}}};
          const double sent = Seconds(t0, Clock::now());
          const Outcome r = Post(t, "/v1/completions", body.dump(), true);
          std::lock_guard<std::mutex> lock(mu);
          if (r.status != 200 || !r.done || r.ttft < 0) {
            if (++errors <= 5)
              std::fprintf(stderr, "request %d failed: HTTP %d%s, %s%s\n", i, r.status, r.done ? "" : ", stream not done",
                           r.error_type.empty() ? "" : (r.error_type + ": ").c_str(), r.error.c_str());
            continue;
          }
          ++done;
          ttft.push_back(r.ttft);
          for (size_t k = 1; k < r.token_times.size(); ++k) itl.push_back(r.token_times[k] - r.token_times[k - 1]);
          if (r.token_times.size() > 1) {
            decode_chunks += static_cast<int64_t>(r.token_times.size()) - 1;
            decoding.emplace_back(sent + r.token_times.front(), sent + r.token_times.back());
          }
          tokens += r.completion_tokens > 0 ? r.completion_tokens : static_cast<int64_t>(r.token_times.size());
        }
      });
    }
    for (auto& th : threads) th.join();
    const double wall = Seconds(t0, Clock::now());
    std::sort(decoding.begin(), decoding.end());
    double decode_seconds = 0, covered_to = 0;  // length of the union of the intervals
    for (const auto& [a, b] : decoding) {
      const double from = std::max(a, covered_to);
      if (b > from) decode_seconds += b - from;
      covered_to = std::max(covered_to, b);
    }
    const double decode_rate = decode_seconds > 0 ? decode_chunks / decode_seconds : 0.0;
    std::printf("| %s | %d | %d | %d | %lld | %.1f | %.1f | %.1f | %.1f | %.3f | %.3f | %.4f | %.4f |\n", co.label.c_str(),
                clients, done, errors, static_cast<long long>(tokens), wall, tokens / wall, tokens / wall / clients,
                decode_rate, Quantile(ttft, 0.5), Quantile(ttft, 0.99), Quantile(itl, 0.5), Quantile(itl, 0.99));
    std::fflush(stdout);
  }
  return 0;
}

// ---------------------------------------------------------------------------------------
struct PrefixOptions {
  int requests = 32;
  int prefix_words = 900;
  int max_tokens = 16;
  int stagger_ms = 0;
  bool warm = false;
};

int RunPrefix(const CommonOptions& co, const PrefixOptions& o) {
  std::vector<Target> targets;
  for (size_t at = 0; at <= co.url.size();) {
    const size_t comma = std::min(co.url.find(',', at), co.url.size());
    if (comma > at) targets.push_back(ParseUrl(co.url.substr(at, comma - at)));
    at = comma + 1;
  }
  if (targets.empty()) targets.push_back(ParseUrl(co.url));
  const std::string system = "You are a helpful assistant. Read the passage and answer the question. Passage: " +
                             Words(o.prefix_words, 42) + "\n";
  auto request = [&](int i) {
    return json{{"model", co.model},
                {"prompt", system + "Question " + std::to_string(i) + ": what is item " + std::to_string(i * 7) +
                               " about?\nAnswer:"},
                {"max_tokens", o.max_tokens},
                {"temperature", 0},
                {"ignore_eos", true},
                {"stream", true},
                {"stream_options", {{"include_usage", true}}}}
        .dump();
  };
  if (o.warm) {  // the system text seen once before, by the first instance only
    const Outcome w = Post(targets[0], "/v1/completions", request(-1), true);
    if (w.status != 200 || !w.done) {
      std::fprintf(stderr, "loadgen: the warm-up request failed (HTTP %d)\n", w.status);
      return 1;
    }
  }
  // Blocks: summed over the instances at each poll.
  auto blocks = [&](const char* name) {
    double sum = 0;
    for (const Target& t : targets) sum += Metrics(t)[name];
    return sum;
  };
  std::atomic<bool> polling{true};
  double peak_blocks = 0, peak_shared = 0, base_blocks = blocks("slimkv_kv_blocks_used");
  std::thread poller([&] {
    while (polling) {
      peak_blocks = std::max(peak_blocks, blocks("slimkv_kv_blocks_used"));
      peak_shared = std::max(peak_shared, blocks("slimkv_kv_blocks_shared"));
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  });
  std::vector<Outcome> out(o.requests);
  std::vector<std::thread> threads;
  const auto t0 = Clock::now();
  for (int i = 0; i < o.requests; ++i) {
    threads.emplace_back([&, i] {
      std::this_thread::sleep_until(t0 + std::chrono::milliseconds(static_cast<int64_t>(i) * o.stagger_ms));
      out[i] = Post(targets[i % targets.size()], "/v1/completions", request(i), true);
    });
  }
  for (auto& th : threads) th.join();
  const double wall = Seconds(t0, Clock::now());
  polling = false;
  poller.join();
  std::vector<double> ttft;
  int errors = 0, max_cached = 0;
  int64_t cached = 0, prompt = 0;
  for (const Outcome& r : out) {
    if (r.status != 200 || !r.done) {
      ++errors;
      continue;
    }
    ttft.push_back(r.ttft);
    cached += std::max(0, r.cached_tokens);
    prompt += std::max(0, r.prompt_tokens);
    max_cached = std::max(max_cached, r.cached_tokens);
  }
  double mean = 0;
  for (double x : ttft) mean += x / std::max<size_t>(1, ttft.size());
  std::printf("| %s | %d | %d | %.1f | %.3f | %.3f | %.3f | %lld | %lld | %d | %.0f | %.0f |\n", co.label.c_str(),
              o.requests, errors, wall, Quantile(ttft, 0.5), mean, Quantile(ttft, 0.99),
              static_cast<long long>(prompt), static_cast<long long>(cached), max_cached, peak_blocks - base_blocks,
              peak_shared);
  std::fflush(stdout);
  return errors ? 1 : 0;
}

// ---------------------------------------------------------------------------------------
struct SoakOptions {
  int requests = 1000;
  int clients = 16;
  double cancel_fraction = 0.15;
  double bad_fraction = 0.15;
  int kv_streams = 90;  // blocks per prefix-cache entry (layers x KV heads) for the leak check
  uint64_t seed = 7;
};

int RunSoak(const CommonOptions& co, const SoakOptions& o) {
  const Target t = ParseUrl(co.url);
  std::atomic<int> next{0};
  std::mutex mu;
  std::map<std::string, int> counts;
  std::vector<std::string> failures;
  const auto t0 = Clock::now();
  auto fail = [&](const std::string& what) {
    std::lock_guard<std::mutex> lock(mu);
    if (failures.size() < 20) failures.push_back(what);
    ++counts["FAILED"];
  };
  std::vector<std::thread> threads;
  for (int c = 0; c < o.clients; ++c) {
    threads.emplace_back([&, c] {
      std::mt19937_64 rng(o.seed * 1000 + c);
      std::uniform_real_distribution<double> u(0, 1);
      for (;;) {
        const int i = next.fetch_add(1);
        if (i >= o.requests || Seconds(t0, Clock::now()) > co.max_seconds) return;
        const double x = u(rng);
        const bool chat = rng() % 2;
        const std::string path = chat ? "/v1/chat/completions" : "/v1/completions";
        json body = {{"model", co.model}, {"max_tokens", 4 + static_cast<int>(rng() % 28)}};
        // A third of the prompts share a prefix, so the prefix cache is exercised too.
        const std::string text = (rng() % 3 == 0 ? Words(80, 5) + " " : std::string()) + Words(8 + rng() % 40, rng());
        if (chat) {
          body["messages"] = json::array({{{"role", "user"}, {"content", text}}});
        } else {
          body["prompt"] = text;
        }
        if (x < o.bad_fraction) {
          // A bad request: each kind must get its 4xx and an OpenAI error object.
          const int kind = static_cast<int>(rng() % 6);
          std::string raw = body.dump();
          int want = 400;
          std::string p = path;
          switch (kind) {
            case 0: raw = "{\"prompt\": \"unterminated"; break;
            case 1: body["max_tokens"] = -5; raw = body.dump(); break;
            case 2: body["temperature"] = "hot"; raw = body.dump(); break;
            case 3: body.erase("messages"); body.erase("prompt"); raw = body.dump(); break;
            case 4: p = "/v1/no-such-route"; want = 404; break;
            case 5: raw = std::string(2 << 20, ' '); want = 413; break;
          }
          const Outcome r = Post(t, p, raw, false);
          if (r.status != want || r.error.empty()) {
            fail(fmt::format("bad request kind {} got HTTP {} ({})", kind, r.status, r.error));
          } else {
            std::lock_guard<std::mutex> lock(mu);
            ++counts["bad (rejected as expected)"];
          }
          continue;
        }
        if (x < o.bad_fraction + o.cancel_fraction) {
          body["stream"] = true;
          body["max_tokens"] = 64;
          body["ignore_eos"] = true;
          const Outcome r = Post(t, path, body.dump(), true, 1 + static_cast<int>(rng() % 6));
          if (!r.aborted && r.status != 200) fail(fmt::format("cancelled request got HTTP {} ({})", r.status, r.error));
          std::lock_guard<std::mutex> lock(mu);
          ++counts["cancelled by the client"];
          continue;
        }
        const bool stream = rng() % 2;
        body["stream"] = stream;
        const Outcome r = Post(t, path, body.dump(), stream);
        if (r.status == 429) {
          std::lock_guard<std::mutex> lock(mu);
          ++counts["good, 429 queue full"];
          continue;
        }
        if (r.status != 200 || !r.done || r.finish_reason.empty()) {
          fail(fmt::format("good request: HTTP {} done={} finish='{}' error='{}'", r.status, r.done, r.finish_reason,
                           r.error));
        } else {
          std::lock_guard<std::mutex> lock(mu);
          ++counts["good, answered"];
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  const double wall = Seconds(t0, Clock::now());
  // Idle again: nothing running or waiting, and every block left belongs to the prefix cache.
  std::map<std::string, double> m;
  for (int i = 0; i < 200; ++i) {
    m = Metrics(t);
    if (m["slimkv_requests_running"] == 0 && m["slimkv_requests_waiting"] == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  const auto health = Get(t, "/health");
  const double leaked = m["slimkv_kv_blocks_used"] - m["slimkv_prefix_cache_entries"] * o.kv_streams;
  std::printf("soak: %d requests in %.1f s by %d clients\n", next.load() > o.requests ? o.requests : next.load(),
              wall, o.clients);
  for (const auto& [k, v] : counts) std::printf("  %-28s %d\n", k.c_str(), v);
  std::printf("  server alive: %s; running %g, waiting %g; blocks used %g, prefix-cache blocks %g, leaked %g\n",
              health.first == 200 ? "yes" : "NO", m["slimkv_requests_running"], m["slimkv_requests_waiting"],
              m["slimkv_kv_blocks_used"], m["slimkv_prefix_cache_entries"] * o.kv_streams, leaked);
  std::printf("  server counters: finished %g, cancelled %g, failed %g, rejected %g, preemptions %g\n",
              m["slimkv_requests_total{outcome=\"finished\"}"], m["slimkv_requests_total{outcome=\"cancelled\"}"],
              m["slimkv_requests_total{outcome=\"failed\"}"], m["slimkv_requests_total{outcome=\"rejected\"}"],
              m["slimkv_preemptions_total"]);
  for (const auto& f : failures) std::printf("  FAIL %s\n", f.c_str());
  const bool ok = failures.empty() && health.first == 200 && leaked == 0 && m["slimkv_requests_running"] == 0;
  std::printf("soak: %s\n", ok ? "PASS" : "FAIL");
  return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"loadgen: bounded load against an OpenAI-compatible server on this machine"};
  app.require_subcommand(1);
  CommonOptions co;
  app.add_option("--url", co.url, "server base URL, loopback only (prefix: several, comma-separated, round-robin)");
  app.add_option("--model", co.model, "model field of the requests");
  app.add_option("--label", co.label, "name of the server in the tables");
  app.add_option("--max-seconds", co.max_seconds, "no request starts after this many seconds");
  ThroughputOptions to;
  auto* tp = app.add_subcommand("throughput", "tokens/s, TTFT and inter-token latency per client count");
  tp->add_option("--clients", to.clients, "client counts")->delimiter(',');
  tp->add_option("--requests-per-client", to.requests_per_client);
  tp->add_option("--max-requests", to.max_requests, "requests per level at most");
  tp->add_option("--prompt-words", to.prompt_words);
  tp->add_option("--max-tokens", to.max_tokens);
  tp->add_option("--level-seconds", to.level_seconds, "no request of a level starts after this");
  PrefixOptions po;
  auto* pp = app.add_subcommand("prefix", "requests sharing a long system prompt, all at once");
  pp->add_option("--requests", po.requests);
  pp->add_option("--prefix-words", po.prefix_words);
  pp->add_option("--max-tokens", po.max_tokens);
  pp->add_option("--stagger-ms", po.stagger_ms, "request i starts i x this many ms after the first")
      ->check(CLI::Range(0, 60000));
  pp->add_flag("--warm", po.warm, "before the timed requests, one request with the system text to the first --url only");
  SoakOptions so;
  auto* sp = app.add_subcommand("soak", "many requests with cancellations and bad requests mixed in");
  sp->add_option("--requests", so.requests);
  sp->add_option("--clients", so.clients);
  sp->add_option("--cancel-fraction", so.cancel_fraction);
  sp->add_option("--bad-fraction", so.bad_fraction);
  sp->add_option("--kv-streams", so.kv_streams, "layers x KV heads of the model (blocks per prefix-cache entry)");
  sp->add_option("--seed", so.seed);
  CLI11_PARSE(app, argc, argv);
  if (tp->parsed()) return RunThroughput(co, to);
  if (pp->parsed()) return RunPrefix(co, po);
  if (sp->parsed()) return RunSoak(co, so);
  return 1;
}
