#include "kv/tiers/redis_tier.h"

#include <hiredis/hiredis.h>
#include <sys/time.h>

#include <charconv>
#include <cmath>

#include "base/log.h"
#include "kv/tiers/block_record.h"

namespace slimkv::kv::tiers {
namespace {

timeval ToTimeval(double seconds) {
  const double s = std::max(seconds, 0.001);
  timeval tv;
  tv.tv_sec = static_cast<time_t>(s);
  tv.tv_usec = static_cast<suseconds_t>((s - std::floor(s)) * 1e6);
  return tv;
}

struct ReplyDeleter {
  void operator()(redisReply *r) const { freeReplyObject(r); }
};
using Reply = std::unique_ptr<redisReply, ReplyDeleter>;

}  // namespace

Result<RedisTierOptions> ParseRedisAddress(std::string_view address) {
  RedisTierOptions o;
  const size_t colon = address.rfind(':');
  if (colon == std::string_view::npos || colon == 0 || colon + 1 == address.size()) {
    return InvalidArgument("--kv-redis '{}': expected HOST:PORT", address);
  }
  std::string_view host = address.substr(0, colon);
  if (host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  const std::string_view port = address.substr(colon + 1);
  int p = 0;
  const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), p);
  if (ec != std::errc() || end != port.data() + port.size() || p < 1 || p > 65535) {
    return InvalidArgument("--kv-redis '{}': port '{}' is not a number in 1..65535", address, port);
  }
  o.host = std::string(host);
  o.port = p;
  return o;
}

RedisTier::RedisTier(const RedisTierOptions &options) : options_(options), breaker_(options.breaker) {}

RedisTier::~RedisTier() { Disconnect(); }

double RedisTier::Now() const { return options_.clock ? options_.clock() : NowSeconds(); }

std::string RedisTier::KeyOf(const Fingerprint &fp, uint64_t key) {
  return fmt::format("slimkv:{}:{:016x}", fp.Hex(), key);
}

void RedisTier::Disconnect() {
  if (ctx_) redisFree(ctx_);
  ctx_ = nullptr;
}

Status RedisTier::Fail(const std::string &what) {
  const bool was_open = breaker_.open();
  Disconnect();
  breaker_.Failure(Now());
  if (!was_open && breaker_.open()) {
    spdlog::warn(
        "KV Redis tier {}:{}: {}; requests are served locally, "
        "retrying in the background",
        options_.host, options_.port, what);
  }
  return IoError("KV Redis tier {}:{}: {}", options_.host, options_.port, what);
}

Status RedisTier::Connect() {
  if (!breaker_.Allow(Now())) {
    ++stats_.fast_failures;
    return IoError("KV Redis tier {}:{}: circuit {}", options_.host, options_.port, breaker_.State(Now()));
  }
  if (ctx_) return Status::Ok();
  ctx_ = redisConnectWithTimeout(options_.host.c_str(), options_.port, ToTimeval(options_.connect_timeout_s));
  if (!ctx_) return Fail("cannot allocate a connection");
  if (ctx_->err) return Fail(fmt::format("connect: {}", ctx_->errstr));
  if (redisSetTimeout(ctx_, ToTimeval(options_.op_timeout_s)) != REDIS_OK) {
    return Fail(fmt::format("set timeout: {}", ctx_->errstr));
  }
  return Status::Ok();
}

Result<std::vector<uint8_t>> RedisTier::Get(const Fingerprint &fp, uint64_t key) {
  const std::string k = KeyOf(fp, key);
  std::lock_guard lock(mu_);
  ++stats_.gets;
  RETURN_IF_ERROR(Connect());
  const double t0 = Now();
  Reply r(static_cast<redisReply *>(redisCommand(ctx_, "GET %b", k.data(), k.size())));
  if (!r) return Fail(fmt::format("GET: {}", ctx_->errstr));
  if (r->type == REDIS_REPLY_ERROR) return Fail(fmt::format("GET: {}", std::string(r->str, r->len)));
  breaker_.Success();
  if (r->type == REDIS_REPLY_NIL) return NotFound("KV Redis tier: no record {}", k);
  if (r->type != REDIS_REPLY_STRING) return Fail(fmt::format("GET: reply of type {}", r->type));
  const double t1 = Now();
  std::vector<uint8_t> bytes(r->str, r->str + r->len);
  auto view = ParseRecord(bytes, fp, key);
  if (!view.ok()) {
    ++stats_.corrupt;
    spdlog::warn("KV Redis tier: dropping {}: {}", k, view.status().message());
    Reply d(static_cast<redisReply *>(redisCommand(ctx_, "DEL %b", k.data(), k.size())));
    if (!d) static_cast<void>(Fail(fmt::format("DEL: {}", ctx_->errstr)));
    return view.status();
  }
  ++stats_.hits;
  stats_.bytes_read += static_cast<int64_t>(bytes.size());
  stats_.read_seconds += t1 - t0;
  return bytes;
}

Status RedisTier::Put(const Fingerprint &fp, uint64_t key, std::span<const uint8_t> record) {
  const std::string k = KeyOf(fp, key);
  std::lock_guard lock(mu_);
  ++stats_.puts;
  if (Status st = Connect(); !st.ok()) {
    ++stats_.put_failures;
    return st;
  }
  const double t0 = Now();
  Reply r(static_cast<redisReply *>(
      redisCommand(ctx_, "SET %b %b", k.data(), k.size(), record.data(), record.size())));
  if (!r || r->type == REDIS_REPLY_ERROR) {
    ++stats_.put_failures;
    // An error reply (OOM with maxmemory and no eviction policy, say) is the
    // store refusing, not the store failing, but either way it should not be
    // asked again at once.
    return Fail(fmt::format("SET: {}", r ? std::string(r->str, r->len) : std::string(ctx_->errstr)));
  }
  breaker_.Success();
  stats_.bytes_written += static_cast<int64_t>(record.size());
  stats_.write_seconds += Now() - t0;
  return Status::Ok();
}

TierStats RedisTier::Stats() const {
  std::lock_guard lock(mu_);
  TierStats s = stats_;
  s.state = breaker_.open() ? "unreachable, circuit " + breaker_.State(Now()) : "ok";
  s.condition = breaker_.open() ? "unreachable" : "ok";
  return s;
}

}  // namespace slimkv::kv::tiers
