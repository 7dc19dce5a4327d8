// The scheduler's statistics for the outside: Prometheus text exposition (/metrics) and
// the JSON the dashboard polls (/stats).
#pragma once

#include <nlohmann/json.hpp>

#include <string>

#include "engine/scheduler_stats.h"

namespace slimkv::server {

// Prometheus text format 0.0.4: "# HELP" and "# TYPE" lines, counters ending in _total,
// histograms as _bucket{le=...} (cumulative, ending with +Inf), _sum and _count.
std::string PrometheusText(const engine::SchedulerStats& s, const std::string& model);

// Everything the dashboard draws: pool occupancy per sequence, bytes per token of the
// format, prefix hit rate, throughput, latency quantiles.
nlohmann::json StatsJson(const engine::SchedulerStats& s, const std::string& model);

}  // namespace slimkv::server
