// The swap-or-recompute rule (kv/swap_cost.h): a tier fetch when it is measured faster than prefilling the
// same blocks, recomputation when prefill is, a fetch while either rate is unmeasured.
#include "kv/swap_cost.h"

#include <gtest/gtest.h>

namespace slimkv::kv {
namespace {

// A block of 16 tokens whose record is 64 KB.
constexpr int64_t kRecordBytes = 64 << 10;
constexpr int kTokens = 16;

TEST(SwapCostTest, FetchesUntilBothRatesAreMeasured) {
  SwapCost c;
  EXPECT_TRUE(c.FetchPays(8, kRecordBytes, kTokens));
  c.ObservePrefill(1000, 1.0);
  EXPECT_TRUE(c.FetchPays(8, kRecordBytes, kTokens));
  c.ObserveFetch(1 << 20, 0.0);  // no time: ignored
  EXPECT_TRUE(c.FetchPays(8, kRecordBytes, kTokens));
  EXPECT_EQ(c.stats().fetch_chosen, 3);
  EXPECT_EQ(c.stats().recompute_chosen, 0);
  EXPECT_EQ(c.stats().fetch_bytes_per_s, 0);
}

TEST(SwapCostTest, ChoosesTheFasterPath) {
  // Prefill 1000 tokens/s: a block's 16 tokens take 16 ms. A disk at 100 MB/s reads its 64 KB in 0.66 ms.
  SwapCost fast_disk;
  fast_disk.ObservePrefill(1000, 1.0);
  fast_disk.ObserveFetch(100 << 20, 1.0);
  EXPECT_TRUE(fast_disk.FetchPays(1, kRecordBytes, kTokens));
  EXPECT_TRUE(fast_disk.FetchPays(100, kRecordBytes, kTokens));
  // A store at 1 MB/s takes 62 ms: recomputing is faster.
  SwapCost slow_store;
  slow_store.ObservePrefill(1000, 1.0);
  slow_store.ObserveFetch(1 << 20, 1.0);
  EXPECT_FALSE(slow_store.FetchPays(1, kRecordBytes, kTokens));
  EXPECT_FALSE(slow_store.FetchPays(100, kRecordBytes, kTokens));
  EXPECT_EQ(slow_store.stats().recompute_chosen, 2);
  EXPECT_DOUBLE_EQ(slow_store.stats().fetch_bytes_per_s, 1 << 20);
  EXPECT_DOUBLE_EQ(slow_store.stats().prefill_tokens_per_s, 1000);
  // Just above the break-even (64 KB / rate = 16 tokens / 1000 tokens/s at 4.1e6 B/s).
  SwapCost even;
  even.ObservePrefill(1000, 1.0);
  even.ObserveFetch(4 << 20, 1.0);
  EXPECT_TRUE(even.FetchPays(3, kRecordBytes, kTokens));
}

// The rates are decayed sums: a store that turns slow loses to prefill after a few observations.
TEST(SwapCostTest, FollowsAChangingRate) {
  SwapCost c;
  c.ObservePrefill(1000, 1.0);
  c.ObserveFetch(100 << 20, 1.0);
  EXPECT_TRUE(c.FetchPays(1, kRecordBytes, kTokens));
  for (int i = 0; i < 40; ++i) c.ObserveFetch(kRecordBytes, 1.0);  // 64 KB/s now
  EXPECT_FALSE(c.FetchPays(1, kRecordBytes, kTokens));
}

// A tier measured slow is probed again after kProbeAfter recompute decisions in a row: one fetch,
// which measures it anew (here it has become fast, and fetching wins again).
TEST(SwapCostTest, ASlowTierIsProbedAgain) {
  SwapCost c;
  c.ObservePrefill(1000, 1.0);
  c.ObserveFetch(1 << 20, 1.0);  // 1 MB/s: recomputing wins
  for (int i = 0; i < SwapCost::kProbeAfter; ++i) EXPECT_FALSE(c.FetchPays(1, kRecordBytes, kTokens)) << i;
  EXPECT_TRUE(c.FetchPays(1, kRecordBytes, kTokens));  // the probe
  EXPECT_EQ(c.stats().probes, 1);
  EXPECT_EQ(c.stats().fetch_chosen, 1);
  EXPECT_EQ(c.stats().recompute_chosen, SwapCost::kProbeAfter);
  EXPECT_FALSE(c.FetchPays(1, kRecordBytes, kTokens));  // the run starts again
  for (int i = 0; i < 40; ++i) c.ObserveFetch(100 << 20, 1.0);  // what the probes measured: fast now
  EXPECT_TRUE(c.FetchPays(1, kRecordBytes, kTokens));
  EXPECT_EQ(c.stats().probes, 1);
  // The read-ahead's question is not a decision: it neither counts nor probes.
  SwapCost d;
  d.ObservePrefill(1000, 1.0);
  d.ObserveFetch(1 << 20, 1.0);
  for (int i = 0; i < 2 * SwapCost::kProbeAfter; ++i) EXPECT_FALSE(d.WouldFetch(1, kRecordBytes, kTokens));
  EXPECT_EQ(d.stats().recompute_chosen, 0);
}

// The mean record size the caller weighs: what fetches returned (staged fp16 blocks are 3.6x int4 ones).
TEST(SwapCostTest, RecordBytesAreMeasured) {
  SwapCost c;
  EXPECT_EQ(c.record_bytes(), 0);
  c.ObserveFetch(1 << 20, 0.5);
  c.ObserveFetch(1 << 20, 0.5);
  EXPECT_DOUBLE_EQ(c.record_bytes(), 1 << 20);
  c.ObserveFetch(1 << 20, 0.0);  // no time: not a measurement
  EXPECT_DOUBLE_EQ(c.record_bytes(), 1 << 20);
}

}  // namespace
}  // namespace slimkv::kv
