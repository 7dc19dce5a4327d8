// Read-ahead from the lower tiers (TierStack::Prefetch) through the scheduler, against the fake model
// (fake_model.h) and a tier whose reads the test holds up (a slow disk or Redis): a request whose prefix a
// tier holds waits outside the step while its blocks are read, the running sequences keep stepping, and once
// read it attaches them from RAM with the output it gives from a RAM hit.
#include <gtest/gtest.h>

#include <chrono>
#include <random>
#include <thread>

#include "engine/scheduler.h"
#include "fake_model.h"
#include "kv/format.h"
#include "kv/tiers/tier_stack.h"
#include "tiers/tier_test_util.h"

namespace slimkv::engine {
namespace {

using testing::FakeModel;
using testing::RandomPrompt;
using testing::SmallInt4Config;
constexpr int kPrompt = 80, kNew = 24;

struct Output {
  std::vector<TokenId> tokens;
  int cached = -1;
  bool done = false;
};

// One KV cache (optionally over a gated tier) and a scheduler with prefix sharing.
struct Server {
  explicit Server(bool tier) {
    kv = std::move(kv::KvCache::Create(FakeModel::Spec(), SmallInt4Config(), 16 << 20)).value();
    if (tier) {
      auto t = std::make_unique<kv::tiers::testing::GatedTier>();
      gated = t.get();
      std::vector<std::unique_ptr<kv::tiers::BlockTier>> tiers;
      tiers.push_back(std::move(t));
      stack = std::make_unique<kv::tiers::TierStack>(FakeModel::Spec(), SmallInt4Config(), kv::tiers::TierStackOptions{},
                                                     std::move(tiers));
      kv->SetTiers(stack.get());
    }
    sched = std::move(Scheduler::Create(SchedulerParts{.model = &model, .kv = kv.get(), .pool = &pool, .n_ctx = 4096},
                                        {.max_running = 4, .max_batch_tokens = 32, .prefix_sharing = true}))
                .value();
  }
  RequestId Submit(const std::vector<TokenId>& prompt, Output* out) {
    RequestParams p;
    p.prompt = prompt;
    p.max_tokens = kNew;
    p.sampling.temperature = 0;
    p.ignore_eos = true;
    p.on_output = [out](const RequestOutput& o) {
      if (o.finished) {
        out->cached = o.usage.cached_tokens;
        out->done = true;
      } else {
        out->tokens.push_back(o.token);
      }
    };
    auto id = sched->Submit(std::move(p));
    EXPECT_TRUE(id.ok()) << id.status().ToString();
    return id.ok() ? *id : 0;
  }
  // Steps until idle; a step with nothing to run (a request waiting for its read-ahead) yields a little.
  void RunToIdle() {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (!sched->Idle() && std::chrono::steady_clock::now() < deadline) {
      if (!sched->Step()) std::this_thread::sleep_for(std::chrono::microseconds(200));
      kv->CheckInvariants();
    }
    ASSERT_TRUE(sched->Idle());
    if (stack) stack->Flush();
  }
  FakeModel model;
  ThreadPool pool{2};
  kv::tiers::testing::GatedTier* gated = nullptr;
  std::unique_ptr<kv::tiers::TierStack> stack;  // before kv: the cache points to it
  std::unique_ptr<kv::KvCache> kv;
  std::unique_ptr<Scheduler> sched;
};

TEST(PrefetchTest, RunningSequencesKeepSteppingWhileAPrefixIsReadFromASlowTier) {
  const std::vector<TokenId> a_prompt = RandomPrompt(kPrompt, 1), b_prompt = RandomPrompt(kPrompt, 2);
  // The references: A alone, and B answered from a RAM hit of its own earlier run (the blocks a tier
  // returns are the bytes RAM held).
  Output a_ref, b_first, b_ref;
  {
    Server plain(false);
    plain.Submit(a_prompt, &a_ref);
    plain.RunToIdle();
    plain.Submit(b_prompt, &b_first);
    plain.RunToIdle();
    plain.Submit(b_prompt, &b_ref);
    plain.RunToIdle();
  }
  ASSERT_GT(b_ref.cached, 0);

  Server s(true);
  Output warm;
  s.Submit(b_prompt, &warm);
  s.RunToIdle();  // B's blocks are published, and spilled to the tier
  ASSERT_GT(s.gated->size(), 0u);
  s.kv->ClearPrefixCache();  // RAM forgets them: only the tier has them

  // A runs (its own lookup found nothing in the tier), then the tier turns slow and B arrives.
  Output a, b;
  s.Submit(a_prompt, &a);
  for (int i = 0; i < 1000 && a.tokens.empty(); ++i)
    if (!s.sched->Step()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  ASSERT_FALSE(a.tokens.empty());
  s.gated->Close();
  const int64_t prefetches = s.stack->Stats().prefetches;
  s.Submit(b_prompt, &b);
  const size_t before = a.tokens.size();
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(s.sched->Step());  // A's decode steps; B is not in them
  for (int i = 0; i < 1000 && s.gated->blocked() == 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  EXPECT_EQ(s.gated->blocked(), 1);  // B's first record is being read
  EXPECT_EQ(a.tokens.size(), before + 10);
  EXPECT_TRUE(b.tokens.empty());
  EXPECT_FALSE(b.done);
  EXPECT_EQ(s.stack->Stats().prefetches, prefetches + 1);

  s.gated->Open();
  s.RunToIdle();
  EXPECT_EQ(a.tokens, a_ref.tokens);
  EXPECT_EQ(b.cached, b_ref.cached);
  EXPECT_EQ(b.tokens, b_ref.tokens);
  const SchedulerStats st = s.sched->Stats();
  EXPECT_EQ(st.tier_stack.prefetch_hits, b.cached / SmallInt4Config().block_tokens);
  EXPECT_EQ(st.tier_stack.prefetch_hits, st.tier_stack.loaded);  // every record came from the read-ahead
  EXPECT_EQ(st.prefix.tier_blocks, st.tier_stack.loaded);
}

// A request cancelled while its prefix is being read is dropped at once; what was read is let go.
TEST(PrefetchTest, ACancelledRequestEndsItsReadAhead) {
  Server s(true);
  Output warm;
  s.Submit(RandomPrompt(kPrompt, 2), &warm);
  s.RunToIdle();
  s.kv->ClearPrefixCache();
  s.gated->Close();
  const int64_t unused = s.stack->Stats().prefetch_unused;
  const int gets = s.gated->gets();
  Output b;
  const RequestId id = s.Submit(RandomPrompt(kPrompt, 2), &b);
  EXPECT_FALSE(s.sched->Step());  // nothing to run: B waits for its read-ahead
  for (int i = 0; i < 1000 && s.gated->blocked() == 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  ASSERT_EQ(s.gated->blocked(), 1);
  s.sched->Cancel(id);
  s.sched->Step();
  EXPECT_TRUE(b.done);
  EXPECT_TRUE(b.tokens.empty());
  EXPECT_TRUE(s.sched->Idle());
  s.gated->Open();
  // The reader finishes the read it was in, finds the read-ahead ended and keeps nothing.
  for (int i = 0; i < 5000 && s.stack->Stats().prefetch_unused == unused; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  const kv::tiers::TierStackStats st = s.stack->Stats();
  EXPECT_EQ(st.prefetch_unused, unused + 1);
  EXPECT_EQ(st.prefetch_hits, 0);
  EXPECT_EQ(s.gated->gets(), gets + 1);  // the rest of B's chain was never asked for
}

}  // namespace
}  // namespace slimkv::engine
