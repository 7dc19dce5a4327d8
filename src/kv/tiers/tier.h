// A lower tier of the KV cache: a store of block records (block_record.h) keyed
// by a fingerprint and a prefix chain key, below the block pool (RAM). Two
// exist: a bounded local directory (disk_tier.h) and Redis, shared by instances
// (redis_tier.h).
//
// A tier is a cache, never the only copy: every failure (a missing, corrupt or
// mismatched record, a full or read-only disk, a Redis that is down or slow) is
// a miss to the caller, who computes the block instead. Get returns only
// records that parsed and checked (ParseRecord); a record that failed is
// deleted from the tier. Thread-safe: the tier manager's worker threads call
// them.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "base/status.h"
#include "kv/tiers/fingerprint.h"

namespace slimkv::kv::tiers {

struct TierStats {
  int64_t gets = 0;           // Get calls
  int64_t hits = 0;           // records returned
  int64_t corrupt = 0;        // records that failed their checks and were dropped
  int64_t puts = 0;           // Put calls
  int64_t put_failures = 0;   // puts refused or failed (full, read-only, unreachable)
  int64_t fast_failures = 0;  // calls refused without trying (a stopped disk, an open circuit)
  int64_t evicted = 0;        // records removed to make room
  int64_t entries = 0;        // records held now (disk: in the index; Redis: not known, 0)
  int64_t bytes_held = 0;     // bytes of those records
  int64_t bytes_read = 0, bytes_written = 0;
  double read_seconds = 0,
         write_seconds = 0;  // time spent in successful reads / writes
  std::string state = "ok";  // "ok", or why the tier does not grow or answer now
  // The same as one of kTierConditions, for metrics (a fixed label set).
  std::string condition = "ok";
};

// Every value TierStats::condition takes: "ok"; a disk that is "full" (stopped growing),
// "read_only" or "failing" (stopped writing); a Redis whose circuit is open ("unreachable").
inline constexpr const char *kTierConditions[] = {"ok", "full", "read_only", "failing", "unreachable"};

class BlockTier {
 public:
  virtual ~BlockTier() = default;
  virtual const char *name() const = 0;  // "disk", "redis"
  // The record stored under (fingerprint, key), checked. NotFound when there is
  // none, DataLoss / InvalidArgument when one was there but failed its checks
  // (now deleted), Io when the tier cannot answer.
  virtual Result<std::vector<uint8_t>> Get(const Fingerprint &fp, uint64_t key) = 0;
  // Stores an encoded record (EncodeRecord) under (fingerprint, key), replacing
  // any. Errors say why the tier did not take it; the caller goes on without
  // it.
  virtual Status Put(const Fingerprint &fp, uint64_t key, std::span<const uint8_t> record) = 0;
  virtual TierStats Stats() const = 0;
};

// A tier on this machine (the disk tier): besides prefix blocks it holds the blocks recall
// spills past host memory (`:recall:host=N`, kv_recall.cc). Those are one sequence's, written
// and erased at the pace of decode steps and useless to any other process, so they are kept
// apart from the prefix records: never listed with them, never found by Get, gone at a
// restart. The same rules hold otherwise: a spilled record that fails its checks is a miss.
class LocalTier : public BlockTier {
 public:
  // Stores a spilled record (EncodeRecord) under (fingerprint, key); errors say why not.
  virtual Status PutSpill(const Fingerprint &fp, uint64_t key, std::span<const uint8_t> record) = 0;
  // The spilled record of (fingerprint, key), checked (ParseRecord); NotFound, DataLoss (now
  // dropped) or Io as Get.
  virtual Result<std::vector<uint8_t>> GetSpill(const Fingerprint &fp, uint64_t key) = 0;
  // Drops the spilled record of (fingerprint, key) if there is one.
  virtual void EraseSpill(const Fingerprint &fp, uint64_t key) = 0;
  // Whether a put now may succeed (not read-only or failing, or its retry time has come): a
  // spill that cannot be written is dropped at once rather than lost when read.
  virtual bool Writable() const = 0;
};

}  // namespace slimkv::kv::tiers
