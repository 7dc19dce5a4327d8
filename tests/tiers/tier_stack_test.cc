// The tier stack's read-ahead: a reader thread reads a chain of keys ahead of the Load calls
// that want them, stops at the first key no tier holds, keeps what it read within a byte bound
// until Load takes it or EndPrefetch drops it, and never holds up the caller while a tier is slow.
#include "kv/tiers/tier_stack.h"

#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "kv/format.h"
#include "tier_test_util.h"

namespace slimkv::kv::tiers {
namespace {

using testing::GatedTier;
using testing::MakeRecord;

const Fingerprint kFp{.lo = 0x123, .hi = 0x456};

KvSpec Spec() { return KvSpec{.n_layers = 1, .n_kv_heads = 1, .n_q_heads = 1, .head_dim = 64}; }

struct Stack {
  explicit Stack(size_t prefetch_bytes = size_t{1} << 20) {
    auto t = std::make_unique<GatedTier>();
    tier = t.get();
    std::vector<std::unique_ptr<BlockTier>> tiers;
    tiers.push_back(std::move(t));
    stack = std::make_unique<TierStack>(Spec(), *ParsePreset("int4"),
                                        TierStackOptions{.prefetch_bytes = prefetch_bytes}, std::move(tiers));
  }
  // Puts records for keys 1..n (each the parent of the next) straight into the tier.
  void Fill(int n) {
    for (int k = 1; k <= n; ++k) ASSERT_TRUE(tier->Put(kFp, k, Record(k)).ok());
  }
  static std::vector<uint8_t> Record(uint64_t key) { return MakeRecord(kFp, key, key - 1, key); }
  void WaitRead(PrefetchId id) { ASSERT_TRUE(stack->WaitPrefetch(id, 10)); }
  GatedTier* tier = nullptr;
  std::unique_ptr<TierStack> stack;
};

TEST(TierStackPrefetchTest, ReadsTheChainUpToTheFirstMissAndLoadTakesItFromRam) {
  Stack s;
  s.Fill(3);
  const PrefetchId id = s.stack->Prefetch(kFp, {1, 2, 3, 4, 5});  // 4 is missing: 5 is never asked for
  ASSERT_NE(id, 0u);
  s.WaitRead(id);
  EXPECT_EQ(s.tier->gets(), 4);
  TierStackStats st = s.stack->Stats();
  EXPECT_EQ(st.prefetches, 1);
  EXPECT_EQ(st.prefetched, 3);
  for (uint64_t k = 1; k <= 2; ++k) {
    double seconds = -1;
    auto r = s.stack->Load(kFp, k, &seconds);
    ASSERT_TRUE(r.has_value()) << k;
    EXPECT_EQ(*r, Stack::Record(k));
    EXPECT_GE(seconds, 0);  // what the read took, for the swap-cost rule
  }
  EXPECT_EQ(s.tier->gets(), 4);  // answered from RAM
  // A record of another fingerprint under the same key is not the one read ahead.
  EXPECT_FALSE(s.stack->Load(Fingerprint{.lo = 1, .hi = 2}, 3).has_value());
  EXPECT_EQ(s.tier->gets(), 5);
  s.stack->EndPrefetch(id);  // key 3 was never taken
  st = s.stack->Stats();
  EXPECT_EQ(st.prefetch_hits, 2);
  EXPECT_EQ(st.prefetch_unused, 1);
  EXPECT_EQ(st.loaded, 2);
  // Dropped from RAM: a Load now goes to the tier.
  EXPECT_TRUE(s.stack->Load(kFp, 3).has_value());
  EXPECT_EQ(s.tier->gets(), 6);
  EXPECT_EQ(s.stack->Prefetch(kFp, {}), 0u);
}

TEST(TierStackPrefetchTest, ASlowTierHoldsUpOnlyTheReader) {
  Stack s;
  s.Fill(2);
  s.tier->Close();
  const PrefetchId id = s.stack->Prefetch(kFp, {1, 2});
  for (int i = 0; i < 10000 && s.tier->blocked() == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  ASSERT_EQ(s.tier->blocked(), 1);
  EXPECT_FALSE(s.stack->WaitPrefetch(id, 0));  // still reading
  EXPECT_EQ(s.stack->Stats().prefetched, 0);
  s.tier->Open();
  s.WaitRead(id);
  EXPECT_EQ(s.stack->Stats().prefetched, 2);
  s.stack->EndPrefetch(id);
  EXPECT_EQ(s.stack->Stats().prefetch_unused, 2);
}

TEST(TierStackPrefetchTest, EndingAPrefetchWhileItReadsKeepsNothing) {
  Stack s;
  s.Fill(3);
  s.tier->Close();
  const PrefetchId id = s.stack->Prefetch(kFp, {1, 2, 3});
  for (int i = 0; i < 10000 && s.tier->blocked() == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  s.stack->EndPrefetch(id);  // the request was cancelled while its first record was being read
  EXPECT_TRUE(s.stack->WaitPrefetch(id, 0));  // not reading it any more
  s.tier->Open();
  // The reader finishes its read, finds the prefetch ended and stops: keys 2 and 3 are never read.
  const PrefetchId next = s.stack->Prefetch(kFp, {3});
  s.WaitRead(next);
  EXPECT_EQ(s.tier->gets(), 2);
  const TierStackStats st = s.stack->Stats();
  EXPECT_EQ(st.prefetched, 1);  // key 3, for the second prefetch
  EXPECT_EQ(st.prefetch_unused, 1);
  s.stack->EndPrefetch(next);
}

TEST(TierStackPrefetchTest, TheReadAheadIsBoundedInBytes) {
  const size_t record = Stack::Record(1).size();
  Stack s(/*prefetch_bytes=*/2 * record + record / 2);
  s.Fill(4);
  const PrefetchId id = s.stack->Prefetch(kFp, {1, 2, 3, 4});
  s.WaitRead(id);
  TierStackStats st = s.stack->Stats();
  EXPECT_EQ(st.prefetched, 2);  // the third did not fit: the reader stopped there
  EXPECT_EQ(st.prefetch_unused, 1);
  // What did not fit is read when wanted.
  for (uint64_t k = 1; k <= 4; ++k) EXPECT_TRUE(s.stack->Load(kFp, k).has_value()) << k;
  st = s.stack->Stats();
  EXPECT_EQ(st.prefetch_hits, 2);
  EXPECT_EQ(s.tier->gets(), 5);
  s.stack->EndPrefetch(id);
}

// Recall's spill: records go to the local tier only, through the writer; a read of spilled
// records tries every key (a missing one does not stop the rest) and finds a record the writer
// has not written yet (queued, or being written); an erase is queued behind the write; a tier
// that is not writable refuses the spill at once.
TEST(TierStackSpillTest, ReadsWhatTheWriterHasNotWrittenYetAndEveryKey) {
  Stack s;
  ASSERT_TRUE(s.stack->can_spill());
  s.tier->ClosePuts();
  ASSERT_TRUE(s.stack->Spill(kFp, 1, Stack::Record(1)));  // the writer takes it and waits in Put
  for (int i = 0; i < 1000 && s.tier->puts_blocked() == 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  ASSERT_EQ(s.tier->puts_blocked(), 1);
  ASSERT_TRUE(s.stack->Spill(kFp, 2, Stack::Record(2)));  // queued behind it
  const PrefetchId id = s.stack->ReadSpilled(kFp, {1, 2, 3});      // 3 was never spilled
  ASSERT_NE(id, 0u);
  s.WaitRead(id);
  EXPECT_EQ(s.stack->TakeRead(kFp, 1), Stack::Record(1));  // from the job being written
  EXPECT_EQ(s.stack->TakeRead(kFp, 2), Stack::Record(2));  // from the queue
  EXPECT_FALSE(s.stack->TakeRead(kFp, 3).has_value());
  EXPECT_FALSE(s.stack->TakeRead(kFp, 1).has_value());  // taken once
  s.stack->Unspill(kFp, 1);
  s.tier->OpenPuts();
  s.stack->Flush();
  EXPECT_FALSE(s.tier->HasSpill(kFp, 1));  // written, then erased in order
  EXPECT_TRUE(s.tier->HasSpill(kFp, 2));
  // Written now: read from the tier, and a miss before it does not stop the read.
  const PrefetchId again = s.stack->ReadSpilled(kFp, {1, 2});
  s.WaitRead(again);
  EXPECT_FALSE(s.stack->TakeRead(kFp, 1).has_value());
  EXPECT_EQ(s.stack->TakeRead(kFp, 2), Stack::Record(2));
  TierStackStats st = s.stack->Stats();
  EXPECT_EQ(st.spilled, 2);
  EXPECT_EQ(st.spill_reads, 3);
  EXPECT_EQ(st.prefetched + st.prefetch_hits + st.loaded, 0);  // not counted as prefix traffic
  EXPECT_EQ(s.tier->size(), 0u);  // not among the prefix records either
  s.tier->SetWritable(false);
  EXPECT_FALSE(s.stack->Spill(kFp, 5, Stack::Record(5)));
  s.stack->Flush();
  EXPECT_FALSE(s.tier->HasSpill(kFp, 5));
}

// A stack whose first tier is not local (Redis alone) has nowhere to spill.
TEST(TierStackSpillTest, NoLocalTierNoSpill) {
  class Remote final : public BlockTier {
   public:
    const char* name() const override { return "remote"; }
    Result<std::vector<uint8_t>> Get(const Fingerprint&, uint64_t) override { return NotFound("none"); }
    Status Put(const Fingerprint&, uint64_t, std::span<const uint8_t>) override { return Status::Ok(); }
    TierStats Stats() const override { return {}; }
  };
  std::vector<std::unique_ptr<BlockTier>> tiers;
  tiers.push_back(std::make_unique<Remote>());
  TierStack stack(Spec(), *ParsePreset("int4"), TierStackOptions{}, std::move(tiers));
  EXPECT_FALSE(stack.can_spill());
  EXPECT_FALSE(stack.Spill(kFp, 1, Stack::Record(1)));
  EXPECT_EQ(stack.ReadSpilled(kFp, {1}), 0u);
}

}  // namespace
}  // namespace slimkv::kv::tiers
