#include "server/metrics.h"

#include <fmt/format.h>

#include <initializer_list>
#include <optional>
#include <utility>
#include <vector>

namespace slimkv::server {
namespace {

class Writer {
 public:
  void Metric(const char* name, const char* type, const char* help, double value) {
    Header(name, type, help);
    out_ += fmt::format("{} {}\n", name, value);
  }
  void Header(const char* name, const char* type, const char* help) {
    out_ += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
  }
  void Sample(const std::string& name_and_labels, double value) {
    out_ += fmt::format("{} {}\n", name_and_labels, value);
  }
  // One series per value of one label: name{key="value"} for each (value, sample).
  void Labelled(const char* name, const char* type, const char* help, const char* key,
                std::initializer_list<std::pair<const char*, double>> samples) {
    Header(name, type, help);
    for (const auto& [value, x] : samples) out_ += fmt::format("{}{{{}=\"{}\"}} {}\n", name, key, value, x);
  }
  // `labels`: "" or `name="value",...` added to every sample.
  void Histogram(const char* name, const char* help, const engine::LatencyHistogram& h,
                 const std::string& labels = "") {
    Header(name, "histogram", help);
    const std::string extra = labels.empty() ? "" : "," + labels;
    const auto& bounds = engine::LatencyHistogram::kBounds;
    for (size_t b = 0; b < bounds.size(); ++b) {
      out_ += fmt::format("{}_bucket{{le=\"{}\"{}}} {}\n", name, bounds[b], extra, h.Cumulative(b));
    }
    out_ += fmt::format("{}_bucket{{le=\"+Inf\"{}}} {}\n", name, extra, h.count());
    const std::string braces = labels.empty() ? "" : "{" + labels + "}";
    out_ += fmt::format("{}_sum{} {}\n{}_count{} {}\n", name, braces, h.sum(), name, braces, h.count());
  }
  std::string Take() { return std::move(out_); }

 private:
  std::string out_;
};

// A label value as the text format wants it: backslash, double quote and newline escaped.
std::string LabelValue(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

double HitRate(const engine::SchedulerStats& s) {
  return s.prefix_lookups ? static_cast<double>(s.prefix_hits) / static_cast<double>(s.prefix_lookups) : 0.0;
}
double TokenHitRate(const engine::SchedulerStats& s) {
  return s.prompt_tokens ? static_cast<double>(s.prompt_tokens_cached) / static_cast<double>(s.prompt_tokens)
                         : 0.0;
}

// The quantities vLLM (V1) exports, under its names and its model_name label. vLLM counts
// prefix-cache queries and hits in tokens: prompt tokens looked up and found.
void VllmMetrics(Writer& w, const engine::SchedulerStats& s, const std::string& model) {
  const std::string label = fmt::format("model_name=\"{}\"", LabelValue(model));
  auto metric = [&](const char* name, const char* type, const char* help, double value) {
    w.Header(name, type, help);
    w.Sample(fmt::format("{}{{{}}}", name, label), value);
  };
  metric("vllm:num_requests_running", "gauge", "Number of requests in model execution batches.", s.running);
  metric("vllm:num_requests_waiting", "gauge", "Number of requests waiting to be processed.", s.waiting);
  metric("vllm:kv_cache_usage_perc", "gauge", "KV-cache usage. 1 means 100 percent usage.",
         s.kv_budget_bytes ? static_cast<double>(s.kv_bytes_used) / static_cast<double>(s.kv_budget_bytes)
                           : 0.0);
  metric("vllm:prefix_cache_queries_total", "counter",
         "Prefix cache queries, in terms of number of queried tokens.", static_cast<double>(s.prompt_tokens));
  metric("vllm:prefix_cache_hits_total", "counter", "Prefix cache hits, in terms of number of cached tokens.",
         static_cast<double>(s.prompt_tokens_cached));
  metric("vllm:num_preemptions_total", "counter", "Cumulative number of preemption from the engine.",
         static_cast<double>(s.preemptions));
  metric("vllm:prompt_tokens_total", "counter", "Number of prefill tokens processed.",
         static_cast<double>(s.prompt_tokens));
  metric("vllm:generation_tokens_total", "counter", "Number of generation tokens processed.",
         static_cast<double>(s.generated_tokens));
  w.Histogram("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", s.ttft,
              label);
  w.Histogram("vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", s.itl,
              label);
  w.Histogram("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.", s.e2e,
              label);
  w.Histogram("vllm:request_queue_time_seconds", "Histogram of time spent in WAITING phase for request.",
              s.queue, label);
  w.Histogram("vllm:request_prefill_time_seconds", "Histogram of time spent in PREFILL phase for request.",
              s.prefill, label);
  w.Histogram("vllm:request_decode_time_seconds", "Histogram of time spent in DECODE phase for request.",
              s.decode, label);
  w.Histogram("vllm:request_inference_time_seconds", "Histogram of time spent in RUNNING phase for request.",
              s.inference, label);
}

// The KV tiers, one label value per tier: "ram" (the prefix cache in the block pool), then the
// lower tiers in read order ("disk", "redis"). Hits and misses count block positions (ram) or
// records (one block position, every stream); a series a tier does not know is left out
// (Redis does not report what it holds: its own INFO does).
void TierMetrics(Writer& w, const engine::SchedulerStats& s) {
  const kv::PrefixStats& p = s.prefix;
  struct Row {
    std::string tier;
    const kv::tiers::TierStats* t;  // nullptr for ram
  };
  std::vector<Row> rows;
  if (s.prefix_sharing) rows.push_back({"ram", nullptr});
  for (const auto& [name, t] : s.tiers) rows.push_back({name, &t});
  if (rows.empty()) return;
  auto series = [&](const char* name, const char* type, const char* help, auto value) {
    bool header = false;
    for (const Row& r : rows) {
      const std::optional<double> v = value(r);
      if (!v) continue;
      if (!header) w.Header(name, type, help);
      header = true;
      w.Sample(fmt::format("{}{{tier=\"{}\"}}", name, LabelValue(r.tier)), *v);
    }
  };
  using Opt = std::optional<double>;
  auto d = [](int64_t v) { return Opt(static_cast<double>(v)); };
  series("slimkv_kv_tier_hits_total", "counter",
         "Blocks found in the tier (ram: block positions of prompts).",
         [&](const Row& r) { return r.t ? d(r.t->hits) : d(p.ram_hit_blocks); });
  series("slimkv_kv_tier_misses_total", "counter",
         "Blocks looked for and not found (ram: fetched from a lower tier or computed; a record that failed "
         "its checks counts here too).",
         [&](const Row& r) { return r.t ? d(r.t->gets - r.t->hits) : d(p.ram_miss_blocks); });
  series("slimkv_kv_tier_blocks", "gauge", "Blocks the tier holds (ram: prefix-cache entries).",
         [&](const Row& r) {
           return !r.t ? d(p.cached_blocks) : r.tier == "redis" ? Opt() : d(r.t->entries);
         });
  series("slimkv_kv_tier_bytes", "gauge",
         "Bytes the tier holds (ram: pool blocks the prefix cache references).", [&](const Row& r) {
           return !r.t ? d(p.bytes_held) : r.tier == "redis" ? Opt() : d(r.t->bytes_held);
         });
  series("slimkv_kv_tier_read_bytes_total", "counter", "Bytes of records read from the tier.",
         [&](const Row& r) { return r.t ? d(r.t->bytes_read) : Opt(); });
  series("slimkv_kv_tier_written_bytes_total", "counter", "Bytes of records written to the tier.",
         [&](const Row& r) { return r.t ? d(r.t->bytes_written) : Opt(); });
  series("slimkv_kv_tier_read_seconds_total", "counter", "Time spent in successful reads.",
         [&](const Row& r) { return r.t ? Opt(r.t->read_seconds) : Opt(); });
  series("slimkv_kv_tier_write_seconds_total", "counter", "Time spent in successful writes.",
         [&](const Row& r) { return r.t ? Opt(r.t->write_seconds) : Opt(); });
  series("slimkv_kv_tier_writes_total", "counter", "Records offered to the tier.",
         [&](const Row& r) { return r.t ? d(r.t->puts) : Opt(); });
  series("slimkv_kv_tier_write_failures_total", "counter",
         "Records the tier did not take (full, read-only, unreachable).",
         [&](const Row& r) { return r.t ? d(r.t->put_failures) : Opt(); });
  series("slimkv_kv_tier_fast_failures_total", "counter",
         "Calls refused without trying (a stopped disk, an open circuit).",
         [&](const Row& r) { return r.t ? d(r.t->fast_failures) : Opt(); });
  series("slimkv_kv_tier_corrupt_total", "counter",
         "Records that failed their checksum or fingerprint checks and were deleted, never used.",
         [&](const Row& r) { return r.t ? d(r.t->corrupt) : Opt(); });
  series("slimkv_kv_tier_evictions_total", "counter", "Blocks evicted from the tier for room.",
         [&](const Row& r) { return r.t ? d(r.t->evicted) : d(p.evicted); });
  // One sample per (tier, condition), 1 for the tier's condition now (the Prometheus enum idiom).
  bool header = false;
  for (const Row& r : rows) {
    if (!r.t) continue;
    if (!header) {
      w.Header("slimkv_kv_tier_state", "gauge",
               "1 for the tier's condition now: ok, full (stopped growing), read_only or failing (stopped "
               "writing), unreachable (circuit open).");
      header = true;
    }
    for (const char* c : kv::tiers::kTierConditions) {
      w.Sample(fmt::format("slimkv_kv_tier_state{{tier=\"{}\",state=\"{}\"}}", LabelValue(r.tier), c),
               r.t->condition == c ? 1 : 0);
    }
  }
  if (!s.tiers.empty()) {
    const kv::tiers::TierStackStats& ts = s.tier_stack;
    w.Metric("slimkv_kv_tier_records_loaded_total", "counter",
             "Records a lower tier returned to the prefix cache.", static_cast<double>(ts.loaded));
    w.Metric("slimkv_kv_tier_records_rejected_total", "counter",
             "Records a lower tier returned that the prefix cache refused (tokens, parent or shapes differ).",
             static_cast<double>(ts.rejected));
    w.Metric("slimkv_kv_tier_records_queued_total", "counter", "Records queued for the tier writer.",
             static_cast<double>(ts.stored));
    w.Metric("slimkv_kv_tier_records_dropped_total", "counter",
             "Records not written: the writer's queue was full.", static_cast<double>(ts.dropped));
    w.Metric("slimkv_kv_tier_blocks_fetched_total", "counter",
             "Prefix-cache entries filled from a lower tier.", static_cast<double>(p.tier_blocks));
    w.Metric("slimkv_kv_tier_read_aheads_total", "counter",
             "Waiting requests whose missing prefix blocks were read ahead from the lower tiers.",
             static_cast<double>(ts.prefetches));
    w.Header("slimkv_kv_tier_read_ahead_records_total", "counter",
             "Records read ahead: taken by the request's lookup from RAM (hit), or dropped untaken (unused).");
    w.Sample("slimkv_kv_tier_read_ahead_records_total{outcome=\"hit\"}", static_cast<double>(ts.prefetch_hits));
    w.Sample("slimkv_kv_tier_read_ahead_records_total{outcome=\"unused\"}",
             static_cast<double>(ts.prefetch_unused));
    w.Header("slimkv_kv_tier_fetch_decisions_total", "counter",
             "Lookups whose missing blocks were fetched from the lower tiers, or left to be recomputed "
             "because recomputing was measured faster.");
    w.Sample("slimkv_kv_tier_fetch_decisions_total{decision=\"fetch\"}",
             static_cast<double>(s.swap.fetch_chosen));
    w.Sample("slimkv_kv_tier_fetch_decisions_total{decision=\"recompute\"}",
             static_cast<double>(s.swap.recompute_chosen));
    w.Metric("slimkv_kv_tier_fetch_probes_total", "counter",
             "Fetch decisions taken only to measure a tier again after recomputing won 32 times in a row "
             "(counted in decision=\"fetch\" too).",
             static_cast<double>(s.swap.probes));
    w.Metric("slimkv_kv_tier_fetch_bytes_per_second", "gauge",
             "Measured rate of tier fetches (0: not measured yet).", s.swap.fetch_bytes_per_s);
    w.Metric("slimkv_prefill_tokens_per_second", "gauge",
             "Measured rate of prefill steps the tier fetches are weighed against (0: not measured yet).",
             s.swap.prefill_tokens_per_s);
  }
}

}  // namespace

std::string PrometheusText(const engine::SchedulerStats& s, const std::string& model, const HttpStats* http) {
  Writer w;
  w.Header("slimkv_info", "gauge", "The model and KV format served (labels), always 1.");
  w.Sample(
      fmt::format("slimkv_info{{model=\"{}\",kv_format=\"{}\"}}", LabelValue(model), LabelValue(s.kv_format)),
      1);
  w.Metric("slimkv_kv_budget_bytes", "gauge", "KV cache budget in bytes.",
           static_cast<double>(s.kv_budget_bytes));
  w.Metric("slimkv_kv_bytes_used", "gauge",
           "KV cache bytes in allocated blocks (prefix-cache blocks included).",
           static_cast<double>(s.kv_bytes_used));
  w.Metric(
      "slimkv_kv_bytes_free", "gauge", "KV cache bytes not allocated.",
      static_cast<double>(s.kv_budget_bytes > s.kv_bytes_used ? s.kv_budget_bytes - s.kv_bytes_used : 0));
  w.Metric("slimkv_kv_blocks_used", "gauge", "KV blocks allocated (staging and sealed).",
           static_cast<double>(s.kv_blocks_used));
  w.Metric("slimkv_kv_blocks_free", "gauge", "Free KV bytes in blocks of the final format.",
           static_cast<double>(s.kv_blocks_free));
  w.Metric("slimkv_kv_blocks_shared", "gauge",
           "KV blocks with more than one owner (sequences or the prefix cache).",
           static_cast<double>(s.kv_blocks_shared));
  w.Metric("slimkv_kv_block_bytes", "gauge", "Bytes of one KV block of the final format.",
           static_cast<double>(s.kv_block_bytes));
  w.Metric("slimkv_kv_bytes_per_token", "gauge",
           "KV bytes per token of the active format (data and metadata, all layers).", s.kv_bytes_per_token);
  const kv::EvictionStats& e = s.eviction;
  if (s.evicting) {  // counted per stream (a layer's KV head)
    w.Metric("slimkv_kv_evicted_tokens_total", "counter",
             "Tokens the eviction policy removed, counted per stream (a layer's KV head: a token evicted "
             "from every stream counts layers x KV heads times).",
             static_cast<double>(e.tokens_evicted));
    w.Labelled("slimkv_kv_eviction_passes_total", "counter",
               "Eviction passes over a stream: token-level rewrites of its own tokens (in the prompt) or "
               "block-level passes (after the prompt).",
               "level", {{"token", e.compactions}, {"block", e.block_passes}});
    w.Labelled("slimkv_kv_evicted_blocks_total", "counter",
               "Blocks block-level passes released by reference (dropped) or cut short (shortened: the "
               "sinks' block).",
               "how", {{"dropped", e.blocks_dropped}, {"shortened", e.blocks_shortened}});
    w.Metric("slimkv_kv_merged_tokens_total", "counter",
             "Evicted tokens whose value was merged into a kept token (:merge, :pyramid).",
             static_cast<double>(e.merged));
    w.Labelled("slimkv_kv_rewritten_tokens_total", "counter",
               "Tokens whose bytes eviction wrote again: staging tokens a token-level pass copied "
               "(losslessly), or sealed tokens re-encoded to merge into them.",
               "why", {{"compaction", e.tokens_moved}, {"merge", e.sealed_reencoded}});
  }
  if (s.recall) {
    w.Labelled("slimkv_kv_recall_blocks_total", "counter",
               "Blocks an eviction policy with :recall moved to host memory (offloaded), fetched back, "
               "dropped from host memory for the host=N bound, spilled past it to the disk tier (--kv-disk), "
               "read back from there, or lost there (the record was gone when wanted).",
               "move",
               {{"offloaded", e.offloaded},
                {"fetched", e.fetched},
                {"dropped", e.host_dropped},
                {"spilled", e.spilled},
                {"read_back", e.spill_read},
                {"spill_lost", e.spill_lost}});
    w.Labelled("slimkv_kv_recall_fetch_ahead_total", "counter",
               "Blocks a step's queries ranked among those to hold: fetched ahead by the step before (used), "
               "or still in host memory (missed).",
               "outcome", {{"used", e.fetch_used}, {"missed", e.fetch_missed}});
    w.Metric("slimkv_kv_recall_host_bytes", "gauge",
             "Host memory the offloaded blocks of live sequences take.", static_cast<double>(e.host_bytes));
  }
  w.Metric("slimkv_prefix_cache_entries", "gauge", "Block positions held by the prefix cache.",
           static_cast<double>(s.prefix_cache_entries));
  w.Metric("slimkv_prefix_cache_lookups_total", "counter", "Requests that looked up the prefix cache.",
           static_cast<double>(s.prefix_lookups));
  w.Metric("slimkv_prefix_cache_hits_total", "counter", "Requests that reused at least one cached block.",
           static_cast<double>(s.prefix_hits));
  w.Metric("slimkv_prefix_cache_hit_rate", "gauge", "Prefix cache hits per lookup.", HitRate(s));
  w.Metric("slimkv_prefix_cache_token_hit_rate", "gauge",
           "Prompt tokens taken from the prefix cache per prompt token.", TokenHitRate(s));
  w.Metric("slimkv_prefix_cache_evictions_total", "counter", "Prefix cache entries evicted for room.",
           static_cast<double>(s.prefix_evictions));
  w.Metric("slimkv_requests_running", "gauge", "Sequences in the running batch.", s.running);
  w.Metric("slimkv_requests_waiting", "gauge", "Requests in the queue (preempted ones included).", s.waiting);
  w.Metric("slimkv_requests_preempted", "gauge", "Waiting requests that were preempted and will recompute.",
           s.preempted_waiting);
  w.Metric("slimkv_preemptions_total", "counter", "Sequences preempted because the KV pool was full.",
           static_cast<double>(s.preemptions));
  w.Header("slimkv_preempted_tokens_total", "counter",
           "Tokens preempted sequences had computed, by how they came back at readmission: swap (re-attached "
           "from the prefix cache or a lower tier) or recompute.");
  w.Sample("slimkv_preempted_tokens_total{path=\"swap\"}", static_cast<double>(s.preempted_tokens_swapped));
  w.Sample("slimkv_preempted_tokens_total{path=\"recompute\"}",
           static_cast<double>(s.preempted_tokens_recomputed));
  TierMetrics(w, s);
  w.Header("slimkv_requests_total", "counter", "Requests by outcome.");
  w.Sample("slimkv_requests_total{outcome=\"finished\"}", static_cast<double>(s.finished));
  w.Sample("slimkv_requests_total{outcome=\"cancelled\"}", static_cast<double>(s.cancelled));
  w.Sample("slimkv_requests_total{outcome=\"failed\"}", static_cast<double>(s.failed));
  w.Sample("slimkv_requests_total{outcome=\"rejected\"}", static_cast<double>(s.rejected));
  w.Metric("slimkv_prompt_tokens_total", "counter", "Prompt tokens of admitted requests.",
           static_cast<double>(s.prompt_tokens));
  w.Metric("slimkv_prompt_tokens_cached_total", "counter", "Prompt tokens taken from the prefix cache.",
           static_cast<double>(s.prompt_tokens_cached));
  w.Metric("slimkv_generation_tokens_total", "counter", "Tokens generated.",
           static_cast<double>(s.generated_tokens));
  w.Metric("slimkv_computed_tokens_total", "counter",
           "Tokens run through the model (recomputation included).", static_cast<double>(s.computed_tokens));
  w.Metric("slimkv_generation_tokens_per_second", "gauge", "Tokens generated per second over the last 5 s.",
           s.generated_tokens_per_s);
  w.Metric("slimkv_computed_tokens_per_second", "gauge",
           "Tokens through the model per second over the last 5 s.", s.computed_tokens_per_s);
  w.Metric("slimkv_steps_total", "counter", "Forward passes.", static_cast<double>(s.steps));
  w.Metric("slimkv_batch_tokens", "gauge", "Tokens in the last forward pass.", s.last_batch_tokens);
  w.Histogram("slimkv_time_to_first_token_seconds", "Time from arrival to the first generated token.",
              s.ttft);
  w.Histogram("slimkv_inter_token_latency_seconds", "Time between consecutive tokens of a request.", s.itl);
  w.Histogram("slimkv_request_duration_seconds", "Time from arrival to the end of a request.", s.e2e);
  if (http != nullptr) {
    w.Metric("slimkv_http_connections", "gauge", "Open HTTP connections.", static_cast<double>(http->open));
    w.Metric("slimkv_http_connections_accepted_total", "counter", "HTTP connections accepted.",
             static_cast<double>(http->accepted));
    w.Metric("slimkv_http_connections_refused_total", "counter",
             "Connections answered 503 and closed: over --max-connections or the per-client cap.",
             static_cast<double>(http->refused));
    w.Metric("slimkv_http_timeouts_total", "counter",
             "Connections closed for missing a deadline (idle, header, body or write).",
             static_cast<double>(http->timed_out));
    w.Metric("slimkv_http_rejected_total", "counter",
             "Requests refused by the HTTP layer (malformed, header or body too large).",
             static_cast<double>(http->rejected));
  }
  VllmMetrics(w, s, model);
  return w.Take();
}

nlohmann::json StatsJson(const engine::SchedulerStats& s, const std::string& model) {
  nlohmann::json seqs = nlohmann::json::array();
  for (const auto& q : s.sequences) {
    seqs.push_back({{"id", q.id},
                    {"phase", q.phase},
                    {"prompt_tokens", q.prompt_tokens},
                    {"generated_tokens", q.generated_tokens},
                    {"cached_tokens", q.cached_tokens},
                    {"kv_tokens", q.kv_tokens},
                    {"kv_blocks", q.kv_blocks},
                    {"kv_bytes", q.kv_bytes}});
  }
  return {{"model", model},
          {"kv_format", s.kv_format},
          {"kv_bytes_per_token", s.kv_bytes_per_token},
          {"kv_budget_bytes", s.kv_budget_bytes},
          {"kv_bytes_used", s.kv_bytes_used},
          {"kv_block_bytes", s.kv_block_bytes},
          {"kv_blocks_used", s.kv_blocks_used},
          {"kv_blocks_free", s.kv_blocks_free},
          {"kv_blocks_shared", s.kv_blocks_shared},
          {"prefix_sharing", s.prefix_sharing},
          {"prefix_cache_entries", s.prefix_cache_entries},
          {"prefix_hit_rate", HitRate(s)},
          {"prefix_token_hit_rate", TokenHitRate(s)},
          {"running", s.running},
          {"waiting", s.waiting},
          {"preempted", s.preempted_waiting},
          {"preemptions", s.preemptions},
          {"finished", s.finished},
          {"cancelled", s.cancelled},
          {"failed", s.failed},
          {"rejected", s.rejected},
          {"generated_tokens", s.generated_tokens},
          {"generated_tokens_per_s", s.generated_tokens_per_s},
          {"computed_tokens_per_s", s.computed_tokens_per_s},
          {"ttft_p50", s.ttft.Quantile(0.5)},
          {"ttft_p99", s.ttft.Quantile(0.99)},
          {"itl_p50", s.itl.Quantile(0.5)},
          {"itl_p99", s.itl.Quantile(0.99)},
          {"sequences", std::move(seqs)}};
}

}  // namespace slimkv::server
