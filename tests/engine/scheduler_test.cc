// The scheduler with the real default model: batched requests give what each gives alone,
// preemption under a tiny KV budget changes no output, cancellation frees every block, the
// queue is bounded, stop strings and the prefix cache work, and the engine thread serves
// requests submitted from other threads.
#include "engine/scheduler.h"

#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <thread>

#include "engine/request_stream.h"
#include "kv/format.h"
#include "engine_test_util.h"
#include "test_util.h"

namespace slimkv::engine {
namespace {

constexpr int kCtx = 256;

std::unique_ptr<Engine> MakeEngine(const std::string& path, size_t budget_bytes = 0, const char* preset = "fp32") {
  return testing::MakeTestEngine(path, {.kv = preset, .n_ctx = kCtx, .n_seq = 8, .kv_budget_bytes = budget_bytes});
}

const char* kPrompts[] = {
    "The capital of France is",
    "Once upon a time, in a small village by the sea,",
    "To make a cup of tea, first",
    "The three primary colors are",
    "def fibonacci(n):",
    "In 1969, astronauts first walked on",
};

// What one request produced.
struct Collected {
  std::vector<TokenId> tokens;
  std::string text;
  bool finished = false;
  RequestOutput final;
};

// Greedy tokens of a prompt on its own, through Engine::Generate.
std::vector<TokenId> AloneGreedy(Engine& e, const std::vector<TokenId>& prompt, int n) {
  GenerateOptions go;
  go.max_tokens = n;
  go.sampling.temperature = 0;
  std::vector<TokenId> out;
  auto st = e.Generate(prompt, go, [&](TokenId t, const std::string&) {
    if (t >= 0) out.push_back(t);
    return true;
  });
  EXPECT_TRUE(st.ok()) << st.status().ToString();
  return out;
}

RequestParams Greedy(const std::vector<TokenId>& prompt, int max_tokens, Collected* c) {
  RequestParams p;
  p.prompt = prompt;
  p.max_tokens = max_tokens;
  p.sampling.temperature = 0;
  p.on_output = [c](const RequestOutput& o) {
    ASSERT_FALSE(c->finished) << "output after the final one";
    if (o.finished) {
      c->finished = true;
      c->final = o;
      return;
    }
    c->tokens.push_back(o.token);
    c->text += o.text;
  };
  return p;
}

void RunUntilIdle(Scheduler& s, kv::KvCache& kv, int max_steps = 100000) {
  for (int i = 0; i < max_steps && !s.Idle(); ++i) {
    s.Step();
    kv.CheckInvariants();
  }
  ASSERT_TRUE(s.Idle());
}

std::vector<TokenId> Encode(Engine& e, const char* text) {
  return e.tokenizer().Encode(text, e.tokenizer().add_bos_default(), false);
}

TEST(SchedulerTest, BatchedRequestsMatchEachAlone) {
  SLIMKV_REQUIRE_MODEL(path, testing::DefaultModelFile());
  auto e = MakeEngine(path);
  ASSERT_TRUE(e);
  constexpr int kTokens = 24;
  std::vector<std::vector<TokenId>> alone;
  for (const char* p : kPrompts) alone.push_back(AloneGreedy(*e, Encode(*e, p), kTokens));
  // A small per-step budget, so prompt chunks and decode tokens share steps.
  auto s = Scheduler::Create(e.get(), {.max_running = 4, .max_batch_tokens = 7, .prefix_sharing = false});
  ASSERT_TRUE(s.ok());
  std::vector<Collected> got(std::size(kPrompts));
  for (size_t i = 0; i < std::size(kPrompts); ++i) {
    ASSERT_TRUE((*s)->Submit(Greedy(Encode(*e, kPrompts[i]), kTokens, &got[i])).ok());
  }
  RunUntilIdle(**s, e->kv());
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_TRUE(got[i].finished);
    EXPECT_EQ(got[i].tokens, alone[i]) << kPrompts[i];
    EXPECT_EQ(got[i].final.usage.completion_tokens, static_cast<int>(got[i].tokens.size()));
    EXPECT_EQ(got[i].final.usage.prompt_tokens, static_cast<int>(Encode(*e, kPrompts[i]).size()));
    // The streamed text is the detokenized tokens (no end-of-generation token is rendered).
    EXPECT_EQ(got[i].text, e->tokenizer().Decode(got[i].tokens)) << kPrompts[i];
  }
  const SchedulerStats st = (*s)->Stats();
  EXPECT_EQ(st.finished, std::size(kPrompts));
  EXPECT_GT(st.steps, 0u);
  EXPECT_EQ(st.running, 0);
  EXPECT_EQ(e->kv().blocks_in_use(), 0);
}

TEST(SchedulerTest, PreemptionUnderATinyBudgetChangesNoOutput) {
  SLIMKV_REQUIRE_MODEL(path, testing::DefaultModelFile());
  auto big = MakeEngine(path);
  ASSERT_TRUE(big);
  constexpr int kTokens = 48;
  std::vector<std::vector<TokenId>> alone;
  for (const char* p : kPrompts) alone.push_back(AloneGreedy(*big, Encode(*big, p), kTokens));
  big.reset();
  // Room for about two sequences at their full length.
  auto probe = MakeEngine(path);
  ASSERT_TRUE(probe);
  const size_t budget = kv::KvCache::BudgetFor(probe->kv().spec(), probe->kv().config(), 64, 2, 1);
  probe.reset();
  for (bool sharing : {false, true}) {
    SCOPED_TRACE(sharing ? "prefix sharing" : "no prefix sharing");
    auto e = MakeEngine(path, budget);
    ASSERT_TRUE(e);
    auto s = Scheduler::Create(e.get(), {.max_running = 6, .max_batch_tokens = 64, .prefix_sharing = sharing});
    ASSERT_TRUE(s.ok());
    std::vector<Collected> got(std::size(kPrompts));
    for (size_t i = 0; i < std::size(kPrompts); ++i) {
      ASSERT_TRUE((*s)->Submit(Greedy(Encode(*e, kPrompts[i]), kTokens, &got[i])).ok());
    }
    RunUntilIdle(**s, e->kv());
    int preempted = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      ASSERT_TRUE(got[i].finished);
      EXPECT_EQ(got[i].final.finish_reason, alone[i].size() < kTokens ? FinishReason::kStop : FinishReason::kLength);
      EXPECT_EQ(got[i].tokens, alone[i]) << kPrompts[i];
      preempted += got[i].final.usage.preemptions;
    }
    const SchedulerStats st = (*s)->Stats();
    EXPECT_GT(st.preemptions, 0u);
    EXPECT_EQ(static_cast<int>(st.preemptions), preempted);
    EXPECT_EQ(st.failed, 0u);
    e->kv().ClearPrefixCache();
    EXPECT_EQ(e->kv().blocks_in_use(), 0);
  }
}

TEST(SchedulerTest, CancellationFreesEveryBlock) {
  SLIMKV_REQUIRE_MODEL(path, testing::DefaultModelFile());
  auto e = MakeEngine(path);
  ASSERT_TRUE(e);
  auto s = Scheduler::Create(e.get(), {.max_running = 2, .prefix_sharing = false});
  ASSERT_TRUE(s.ok());
  Collected a, b, c;
  auto ida = (*s)->Submit(Greedy(Encode(*e, kPrompts[1]), 200, &a));
  auto idb = (*s)->Submit(Greedy(Encode(*e, kPrompts[2]), 200, &b));
  auto idc = (*s)->Submit(Greedy(Encode(*e, kPrompts[3]), 200, &c));  // waits: max_running 2
  ASSERT_TRUE(ida.ok() && idb.ok() && idc.ok());
  for (int i = 0; i < 5; ++i) (*s)->Step();
  const int with_two = e->kv().blocks_in_use();
  EXPECT_GT(with_two, 0);
  (*s)->Cancel(*ida);
  (*s)->Cancel(*idc);  // still waiting
  (*s)->Step();
  e->kv().CheckInvariants();
  ASSERT_TRUE(a.finished && c.finished);
  EXPECT_EQ(a.final.finish_reason, FinishReason::kCancelled);
  EXPECT_EQ(c.final.finish_reason, FinishReason::kCancelled);
  EXPECT_EQ(c.tokens.size(), 0u);
  EXPECT_FALSE(b.finished);
  EXPECT_LT(e->kv().blocks_in_use(), with_two);
  EXPECT_EQ(e->kv().blocks_in_use(), e->kv().TotalUsage().blocks);  // only b's blocks are left
  (*s)->Cancel(*idb);
  (*s)->Cancel(*idb);      // twice: ignored
  (*s)->Cancel(12345678);  // unknown: ignored
  (*s)->Step();
  EXPECT_TRUE(b.finished);
  EXPECT_TRUE((*s)->Idle());
  e->kv().CheckInvariants();
  EXPECT_EQ(e->kv().blocks_in_use(), 0);
  EXPECT_EQ((*s)->Stats().cancelled, 3u);
}

TEST(SchedulerTest, BadRequestsAndABoundedQueue) {
  SLIMKV_REQUIRE_MODEL(path, testing::DefaultModelFile());
  auto e = MakeEngine(path);
  ASSERT_TRUE(e);
  auto s = Scheduler::Create(e.get(), {.max_running = 1, .max_waiting = 2});
  ASSERT_TRUE(s.ok());
  Collected c[4];
  const auto prompt = Encode(*e, kPrompts[0]);
  EXPECT_TRUE((*s)->Submit(Greedy(prompt, 4, &c[0])).ok());
  EXPECT_TRUE((*s)->Submit(Greedy(prompt, 4, &c[1])).ok());
  auto full = (*s)->Submit(Greedy(prompt, 4, &c[2]));
  ASSERT_FALSE(full.ok());
  EXPECT_EQ(full.status().code(), StatusCode::kResourceExhausted);
  EXPECT_EQ((*s)->Stats().rejected, 1u);
  // Too long for the context: both lengths named.
  auto too_long = (*s)->Submit(Greedy(std::vector<TokenId>(300, 100), 4, &c[3]));
  ASSERT_FALSE(too_long.ok());
  EXPECT_EQ(too_long.status().code(), StatusCode::kOutOfRange);
  EXPECT_NE(too_long.status().message().find("300"), std::string::npos);
  EXPECT_NE(too_long.status().message().find("256"), std::string::npos);
  EXPECT_EQ((*s)->Submit(Greedy({}, 4, &c[3])).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ((*s)->Submit(Greedy(prompt, 0, &c[3])).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ((*s)->Submit(Greedy({-1}, 4, &c[3])).status().code(), StatusCode::kInvalidArgument);
  RequestParams bad = Greedy(prompt, 4, &c[3]);
  bad.sampling.top_p = 2;
  EXPECT_EQ((*s)->Submit(bad).status().code(), StatusCode::kInvalidArgument);
  RunUntilIdle(**s, e->kv());
  EXPECT_TRUE(c[0].finished && c[1].finished);
  // After StopAccepting, nothing more is taken.
  (*s)->StopAccepting();
  EXPECT_EQ((*s)->Submit(Greedy(prompt, 4, &c[3])).status().code(), StatusCode::kCancelled);
}

TEST(SchedulerTest, StopStringsCutTheTextAndAreNotSent) {
  SLIMKV_REQUIRE_MODEL(path, testing::DefaultModelFile());
  auto e = MakeEngine(path);
  ASSERT_TRUE(e);
  const auto prompt = Encode(*e, kPrompts[1]);
  const std::vector<TokenId> alone = AloneGreedy(*e, prompt, 40);
  const std::string full = e->tokenizer().Decode(alone);
  ASSERT_GT(full.size(), 30u);
  // A stop string that starts in the middle of the text (and likely inside a token).
  const std::string stop = full.substr(full.size() / 2, 5);
  const std::string expected = full.substr(0, full.find(stop));
  auto s = Scheduler::Create(e.get(), {});
  ASSERT_TRUE(s.ok());
  Collected c;
  RequestParams p = Greedy(prompt, 40, &c);
  p.stop = {"never appears in the text at all", stop};
  ASSERT_TRUE((*s)->Submit(p).ok());
  RunUntilIdle(**s, e->kv());
  ASSERT_TRUE(c.finished);
  EXPECT_EQ(c.text, expected);
  EXPECT_EQ(c.final.finish_reason, FinishReason::kStop);
  EXPECT_LT(c.tokens.size(), alone.size());
}

TEST(SchedulerTest, PrefixCacheSharesBlocksAndKeepsOutputs) {
  SLIMKV_REQUIRE_MODEL(path, testing::DefaultModelFile());
  auto e = MakeEngine(path);
  ASSERT_TRUE(e);
  std::string system = "You are a helpful assistant who answers briefly and precisely. ";
  for (int i = 0; i < 8; ++i) system += "Always check each fact twice before answering the question. ";
  const auto p1 = Encode(*e, (system + "Question: what is the capital of France?").c_str());
  const auto p2 = Encode(*e, (system + "Question: how many legs does a spider have?").c_str());
  ASSERT_GT(p1.size(), 64u);
  const auto alone1 = AloneGreedy(*e, p1, 12), alone2 = AloneGreedy(*e, p2, 12);
  auto s = Scheduler::Create(e.get(), {.prefix_sharing = true});
  ASSERT_TRUE(s.ok());
  Collected a, b, c;
  ASSERT_TRUE((*s)->Submit(Greedy(p1, 12, &a)).ok());
  RunUntilIdle(**s, e->kv());
  ASSERT_TRUE((*s)->Submit(Greedy(p2, 12, &b)).ok());
  RequestParams other_tenant = Greedy(p2, 12, &c);
  other_tenant.cache_salt = HashCacheSalt("tenant-b");
  ASSERT_TRUE((*s)->Submit(other_tenant).ok());
  RunUntilIdle(**s, e->kv());
  EXPECT_EQ(a.final.usage.cached_tokens, 0);
  EXPECT_GE(b.final.usage.cached_tokens, 64);  // at least two blocks of the system prompt
  EXPECT_EQ(b.final.usage.cached_tokens % 32, 0);
  EXPECT_EQ(c.final.usage.cached_tokens, 0);  // another tenant shares nothing
  EXPECT_EQ(a.tokens, alone1);
  EXPECT_EQ(b.tokens, alone2);
  EXPECT_EQ(c.tokens, alone2);
  const SchedulerStats st = (*s)->Stats();
  EXPECT_EQ(st.prefix_lookups, 3u);
  EXPECT_EQ(st.prefix_hits, 1u);
  EXPECT_GT(st.prefix_cache_entries, 0);
  e->kv().ClearPrefixCache();
  EXPECT_EQ(e->kv().blocks_in_use(), 0);
}

TEST(SchedulerTest, SaltHashIsFixed) {
  EXPECT_EQ(HashCacheSalt(""), 0u);
  EXPECT_EQ(HashCacheSalt("tenant-a"), HashCacheSalt("tenant-a"));
  EXPECT_NE(HashCacheSalt("tenant-a"), HashCacheSalt("tenant-b"));
  // Pinned: the hash must be the same in every process and build (it keys a shared cache).
  EXPECT_EQ(HashCacheSalt("tenant-a"), 0x8cd3349041b718b6u) << std::hex << HashCacheSalt("tenant-a");
  // Tenants (issue 12, finding 9): the same cache_salt under two API keys is two tenants; no
  // tenant is the shared one; without a tenant the salt alone decides, as before.
  EXPECT_EQ(TenantSalt("", "tenant-a"), HashCacheSalt("tenant-a"));
  EXPECT_EQ(TenantSalt("", ""), 0u);
  EXPECT_NE(TenantSalt("key:1", ""), 0u);
  EXPECT_NE(TenantSalt("key:1", ""), TenantSalt("key:2", ""));
  EXPECT_NE(TenantSalt("key:1", "s"), TenantSalt("key:2", "s"));
  EXPECT_NE(TenantSalt("key:1", "s"), HashCacheSalt("s"));
  EXPECT_NE(TenantSalt("ab", "c"), TenantSalt("a", "bc"));
  EXPECT_EQ(TenantSalt("key:1", "s"), TenantSalt("key:1", "s"));
}

// Issue 12, finding 7: a request whose prompt + max_tokens the whole pool cannot hold is
// refused at Submit, naming the numbers, instead of failing when the pool runs dry.
TEST(SchedulerTest, RequestsThatCannotFitThePoolAreRefusedAtSubmit) {
  SLIMKV_REQUIRE_MODEL(path, testing::DefaultModelFile());
  auto probe = MakeEngine(path);
  ASSERT_TRUE(probe);
  const size_t budget = SequenceKvBytes(probe->kv(), 100);  // a pool of 100 tokens for one sequence
  probe.reset();
  auto e = MakeEngine(path, budget);
  ASSERT_TRUE(e);
  auto s = Scheduler::Create(e.get(), {});
  ASSERT_TRUE(s.ok());
  const int64_t most = (*s)->MaxSequenceTokens();
  EXPECT_GE(most, 100);
  EXPECT_LT(most, kCtx);
  const std::vector<TokenId> prompt = Encode(*e, kPrompts[0]);
  Collected c;
  auto refused = (*s)->Submit(Greedy(prompt, static_cast<int>(most - prompt.size()) + 1, &c));
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kOutOfRange);
  EXPECT_NE(refused.status().message().find(std::to_string(most)), std::string::npos) << refused.status().message();
  // The most that fits runs to its length, every token kept.
  auto id = (*s)->Submit(Greedy(prompt, static_cast<int>(most - prompt.size()), &c));
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  RunUntilIdle(**s, e->kv());
  ASSERT_TRUE(c.finished);
  EXPECT_NE(c.final.finish_reason, FinishReason::kError) << c.final.error.ToString();
}

TEST(SchedulerTest, EngineThreadServesOtherThreadsWithAnInjectedClock) {
  SLIMKV_REQUIRE_MODEL(path, testing::DefaultModelFile());
  auto e = MakeEngine(path);
  ASSERT_TRUE(e);
  std::atomic<int64_t> ticks{0};  // each clock read advances 1 ms
  SchedulerOptions o;
  o.clock = [&] { return static_cast<double>(ticks.fetch_add(1)) * 1e-3; };
  auto s = Scheduler::Create(e.get(), o);
  ASSERT_TRUE(s.ok());
  (*s)->Start();
  constexpr int kClients = 4, kEach = 3;
  std::vector<std::thread> clients;
  std::atomic<int> done{0};
  std::map<int, std::string> texts;
  std::mutex texts_mu;
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&, c] {
      for (int r = 0; r < kEach; ++r) {
        auto stream = std::make_shared<RequestStream>();
        RequestParams p;
        p.prompt = Encode(*e, kPrompts[(c + r) % std::size(kPrompts)]);
        p.max_tokens = 8;
        p.sampling.seed = 1000 + c * 10 + r;
        p.on_output = RequestStream::Sink(stream, 0);
        auto id = (*s)->Submit(std::move(p));
        ASSERT_TRUE(id.ok()) << id.status().ToString();
        std::string text;
        RequestStream::Item item;
        for (;;) {
          ASSERT_TRUE(stream->Pop(&item, 60.0)) << "no output within a minute";
          text += item.output.text;
          if (item.output.finished) break;
        }
        EXPECT_NE(item.output.finish_reason, FinishReason::kError);
        std::lock_guard<std::mutex> lock(texts_mu);
        texts[c * kEach + r] = text;
        ++done;
      }
    });
  }
  for (auto& t : clients) t.join();
  (*s)->WaitIdle();
  EXPECT_EQ(done.load(), kClients * kEach);
  const SchedulerStats st = (*s)->Stats();
  EXPECT_EQ(st.finished, static_cast<uint64_t>(kClients * kEach));
  EXPECT_EQ(st.ttft.count(), static_cast<uint64_t>(kClients * kEach));
  EXPECT_GT(st.ttft.sum(), 0.0);
  EXPECT_GT(st.itl.count(), 0u);
  (*s)->Stop();
  e->kv().ClearPrefixCache();
  EXPECT_EQ(e->kv().blocks_in_use(), 0);
}

}  // namespace
}  // namespace slimkv::engine

namespace slimkv::engine {
namespace {

// The admission unit equals what the cache allocates for a sequence decoded token by token.
TEST(SchedulerTest, SequenceKvBytesMatchesTheCache) {
  SLIMKV_REQUIRE_MODEL(path, testing::DefaultModelFile());
  auto e = MakeEngine(path);
  ASSERT_TRUE(e);
  const kv::KvSpec spec = e->kv().spec();
  const int64_t kv_dim = static_cast<int64_t>(spec.n_kv_heads) * spec.head_dim;
  const std::vector<float> k = testing::RandomNormal(kv_dim, 1), v = testing::RandomNormal(kv_dim, 2);
  for (const char* preset : {"fp16", "int4", "kivi2", "q4_0"}) {
    SCOPED_TRACE(preset);
    auto config = kv::ParsePreset(preset);
    ASSERT_TRUE(config.ok());
    auto cache = kv::KvCache::Create(spec, *config, 64 << 20);
    ASSERT_TRUE(cache.ok());
    kv::KvCache& kv = **cache;
    const kv::SeqId s = kv.AddSequence();
    for (int n = 1; n <= 300; ++n) {
      const kv::StepChunk c{s, 1, 0};
      ASSERT_TRUE(kv.BeginStep({&c, 1}).ok());
      for (int l = 0; l < spec.n_layers; ++l) kv.Append(l, {&c, 1}, k.data(), kv_dim, v.data(), kv_dim);
      kv.EndStep({&c, 1});
      ASSERT_EQ(kv.bytes_in_use(), SequenceKvBytes(kv, n)) << n << " tokens";
    }
  }
}

}  // namespace
}  // namespace slimkv::engine
