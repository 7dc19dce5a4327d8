// The scheduler against a fake model (fake_model.h): the one generation path with eviction — slots reserved
// before the forward pass, the prompt compressed at its end, a streaming policy running past the context,
// preemption replaying evictions, teacher-forced requests, a shared prefix staying shared under eviction.
#include <gtest/gtest.h>

#include <random>

#include "engine/scheduler.h"
#include "fake_model.h"
#include "kv/format.h"

namespace slimkv::engine {
namespace {

using testing::FakeModel;
using testing::RandomPrompt;

struct Rig {
  Rig(const char *preset, const char *policy, int budget, int n_ctx, size_t bytes, SchedulerOptions so = {}) {
    kv::KvConfig c = *kv::ParsePreset(preset);
    c.block_tokens = 16;
    if (c.residual > 0) c.residual = 16;
    kv = std::move(kv::KvCache::Create(FakeModel::Spec(), c, bytes)).value();
    if (policy) {
      EXPECT_TRUE(kv->SetPolicy(*kv::ParsePolicy(policy, budget)).ok());
    }
    sched = std::move(Scheduler::Create(
                          SchedulerParts{.model = &model, .kv = kv.get(), .pool = &pool, .n_ctx = n_ctx}, so))
                .value();
  }
  void RunUntilIdle() {
    for (int i = 0; i < 100000 && !sched->Idle(); ++i) {
      sched->Step();
      kv->CheckInvariants();
    }
    ASSERT_TRUE(sched->Idle());
  }
  FakeModel model;
  ThreadPool pool{2};
  std::unique_ptr<kv::KvCache> kv;
  std::unique_ptr<Scheduler> sched;
};

struct Out {
  std::vector<TokenId> tokens;
  RequestOutput final;
  bool finished = false;
};

RequestParams Greedy(std::vector<TokenId> prompt, int max_tokens, Out *out) {
  RequestParams p;
  p.prompt = std::move(prompt);
  p.max_tokens = max_tokens;
  p.sampling.temperature = 0;
  p.ignore_eos = true;
  p.on_output = [out](const RequestOutput &o) {
    if (o.finished) {
      out->finished = true;
      out->final = o;
    } else {
      out->tokens.push_back(o.token);
    }
  };
  return p;
}

// The prompt is compressed when it ends, in the step that reads its last chunk (SnapKV decides from the
// prompt's last tokens), not at a later decode step.
TEST(SchedulerFakeTest, CompressAtTheEndOfThePrompt) {
  Rig rig("fp16", "snapkv", 32, 4096, 8 << 20);
  Out out;
  bool checked = false;
  RequestParams p = Greedy(RandomPrompt(200, 1), 5, &out);
  auto inner = p.on_output;
  p.on_output = [&](const RequestOutput &o) {
    if (!o.finished && out.tokens.empty()) {  // the first token: only the prompt has run
      EXPECT_EQ(rig.kv->eviction_stats().compactions, FakeModel::kLayers * FakeModel::kKvHeads);
      EXPECT_EQ(rig.kv->TotalUsage().blocks,
                FakeModel::kLayers * FakeModel::kKvHeads * 2);  // 32 tokens each
      checked = true;
    }
    inner(o);
  };
  ASSERT_TRUE(rig.sched->Submit(std::move(p)).ok());
  rig.RunUntilIdle();
  EXPECT_TRUE(checked);
  EXPECT_EQ(out.tokens.size(), 5u);
  // What /metrics exports: the policy's counters, refreshed when the scheduler goes idle.
  const SchedulerStats st = rig.sched->Stats();
  EXPECT_TRUE(st.evicting);
  EXPECT_FALSE(st.recall);
  EXPECT_EQ(st.eviction.compactions, FakeModel::kLayers * FakeModel::kKvHeads);
  EXPECT_EQ(st.eviction.tokens_evicted, rig.kv->eviction_stats().tokens_evicted);
  EXPECT_GE(st.eviction.tokens_evicted, int64_t{FakeModel::kLayers * FakeModel::kKvHeads * (200 - 32)});
}

// Slots are reserved before the forward pass: under a budget for about two sequences the scheduler defers and
// preempts, and the model never sees a batch it could not run.
TEST(SchedulerFakeTest, ReservesSlotsBeforeTheForwardPass) {
  const size_t budget = kv::KvCache::BudgetFor(FakeModel::Spec(), *kv::ParsePreset("fp16"), 96, 2, 16);
  Rig rig("fp16", nullptr, 0, 4096, budget,
          {.max_running = 6, .max_batch_tokens = 32, .prefix_sharing = false});
  std::vector<Out> outs(6);
  for (int i = 0; i < 6; ++i) ASSERT_TRUE(rig.sched->Submit(Greedy(RandomPrompt(40, 10 + i), 48, &outs[i])).ok());
  rig.RunUntilIdle();
  const SchedulerStats st = rig.sched->Stats();
  EXPECT_FALSE(st.evicting);
  EXPECT_GT(st.preemptions, 0u);
  EXPECT_EQ(st.failed, 0u);
  // Every forward pass ran a reserved batch (the fake model checks) and counted as a step.
  EXPECT_EQ(static_cast<uint64_t>(rig.model.forward_calls), st.steps);
  for (const Out &o : outs) EXPECT_EQ(o.tokens.size(), 48u);
}

// The phases of a request add up as vLLM's do: ttft = queue + prefill, e2e = queue + inference,
// inference = prefill + decode, each counted once per request; with two running at a time the later
// requests wait for the first ones' 48 tokens, so queueing dominates the time to the first token.
TEST(SchedulerFakeTest, RequestPhasesAddUp) {
  Rig rig("fp16", nullptr, 0, 4096, 8 << 20, {.max_running = 2, .prefix_sharing = false});
  std::vector<Out> outs(6);
  for (int i = 0; i < 6; ++i) ASSERT_TRUE(rig.sched->Submit(Greedy(RandomPrompt(40, 30 + i), 48, &outs[i])).ok());
  rig.RunUntilIdle();
  const SchedulerStats st = rig.sched->Stats();
  for (const LatencyHistogram *h : {&st.ttft, &st.e2e, &st.queue, &st.prefill, &st.decode, &st.inference})
    EXPECT_EQ(h->count(), 6u);
  EXPECT_NEAR(st.ttft.sum(), st.queue.sum() + st.prefill.sum(), 1e-9);
  EXPECT_NEAR(st.e2e.sum(), st.queue.sum() + st.inference.sum(), 1e-9);
  EXPECT_NEAR(st.inference.sum(), st.prefill.sum() + st.decode.sum(), 1e-9);
  EXPECT_GT(st.queue.sum(), st.prefill.sum());
  EXPECT_GT(st.decode.sum(), 0.0);
}

// response_format json_object needs the tokenizer's bytes of each token: without one (this rig has none)
// the request is refused at Submit, naming json_object, and nothing runs.
TEST(SchedulerFakeTest, JsonObjectNeedsATokenizer) {
  Rig rig("fp16", nullptr, 0, 4096, 8 << 20);
  Out out;
  RequestParams p = Greedy(RandomPrompt(8, 1), 4, &out);
  p.json_object = true;
  const auto r = rig.sched->Submit(std::move(p));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().ToString().find("json_object needs a tokenizer"), std::string::npos) << r.status().ToString();
  EXPECT_TRUE(rig.sched->Idle());
}

// A re-indexing policy lets one sequence run past the context in constant memory; without one the context is
// the limit.
TEST(SchedulerFakeTest, StreamingPolicyRunsPastTheContext) {
  Rig rig("int4", "sinks", 32, 64, 8 << 20);
  Out out;
  ASSERT_TRUE(rig.sched->Submit(Greedy(RandomPrompt(100, 2), 400, &out)).ok());  // prompt longer than -c
  // Memory after the budget has filled never exceeds what an early stretch held.
  size_t early = 0;
  for (int i = 0; i < 100000 && !rig.sched->Idle(); ++i) {
    rig.sched->Step();
    rig.kv->CheckInvariants();
    const size_t n = out.tokens.size();
    if (n >= 50 && n < 150) early = std::max(early, rig.kv->bytes_in_use());
    if (n >= 150 && !rig.sched->Idle()) {
      ASSERT_LE(rig.kv->bytes_in_use(), early) << n;
    }
  }
  EXPECT_EQ(out.tokens.size(), 400u);
  EXPECT_EQ(out.final.finish_reason, FinishReason::kLength);
  EXPECT_LE(early,
            kv::PolicyPeakSequenceBytes(FakeModel::Spec(), rig.kv->config(), rig.kv->policy(), 1 << 20, 512));
  Rig plain("int4", nullptr, 0, 64, 8 << 20);
  Out o2;
  EXPECT_EQ(plain.sched->Submit(Greedy(RandomPrompt(100, 2), 400, &o2)).status().code(), StatusCode::kOutOfRange);
  ASSERT_TRUE(plain.sched->Submit(Greedy(RandomPrompt(20, 2), 400, &o2)).ok());
  plain.RunUntilIdle();
  EXPECT_EQ(o2.tokens.size(), 64u - 20u);  // stops at the context
}

// With a policy, a preempted sequence replays its prompt, the compression at its end and its generated tokens
// one per step: its output is what it gives alone.
TEST(SchedulerFakeTest, PreemptionReplaysEvictions) {
  const SchedulerOptions so{.max_running = 6, .max_batch_tokens = 32, .prefix_sharing = false};
  std::vector<std::vector<TokenId>> alone;
  for (int i = 0; i < 6; ++i) {
    Rig rig("int4", "h2o", 32, 4096, 8 << 20, so);
    Out out;
    ASSERT_TRUE(rig.sched->Submit(Greedy(RandomPrompt(20, 20 + i), 150, &out)).ok());
    rig.RunUntilIdle();
    alone.push_back(out.tokens);
  }
  // A pool that holds the six prompts but not all of them decoding: one is preempted.
  Rig rig("int4", "h2o", 32, 4096, 40000, so);
  std::vector<Out> outs(6);
  for (int i = 0; i < 6; ++i) ASSERT_TRUE(rig.sched->Submit(Greedy(RandomPrompt(20, 20 + i), 150, &outs[i])).ok());
  rig.RunUntilIdle();
  EXPECT_GT(rig.sched->Stats().preemptions, 0u);
  EXPECT_EQ(rig.sched->Stats().failed, 0u);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(outs[i].tokens, alone[i]) << i;
}

// Teacher forcing: one logits row per forced token (and the prompt's last); with a policy the forced tokens
// take the decode path, one per step.
TEST(SchedulerFakeTest, ForcedTokensGiveARowEach) {
  for (const char *policy : {static_cast<const char *>(nullptr), "h2o"}) {
    Rig rig("fp16", policy, 32, 4096, 8 << 20, {.max_batch_tokens = 64});
    RequestParams p;
    p.prompt = RandomPrompt(50, 3);
    p.forced = RandomPrompt(100, 4);
    int rows = 0;
    p.on_logits = [&](std::span<const float> row) {
      EXPECT_EQ(row.size(), static_cast<size_t>(FakeModel::kVocab));
      ++rows;
    };
    ASSERT_TRUE(rig.sched->Submit(std::move(p)).ok());
    rig.RunUntilIdle();
    EXPECT_EQ(rows, 101);
    // 150 tokens in 64-token steps; with a policy the prompt in chunks of half a batch (64 sequences may
    // run), then one forced token a step.
    EXPECT_EQ(rig.model.forward_calls, policy ? 2 + 100 : 3);
  }
}

// A shared prompt stays shared under eviction: later requests attach its blocks (pinned) and evict only in
// their own part.
TEST(SchedulerFakeTest, SharedPrefixUnderEviction) {
  Rig rig("fp16", "h2o", 64, 4096, 16 << 20, {.max_running = 8, .max_batch_tokens = 512});
  const std::vector<TokenId> system = RandomPrompt(256, 5);
  std::vector<Out> outs(8);
  for (int i = 0; i < 8; ++i) {
    std::vector<TokenId> p = system;
    for (TokenId t : RandomPrompt(40, 100 + i)) p.push_back(t);
    ASSERT_TRUE(rig.sched->Submit(Greedy(p, 20, &outs[i])).ok());
    rig.RunUntilIdle();  // one after the other: each finds the published prefix
  }
  for (int i = 1; i < 8; ++i) EXPECT_EQ(outs[i].final.usage.cached_tokens, 256) << i;
  EXPECT_GT(rig.kv->eviction_stats().tokens_evicted, 0);
}

// Requests that arrive together with the same system prompt reuse as much of it under eviction as without:
// the followers wait while the first reads it, then attach what it published. Prompt chunks end on block
// boundaries; with 121-token chunks (a 128-token batch, 8 running) followers were admitted one token before a
// boundary and attached 240 of the 256 tokens.
TEST(SchedulerFakeTest, SharedPrefixArrivingTogetherUnderEviction) {
  std::vector<int> cached[2];
  for (int with_policy = 0; with_policy < 2; ++with_policy) {
    // A budget the prompt passes only at its end (a prompt over twice the budget evicts while it is read,
    // and publishing stops at the first eviction).
    Rig rig("fp16", with_policy ? "h2o" : nullptr, 256, 4096, 16 << 20,
            {.max_running = 8, .max_batch_tokens = 128});
    const std::vector<TokenId> system = RandomPrompt(256, 6);
    std::vector<Out> outs(8);
    for (int i = 0; i < 8; ++i) {
      std::vector<TokenId> p = system;
      for (TokenId t : RandomPrompt(40, 300 + i)) p.push_back(t);
      ASSERT_TRUE(rig.sched->Submit(Greedy(p, 10, &outs[i])).ok());
    }
    rig.RunUntilIdle();
    for (const Out &o : outs) {
      EXPECT_EQ(o.tokens.size(), 10u);
      cached[with_policy].push_back(std::min(o.final.usage.cached_tokens, 256));  // of the system prompt
    }
  }
  EXPECT_EQ(cached[1], cached[0]);
  for (int i = 1; i < 8; ++i) EXPECT_EQ(cached[1][i], 256) << i;
}

// A conversation that resends its history each turn under a streaming policy: each turn attaches at most the
// budget of its cached prefix (attached blocks are pinned), so the memory a turn holds stays flat instead of
// growing with the history, and every turn still reuses a prefix.
TEST(SchedulerFakeTest, StreamingConversationAttachesAtMostItsBudget) {
  Rig rig("fp16", "sinks", 32, 64, 16 << 20, {.max_batch_tokens = 64});
  std::vector<TokenId> history;
  std::vector<size_t> peak;
  for (int turn = 0; turn < 10; ++turn) {
    for (TokenId t : RandomPrompt(40, 200 + turn)) history.push_back(t);
    Out out;
    ASSERT_TRUE(rig.sched->Submit(Greedy(history, 8, &out)).ok());
    size_t most = 0;
    for (int i = 0; i < 100000 && !rig.sched->Idle(); ++i) {
      rig.sched->Step();
      rig.kv->CheckInvariants();
      most = std::max(most, rig.kv->bytes_in_use());
    }
    ASSERT_TRUE(out.finished);
    ASSERT_EQ(out.tokens.size(), 8u);
    peak.push_back(most);
    if (turn > 0) {
      EXPECT_GT(out.final.usage.cached_tokens, 0) << turn;
      EXPECT_LE(out.final.usage.cached_tokens, 32) << turn;  // the budget (two 16-token blocks)
    }
    for (TokenId t : out.tokens) history.push_back(t);
  }
  // The history grows from 40 to 440 tokens; what a turn holds (its sequence and the prefix cache) does not.
  for (int turn = 4; turn < 10; ++turn) EXPECT_LE(peak[turn], peak[3]) << turn;
}

// One rule gives each batch entry its rows of logits (Scheduler::FirstLogitRow): a request with prompt
// log-probabilities (every prompt token's row), a plain one (its last token's) and a forced one (from its
// prompt's last token on) in the same steps read the same rows as each alone.
TEST(SchedulerFakeTest, MixedRowsPerEntryMatchEachAlone) {
  struct Run {
    std::vector<TokenLogprob> prompt_lp;
    std::vector<TokenLogprob> sampled_lp;
    Out echo, plain;
    std::vector<std::vector<float>> forced_rows;
  };
  const auto submit = [](Rig &rig, Run *run, int which) {
    if (which & 1) {
      RequestParams p = Greedy(RandomPrompt(70, 11), 3, &run->echo);
      p.prompt_logprobs = true;
      p.logprobs = 2;
      auto inner = p.on_output;
      p.on_output = [run, inner](const RequestOutput &o) {
        if (!o.prompt_logprobs.empty()) run->prompt_lp = o.prompt_logprobs;
        if (o.has_logprob) run->sampled_lp.push_back(o.logprob);
        inner(o);
      };
      ASSERT_TRUE(rig.sched->Submit(std::move(p)).ok());
    }
    if (which & 2) {
      ASSERT_TRUE(rig.sched->Submit(Greedy(RandomPrompt(40, 12), 4, &run->plain)).ok());
    }
    if (which & 4) {
      RequestParams p;
      p.prompt = RandomPrompt(30, 13);
      p.forced = RandomPrompt(20, 14);
      p.on_logits = [run](std::span<const float> row) {
        run->forced_rows.emplace_back(row.begin(), row.end());
      };
      ASSERT_TRUE(rig.sched->Submit(std::move(p)).ok());
    }
  };
  for (const char *policy : {static_cast<const char *>(nullptr), "h2o"}) {
    Run alone, together;
    for (int which : {1, 2, 4}) {
      Rig rig("fp16", policy, 32, 4096, 8 << 20, {.max_batch_tokens = 256});
      submit(rig, &alone, which);
      rig.RunUntilIdle();
    }
    Rig rig("fp16", policy, 32, 4096, 8 << 20, {.max_batch_tokens = 256});
    submit(rig, &together, 7);
    rig.RunUntilIdle();
    ASSERT_EQ(alone.prompt_lp.size(), 69u);
    ASSERT_EQ(together.prompt_lp.size(), 69u);
    const std::vector<TokenId> prompt = RandomPrompt(70, 11);
    for (size_t i = 0; i < 69; ++i) {
      EXPECT_EQ(together.prompt_lp[i].token, prompt[i + 1]);
      EXPECT_NEAR(together.prompt_lp[i].logprob, alone.prompt_lp[i].logprob, 1e-5) << i;
      EXPECT_EQ(together.prompt_lp[i].top.size(), 2u);
    }
    EXPECT_EQ(together.echo.tokens, alone.echo.tokens);
    ASSERT_EQ(together.sampled_lp.size(), 3u);
    for (size_t i = 0; i < 3; ++i)
      EXPECT_NEAR(together.sampled_lp[i].logprob, alone.sampled_lp[i].logprob, 1e-5);
    EXPECT_EQ(together.plain.tokens, alone.plain.tokens);
    ASSERT_EQ(alone.forced_rows.size(), 21u);
    ASSERT_EQ(together.forced_rows.size(), 21u);
    for (size_t r = 0; r < 21; ++r) {
      for (int t = 0; t < FakeModel::kVocab; ++t) {
        ASSERT_NEAR(together.forced_rows[r][t], alone.forced_rows[r][t], 1e-4) << r << " " << t;
      }
    }
  }
}

}  // namespace
}  // namespace slimkv::engine
