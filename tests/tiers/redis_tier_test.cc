// The Redis tier against a redis-server of the test's own: records round-trip
// under their namespace; a corrupt value is refused and deleted; Redis down,
// killed mid-run or paused (slow) fails fast once the circuit opens, and the
// tier reconnects when it is back.
#include "kv/tiers/redis_tier.h"

#include <gtest/gtest.h>
#include <signal.h>

#include "base/log.h"
#include "redis_server.h"
#include "tier_test_util.h"

namespace slimkv::kv::tiers {
namespace {

using testing::FakeClock;
using testing::MakeRecord;
using testing::RedisServer;

// A process that talks to Redis must not die of a write to a closed socket (the
// CLI does the same for every command).
const bool kIgnoreSigpipe = (signal(SIGPIPE, SIG_IGN), true);

const Fingerprint kFp{.lo = 0x123, .hi = 0x456};

RedisTierOptions Options(int port, FakeClock *clock = nullptr) {
  RedisTierOptions o;
  o.host = "127.0.0.1";
  o.port = port;
  o.connect_timeout_s = 0.3;
  o.op_timeout_s = 0.3;
  if (clock) o.clock = clock->fn();
  return o;
}

TEST(RedisAddressTest, ParsesAndRefuses) {
  auto a = ParseRedisAddress("10.0.0.5:6380");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->host, "10.0.0.5");
  EXPECT_EQ(a->port, 6380);
  auto b = ParseRedisAddress("[::1]:7000");
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->host, "::1");
  for (const char *bad : {"", "host", "host:", ":6379", "host:0", "host:65536", "host:12x", "host:-1"}) {
    EXPECT_FALSE(ParseRedisAddress(bad).ok()) << bad;
  }
}

TEST(CircuitBreakerTest, OpensBacksOffAndCloses) {
  CircuitBreaker b(BreakerOptions{.failures_to_open = 2, .first_backoff_s = 1, .max_backoff_s = 3});
  EXPECT_TRUE(b.Allow(0));
  b.Failure(0);
  EXPECT_TRUE(b.Allow(0));  // one failure of two
  b.Failure(0);
  EXPECT_FALSE(b.Allow(0.5));
  EXPECT_TRUE(b.Allow(1.0));  // half-open trial
  b.Failure(1.0);             // fails: open for 2 s
  EXPECT_FALSE(b.Allow(2.9));
  EXPECT_TRUE(b.Allow(3.0));
  b.Failure(3.0);  // 4 s capped at 3
  EXPECT_FALSE(b.Allow(5.9));
  EXPECT_TRUE(b.Allow(6.0));
  b.Success();
  EXPECT_EQ(b.State(6.0), "closed");
  b.Failure(7);
  EXPECT_TRUE(b.Allow(7));  // the count and the backoff were reset
  EXPECT_EQ(b.opened(), 3);
}

TEST(RedisTierTest, RoundTripUnderTheFingerprintsNamespace) {
  RedisServer server;
  ASSERT_EQ(server.Start(), "");
  RedisTier t(Options(server.port()));
  const auto rec = MakeRecord(kFp, 77, 3, 1, 64, 90, 8192,
                              2304);  // a SmolLM2-sized int4 record
  ASSERT_TRUE(t.Put(kFp, 77, rec).ok());
  auto got = t.Get(kFp, 77);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(*got, rec);
  EXPECT_EQ(t.Get(kFp, 78).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(t.Get(Fingerprint{.lo = 0x124, .hi = 0x456}, 77).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(server.Cli("EXISTS " + RedisTier::KeyOf(kFp, 77)), "1");
  EXPECT_EQ(RedisTier::KeyOf(kFp, 77), "slimkv:00000000000004560000000000000123:000000000000004d");
  // A second client (another instance) sees what the first stored.
  RedisTier other(Options(server.port()));
  ASSERT_TRUE(other.Get(kFp, 77).ok());
}

TEST(RedisTierTest, ACorruptValueIsRefusedAndDeleted) {
  RedisServer server;
  ASSERT_EQ(server.Start(), "");
  RedisTier t(Options(server.port()));
  const std::string key = RedisTier::KeyOf(kFp, 5);
  server.Cli("SET " + key + " garbage-not-a-record");
  EXPECT_EQ(t.Get(kFp, 5).status().code(), StatusCode::kDataLoss);
  EXPECT_EQ(server.Cli("EXISTS " + key), "0");
  // A record stored under another key (a copy, a rename) is intact but not the
  // one asked for.
  ASSERT_TRUE(t.Put(kFp, 6, MakeRecord(kFp, 5, 0, 1)).ok());
  EXPECT_EQ(t.Get(kFp, 6).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(t.Stats().corrupt, 2);
}

TEST(RedisTierTest, DownFromTheStartFailsFastAndConnectsWhenUp) {
  FakeClock clock;
  const int port = testing::FreeLoopbackPort();
  RedisTier t(Options(port, &clock));
  EXPECT_EQ(t.Get(kFp, 1).status().code(),
            StatusCode::kIo);  // connection refused
  const double t0 = NowSeconds();
  for (int i = 0; i < 100; ++i) EXPECT_EQ(t.Get(kFp, 1).status().code(), StatusCode::kIo);
  EXPECT_LT(NowSeconds() - t0, 0.05) << "an open circuit must not try to connect";
  EXPECT_EQ(t.Stats().fast_failures, 100);
  EXPECT_NE(t.Stats().state.find("unreachable"), std::string::npos);
  RedisServer server;
  ASSERT_EQ(server.Start(port), "");
  clock.now += 1;  // past the first backoff
  EXPECT_TRUE(t.Put(kFp, 1, MakeRecord(kFp, 1, 0, 1)).ok());
  EXPECT_EQ(t.Stats().state, "ok");
}

TEST(RedisTierTest, KilledMidRunFailsFastThenReconnects) {
  FakeClock clock;
  RedisServer server;
  ASSERT_EQ(server.Start(), "");
  const int port = server.port();
  RedisTier t(Options(port, &clock));
  ASSERT_TRUE(t.Put(kFp, 1, MakeRecord(kFp, 1, 0, 1)).ok());
  server.Kill();
  const double t0 = NowSeconds();
  EXPECT_FALSE(t.Get(kFp, 1).ok());  // the held connection is dead
  EXPECT_FALSE(t.Put(kFp, 2, MakeRecord(kFp, 2, 0, 2)).ok());
  EXPECT_FALSE(t.Get(kFp, 1).ok());
  EXPECT_LT(NowSeconds() - t0, 1.0);
  ASSERT_EQ(server.Start(port), "");
  clock.now += 0.4;
  EXPECT_FALSE(t.Get(kFp, 1).ok());  // still open: no reconnect before the backoff
  clock.now += 0.2;
  EXPECT_EQ(t.Get(kFp, 1).status().code(),
            StatusCode::kNotFound);  // a new, empty Redis
  ASSERT_TRUE(t.Put(kFp, 1, MakeRecord(kFp, 1, 0, 1)).ok());
  EXPECT_TRUE(t.Get(kFp, 1).ok());
}

// A Redis that accepts and never answers (paused): one call waits the reply
// timeout, the next ones fail at once; resumed, it is used again after the
// backoff.
TEST(RedisTierTest, ASlowRedisCostsOneTimeoutThenFailsFast) {
  FakeClock clock;
  RedisServer server;
  ASSERT_EQ(server.Start(), "");
  RedisTier t(Options(server.port(), &clock));
  ASSERT_TRUE(t.Put(kFp, 1, MakeRecord(kFp, 1, 0, 1)).ok());
  server.Pause();
  double t0 = NowSeconds();
  EXPECT_EQ(t.Get(kFp, 1).status().code(), StatusCode::kIo);
  const double first = NowSeconds() - t0;
  EXPECT_GE(first, 0.25);
  EXPECT_LT(first, 2.0);
  t0 = NowSeconds();
  for (int i = 0; i < 50; ++i) EXPECT_FALSE(t.Get(kFp, 1).ok());
  EXPECT_LT(NowSeconds() - t0, 0.05);
  server.Resume();
  clock.now += 1;
  auto got = t.Get(kFp, 1);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
}

}  // namespace
}  // namespace slimkv::kv::tiers
