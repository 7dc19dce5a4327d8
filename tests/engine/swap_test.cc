// Swap vs recompute on preemption, against the fake model (fake_model.h). A preempted sequence publishes its
// computed blocks to the prefix cache; readmitted, it re-attaches them from RAM (swap), from the disk tier
// when RAM evicted them and the measured cost says a fetch beats prefill (swap, kv/swap_cost.h), and
// recomputes them otherwise (recompute). Every path gives the output the request gives alone.
#include <gtest/gtest.h>

#include <random>

#include "engine/scheduler.h"
#include "fake_model.h"
#include "kv/format.h"
#include "kv/tiers/disk_tier.h"
#include "kv/tiers/tier_stack.h"
#include "tiers/tier_test_util.h"

namespace slimkv::engine {
namespace {

using testing::FakeModel;
using testing::RandomPrompt;
using testing::SmallInt4Config;
constexpr int kRequests = 6, kPrompt = 40, kNew = 48;

// A pool of `bytes`, optionally over a disk tier, running kRequests greedy requests to the end. Clocks stand
// still (injected), so the swap-or-recompute rule sees only the rates a test gives it.
struct Trial {
  Trial(size_t bytes, bool prefix_sharing, bool disk, double fetch_bytes_per_s = 0,
        double prefill_tokens_per_s = 0) {
    kv = std::move(kv::KvCache::Create(FakeModel::Spec(), SmallInt4Config(), bytes)).value();
    if (disk) {
      auto d = kv::tiers::DiskTier::Open({.dir = dir.path(), .budget_bytes = 64 << 20, .clock = clock.fn()});
      EXPECT_TRUE(d.ok()) << d.status().ToString();
      std::vector<std::unique_ptr<kv::tiers::BlockTier>> tiers;
      tiers.push_back(std::move(d).value());
      stack = std::make_unique<kv::tiers::TierStack>(
          FakeModel::Spec(), SmallInt4Config(), kv::tiers::TierStackOptions{.clock = clock.fn()}, std::move(tiers));
      kv->SetTiers(stack.get());
    }
    // One fetch of a 4 KB record at the given rate (the fake model's records are about that size).
    if (fetch_bytes_per_s > 0) kv->swap_cost().ObserveFetch(4096, 4096 / fetch_bytes_per_s);
    if (prefill_tokens_per_s > 0)
      kv->swap_cost().ObservePrefill(static_cast<int64_t>(prefill_tokens_per_s), 1.0);
    sched = std::move(Scheduler::Create(
                          SchedulerParts{.model = &model, .kv = kv.get(), .pool = &pool, .n_ctx = 4096},
                          {.max_running = kRequests,
                           .max_batch_tokens = 32,
                           .prefix_sharing = prefix_sharing,
                           // A read-ahead is waited for within its step, so the steps do not depend on
                           // the reader thread's timing (prefetch_test.cc tests the other case).
                           .read_ahead_wait_s = 60,
                           .clock = clock.fn()}))
                .value();
    outs.resize(kRequests);
    for (int i = 0; i < kRequests; ++i) {
      RequestParams p;
      p.prompt = RandomPrompt(kPrompt, 10 + i);
      p.max_tokens = kNew;
      p.sampling.temperature = 0;
      p.ignore_eos = true;
      p.on_output = [this, i](const RequestOutput& o) {
        if (!o.finished) outs[i].push_back(o.token);
      };
      EXPECT_TRUE(sched->Submit(std::move(p)).ok());
    }
    for (int i = 0; i < 100000 && !sched->Idle(); ++i) {
      sched->Step();
      kv->CheckInvariants();
      if (stack) stack->Flush();  // a record is on disk before the step after its publication
    }
    EXPECT_TRUE(sched->Idle());
    stats = sched->Stats();
  }
  kv::tiers::testing::ScratchDir dir;
  kv::tiers::testing::FakeClock clock;
  FakeModel model;
  ThreadPool pool{2};
  std::unique_ptr<kv::tiers::TierStack> stack;  // before kv: the cache points to it
  std::unique_ptr<kv::KvCache> kv;
  std::unique_ptr<Scheduler> sched;
  std::vector<std::vector<TokenId>> outs;
  SchedulerStats stats;
};

// Room for about two of the six sequences at their full length: preemption happens.
size_t TightBudget() { return kv::KvCache::BudgetFor(FakeModel::Spec(), SmallInt4Config(), kPrompt + kNew, 2, 16); }

const std::vector<std::vector<TokenId>>& Alone() {
  static const std::vector<std::vector<TokenId>> outs = Trial(64 << 20, false, false).outs;
  return outs;
}

void ExpectSameOutputs(const Trial& r) {
  ASSERT_EQ(r.outs.size(), Alone().size());
  for (size_t i = 0; i < r.outs.size(); ++i) {
    EXPECT_EQ(r.outs[i].size(), static_cast<size_t>(kNew)) << i;
    EXPECT_EQ(r.outs[i], Alone()[i]) << i;
  }
  EXPECT_EQ(r.stats.failed, 0u);
}

// Without prefix sharing nothing is published: every preempted token is computed again.
TEST(SwapTest, WithoutPrefixSharingPreemptionRecomputes) {
  Trial r(TightBudget(), /*prefix_sharing=*/false, /*disk=*/false);
  EXPECT_GT(r.stats.preemptions, 0u);
  EXPECT_EQ(r.stats.preempted_tokens_swapped, 0u);
  EXPECT_GT(r.stats.preempted_tokens_recomputed, 0u);
  ExpectSameOutputs(r);
}

// With it, a readmitted sequence re-attaches what RAM still holds of its published blocks. (Preemption
// republishes every computed block: the pool may have evicted the index entries of blocks the sequence was
// still holding; without that this found nothing.)
TEST(SwapTest, PreemptedSequenceReattachesFromRam) {
  Trial r(TightBudget(), /*prefix_sharing=*/true, /*disk=*/false);
  EXPECT_GT(r.stats.preemptions, 0u);
  EXPECT_GT(r.stats.preempted_tokens_swapped, 0u);
  EXPECT_GT(r.stats.prefix.ram_hit_blocks, 0);
  // One prefix lookup per admission: a request that must wait for room is not looked up (and, with a
  // tier, its blocks not fetched into the pool) at every step it waits.
  EXPECT_EQ(r.stats.prefix.lookups, static_cast<int64_t>(kRequests + r.stats.preemptions));
  ExpectSameOutputs(r);
}

// RAM evicts the published blocks of preempted sequences (the pool is full: that is why they were
// preempted); with a disk tier, and tier fetches measured faster than prefill, they come back from disk.
TEST(SwapTest, BlocksRamEvictedComeBackFromDiskWhenFetchingPays) {
  Trial ram(TightBudget(), true, false);
  Trial disk(TightBudget(), true, true, /*fetch_bytes_per_s=*/1e9, /*prefill_tokens_per_s=*/100);
  EXPECT_GT(disk.stats.preemptions, 0u);
  EXPECT_GT(disk.stats.prefix.tier_blocks, 0);
  EXPECT_GT(disk.stats.tier_stack.loaded, 0);
  EXPECT_GT(disk.stats.swap.fetch_chosen, 0);
  EXPECT_EQ(disk.stats.swap.recompute_chosen, 0);
  // The disk gave back tokens RAM alone would have recomputed.
  EXPECT_GT(disk.stats.preempted_tokens_swapped, ram.stats.preempted_tokens_swapped);
  EXPECT_LT(disk.stats.computed_tokens, ram.stats.computed_tokens);
  ASSERT_EQ(disk.stats.tiers.size(), 1u);
  EXPECT_GT(disk.stats.tiers[0].second.hits, 0);
  ExpectSameOutputs(disk);
}

// The same disk holding the same blocks, but prefill measured faster than tier fetches: the tier is not
// read, the blocks are recomputed.
TEST(SwapTest, BlocksAreRecomputedWhenPrefillIsMeasuredFaster) {
  Trial disk(TightBudget(), true, true, /*fetch_bytes_per_s=*/100, /*prefill_tokens_per_s=*/1e9);
  EXPECT_GT(disk.stats.preemptions, 0u);
  EXPECT_GT(disk.stats.swap.recompute_chosen, 0);
  EXPECT_EQ(disk.stats.swap.fetch_chosen, 0);
  EXPECT_EQ(disk.stats.prefix.tier_blocks, 0);
  EXPECT_EQ(disk.stats.tier_stack.loaded, 0);
  EXPECT_GT(disk.stats.tier_stack.stored, 0);  // the blocks were there to fetch
  EXPECT_GT(disk.stats.preempted_tokens_recomputed, 0u);
  ExpectSameOutputs(disk);
}

}  // namespace
}  // namespace slimkv::engine
