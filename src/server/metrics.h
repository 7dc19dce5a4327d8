// The scheduler's statistics for the outside: Prometheus text exposition (/metrics) and
// the JSON the dashboard polls (/stats).
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "engine/scheduler_stats.h"

namespace slimkv::server {

// The HTTP layer's connection counters (http_listener.h), copied out.
struct HttpStats {
  int64_t open = 0;
  uint64_t accepted = 0, refused = 0, timed_out = 0, rejected = 0;
};

// Prometheus text format 0.0.4: "# HELP" and "# TYPE" lines, counters ending in _total,
// histograms as _bucket{le=...} (cumulative, ending with +Inf), _sum and _count. slimkv's
// own names (slimkv_*), then the names vLLM gives the same quantities (vllm:*, labelled
// model_name), so dashboards and autoscalers written for vLLM read slimkv unchanged.
std::string PrometheusText(const engine::SchedulerStats& s, const std::string& model,
                           const HttpStats* http = nullptr);

// Everything the dashboard draws: pool occupancy per sequence, bytes per token of the
// format, prefix hit rate, throughput, latency quantiles.
nlohmann::json StatsJson(const engine::SchedulerStats& s, const std::string& model);

}  // namespace slimkv::server
