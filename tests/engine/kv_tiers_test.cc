// The prefix cache's lower tiers with the real default model and int4 KV: a restarted engine
// answers a returning conversation from its --kv-disk directory, a second instance reuses
// what the first put in Redis, and every fault (a corrupt or truncated block file, Redis
// killed) costs recomputation only: outputs always equal those of an engine without tiers.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "engine/scheduler.h"
#include "engine_test_util.h"
#include "kv/tiers/tier_stack.h"
#include "test_util.h"
#include "tiers/redis_server.h"
#include "tiers/tier_test_util.h"

namespace slimkv::engine {
namespace {

namespace fs = std::filesystem;
constexpr int kCtx = 512;
constexpr int kNew = 8;

std::unique_ptr<Engine> MakeEngine(const std::string& path, const std::string& disk = "",
                                   const std::string& redis = "") {
  EngineOptions o;
  o.model_path = path;
  o.kv = *kv::ParsePreset("int4");
  o.n_ctx = kCtx;
  o.n_seq = 2;
  o.kv_disk_dir = disk;
  o.kv_disk_bytes = disk.empty() ? 0 : (64ull << 20);
  o.kv_redis = redis;
  auto e = Engine::Create(o);
  EXPECT_TRUE(e.ok()) << e.status().ToString();
  return e.ok() ? std::move(e).value() : nullptr;
}

struct Answer {
  std::vector<TokenId> tokens;
  int cached = -1;
  bool error = false;
};

// Greedy answer of one request through the scheduler, with the prefix cache on.
Answer Ask(Engine& e, const std::vector<TokenId>& prompt, uint64_t salt = 0) {
  // A read-ahead is waited for within its step (as swap_test.cc does): one request, stepped by hand.
  auto s = Scheduler::Create(&e, {.prefix_sharing = true, .read_ahead_wait_s = 60});
  EXPECT_TRUE(s.ok());
  Answer a;
  RequestParams p;
  p.prompt = prompt;
  p.max_tokens = kNew;
  p.sampling.temperature = 0;
  p.cache_salt = salt;
  p.on_output = [&a](const RequestOutput& o) {
    if (o.finished) {
      a.cached = o.usage.cached_tokens;
      a.error = o.finish_reason == FinishReason::kError;
    } else {
      a.tokens.push_back(o.token);
    }
  };
  EXPECT_TRUE((*s)->Submit(std::move(p)).ok());
  for (int i = 0; i < 100000 && !(*s)->Idle(); ++i) (*s)->Step();
  e.kv().CheckInvariants();
  if (e.tiers()) e.tiers()->Flush();
  return a;
}

// A conversation's first turn and the second that repeats it (~300 and ~330 tokens).
struct Conversation {
  std::vector<TokenId> first, second;
};
Conversation MakeConversation(Engine& e, const std::string& topic) {
  std::string text = "You are a careful assistant. The user asks about " + topic + ". ";
  for (int i = 0; i < 12; ++i) text += "Answer with facts you are sure of and say when you are not sure. ";
  text += "User: tell me about " + topic + ".";
  Conversation c;
  c.first = e.tokenizer().Encode(text, e.tokenizer().add_bos_default(), false);
  c.second = e.tokenizer().Encode(text + " Assistant: gladly. User: and its history?",
                                  e.tokenizer().add_bos_default(), false);
  return c;
}

std::vector<std::string> BlockFiles(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& f : fs::directory_iterator(dir))
    if (f.path().extension() == ".kvb") out.push_back(f.path().string());
  return out;
}

TEST(KvTiersTest, ARestartedEngineAnswersFromDiskWithTheSameOutput) {
  SLIMKV_REQUIRE_MODEL(path, testing::DefaultModelFile());
  kv::tiers::testing::ScratchDir dir;
  // The reference: an engine without tiers that still holds the first turn in RAM (a hit
  // there attaches the same blocks a tier returns; recomputing would differ in the last bits,
  // as a prompt prefilled at once attends to its own tokens before they are quantized).
  Answer want;
  Conversation conv;
  {
    auto plain = MakeEngine(path);
    ASSERT_TRUE(plain);
    conv = MakeConversation(*plain, "the river Thames");
    Ask(*plain, conv.first);
    want = Ask(*plain, conv.second);
  }
  {
    auto first = MakeEngine(path, dir.path());
    ASSERT_TRUE(first);
    const Answer a = Ask(*first, conv.first);
    EXPECT_EQ(a.cached, 0);
    EXPECT_FALSE(BlockFiles(dir.path()).empty());
  }
  auto restarted = MakeEngine(path, dir.path());
  ASSERT_TRUE(restarted);
  const Answer b = Ask(*restarted, conv.second);
  const int bt = restarted->kv().config().block_tokens;
  EXPECT_GE(b.cached, (static_cast<int>(conv.first.size()) - 1) / bt * bt - bt);
  EXPECT_EQ(b.cached, want.cached);
  EXPECT_EQ(b.tokens, want.tokens);
  EXPECT_GT(restarted->kv().prefix_stats().tier_blocks, 0);
}

TEST(KvTiersTest, CorruptAndTruncatedBlockFilesAreRecomputedNeverUsed) {
  SLIMKV_REQUIRE_MODEL(path, testing::DefaultModelFile());
  kv::tiers::testing::ScratchDir dir;
  std::vector<TokenId> want;
  Conversation conv;
  {
    auto plain = MakeEngine(path);
    ASSERT_TRUE(plain);
    conv = MakeConversation(*plain, "the moon");
    want = Ask(*plain, conv.second).tokens;
  }
  {
    auto first = MakeEngine(path, dir.path());
    ASSERT_TRUE(first);
    Ask(*first, conv.first);
  }
  // Flip one byte deep in every other file's payload, truncate the rest.
  const auto files = BlockFiles(dir.path());
  ASSERT_GE(files.size(), 2u);
  for (size_t i = 0; i < files.size(); ++i) {
    const auto size = fs::file_size(files[i]);
    if (i % 2 == 0) {
      std::fstream f(files[i], std::ios::in | std::ios::out | std::ios::binary);
      f.seekg(static_cast<std::streamoff>(size / 2));
      char c = 0;
      f.read(&c, 1);
      c ^= 0x10;
      f.seekp(static_cast<std::streamoff>(size / 2));
      f.write(&c, 1);
    } else {
      fs::resize_file(files[i], size - 7);
    }
  }
  auto restarted = MakeEngine(path, dir.path());
  ASSERT_TRUE(restarted);
  const Answer b = Ask(*restarted, conv.second);
  EXPECT_FALSE(b.error);
  EXPECT_EQ(b.cached, 0);  // the chain's first block is damaged: nothing after it is reachable
  EXPECT_EQ(b.tokens, want);
  EXPECT_EQ(restarted->kv().prefix_stats().tier_blocks, 0);
}

TEST(KvTiersTest, ASecondInstanceReusesRedisBlocksAndSurvivesRedisDying) {
  SLIMKV_REQUIRE_MODEL(path, testing::DefaultModelFile());
  kv::tiers::testing::RedisServer redis;
  ASSERT_EQ(redis.Start(), "");
  const std::string addr = "127.0.0.1:" + std::to_string(redis.port());
  // References (see the first test): the second turn cold, and after the first in RAM.
  std::vector<TokenId> want_cold, want_other;
  Answer want;
  Conversation conv, other;
  {
    auto plain = MakeEngine(path);
    ASSERT_TRUE(plain);
    conv = MakeConversation(*plain, "the city of Lyon");
    other = MakeConversation(*plain, "glaciers");
    want_cold = Ask(*plain, conv.second).tokens;
    want_other = Ask(*plain, other.second).tokens;
    plain->kv().ClearPrefixCache();
    Ask(*plain, conv.first);
    want = Ask(*plain, conv.second);
  }
  auto a = MakeEngine(path, "", addr);
  auto b = MakeEngine(path, "", addr);
  ASSERT_TRUE(a && b);
  EXPECT_EQ(Ask(*a, conv.first).cached, 0);
  // Another tenant on the second instance finds nothing; the same tenant finds the blocks.
  const Answer foreign = Ask(*b, conv.second, /*salt=*/12345);
  EXPECT_EQ(foreign.cached, 0);
  EXPECT_EQ(foreign.tokens, want_cold);
  const Answer shared = Ask(*b, conv.second);
  EXPECT_GT(shared.cached, 0);
  EXPECT_EQ(shared.cached, want.cached);
  EXPECT_EQ(shared.tokens, want.tokens);
  // Redis killed: both instances go on serving, with the same outputs.
  redis.Kill();
  const Answer after = Ask(*a, other.second);
  EXPECT_FALSE(after.error);
  EXPECT_EQ(after.tokens, want_other);
  const Answer after_b = Ask(*b, other.second);
  EXPECT_FALSE(after_b.error);
  EXPECT_EQ(after_b.tokens, want_other);
}

}  // namespace
}  // namespace slimkv::engine
