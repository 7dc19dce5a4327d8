// The Redis tier (`--kv-redis HOST:PORT`): block records shared by every slimkv
// instance that reaches the same Redis, through hiredis.
//
// Keys are "slimkv:<fingerprint hex>:<chain key hex>", so instances share
// exactly the blocks whose model, formats, block shape and tenant match
// (fingerprint.h), and one Redis can serve several models and tenants without
// mixing them. Values are records (block_record.h); a value that fails its
// checks is deleted. Redis bounds its own memory (maxmemory with an LRU policy;
// tools/serve_cluster.sh sets it).
//
// Faults never reach a request: every call has a connect and a reply timeout,
// and a circuit breaker (circuit_breaker.h) turns a Redis that is down, killed
// or slow into immediate failures (Io) until its backoff passes; then the next
// call reconnects.
#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include "kv/tiers/circuit_breaker.h"
#include "kv/tiers/tier.h"

struct redisContext;

namespace slimkv::kv::tiers {

struct RedisTierOptions {
  std::string host = "127.0.0.1";
  int port = 6379;
  double connect_timeout_s = 0.2;
  double op_timeout_s = 0.5;  // one command's reply (a record is a few hundred KB to a few MB)
  BreakerOptions breaker;
  std::function<double()> clock;  // seconds; NowSeconds when empty
};

// Parses "HOST:PORT" (HOST may be a name, an IPv4 address or a bracketed IPv6
// one).
Result<RedisTierOptions> ParseRedisAddress(std::string_view address);

class RedisTier final : public BlockTier {
 public:
  // Connects lazily: a Redis that is not up yet is a closed circuit's first
  // failure, not an error here.
  explicit RedisTier(const RedisTierOptions &options);
  ~RedisTier() override;

  const char *name() const override { return "redis"; }
  Result<std::vector<uint8_t>> Get(const Fingerprint &fp, uint64_t key) override;
  Status Put(const Fingerprint &fp, uint64_t key, std::span<const uint8_t> record) override;
  TierStats Stats() const override;

  static std::string KeyOf(const Fingerprint &fp, uint64_t key);

 private:
  double Now() const;
  // Under mu_: a connected context, or Io (connect failed, or the circuit is
  // open).
  Status Connect();
  void Disconnect();                     // under mu_
  Status Fail(const std::string &what);  // under mu_: drops the connection, opens the circuit

  RedisTierOptions options_;
  mutable std::mutex mu_;
  redisContext *ctx_ = nullptr;
  CircuitBreaker breaker_;
  TierStats stats_;
};

}  // namespace slimkv::kv::tiers
