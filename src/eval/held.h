// Bytes a sequence holds in a real KvCache, part by part: the KV data, the
// metadata (scales, zero points), the fp16 residual window and the waste
// (allocated slots no token fills, padding). The planner's formula (capacity.h)
// predicts the total; this measures it, with eviction policies too, by filling
// a cache with random K/V the way the engine fills it: the first C - 1 tokens
// as a prompt in chunks of `prefill_chunk` (then the policy's end-of-prompt
// compression), the last one as a decode step. Contents do not change the byte
// count, so no model runs; policies that rank by attention see none and keep
// the tokens they keep by default, which changes which tokens stay, not how
// many.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "base/status.h"
#include "eval/capacity.h"
#include "kv/format.h"
#include "kv/kv_cache.h"
#include "kv/policy.h"
#include "model/kv_share.h"

namespace slimkv::eval {

struct HeldBytes {
  int64_t context = 0;  // tokens the sequence has seen
  kv::KvUsage usage;    // of the sequence (usage.tokens == context)
  double slots = 0;     // token slots held per layer (the most of its KV heads),
                        // mean over layers
};

// The shape without the layers that keep no cache of their own
// (model/kv_share.h).
ModelShape ShareShape(const ModelShape& m, const model::KvShare& share);

// The spec of a model shape, enough for a cache that is filled but never
// attended.
kv::KvSpec SpecOf(const ModelShape& m);

// One measurement per context, each on a fresh cache. InvalidArgument for a
// context that is not positive or whose cache would pass `max_bytes`.
Result<std::vector<HeldBytes>> MeasureHeldBytes(const kv::KvSpec& spec, const kv::KvConfig& config,
                                                const kv::PolicySpec& policy,
                                                const std::vector<int64_t>& contexts, int prefill_chunk = 512,
                                                uint64_t max_bytes = uint64_t{8} << 30);

// A markdown table per context: bytes per token of each part, as held, and
// users in the plan's KV memory. held[row][context] as the plan's rows and
// contexts.
std::string HeldReport(const Plan& plan, const std::vector<std::vector<HeldBytes>>& held);
// One row's measurements: per context the parts in bytes and the users
// `kv_bytes` holds.
nlohmann::json HeldJson(const std::vector<HeldBytes>& held, uint64_t kv_bytes);

}  // namespace slimkv::eval
