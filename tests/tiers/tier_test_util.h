// Helpers of the tier tests: records with known bytes, scratch directories, a
// clock that tests move by hand, and a tmpfs of a chosen size in a private
// mount namespace (for a disk that fills up or turns read-only).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "kv/tiers/block_record.h"
#include "kv/tiers/tier.h"

namespace slimkv::kv::tiers::testing {

// An encoded record of `n_streams` streams (every third sealed, every seventh
// absent, the rest staged) and `n_tokens` tokens, bytes a function of `seed`.
std::vector<uint8_t> MakeRecord(const Fingerprint &fp, uint64_t key, uint64_t parent, uint64_t seed,
                                int n_tokens = 16, int n_streams = 5, uint32_t staged_bytes = 128,
                                uint32_t sealed_bytes = 64);

// A fresh directory under $TMPDIR (or /tmp), removed with everything in it on
// destruction.
class ScratchDir {
 public:
  ScratchDir();
  ~ScratchDir();
  const std::string &path() const { return path_; }

 private:
  std::string path_;
};

// A tier in memory whose reads a test can hold up (a slow disk or network): while closed,
// Get blocks until Open; so can its writes (ClosePuts / OpenPuts). Records are stored as given
// (not parsed: tests put what they like). Local (recall may spill to it), writable unless a
// test says otherwise.
class GatedTier final : public LocalTier {
 public:
  const char *name() const override { return "gated"; }
  Result<std::vector<uint8_t>> Get(const Fingerprint &fp, uint64_t key) override;
  Status Put(const Fingerprint &fp, uint64_t key, std::span<const uint8_t> record) override;
  TierStats Stats() const override;
  Status PutSpill(const Fingerprint &fp, uint64_t key, std::span<const uint8_t> record) override;
  Result<std::vector<uint8_t>> GetSpill(const Fingerprint &fp, uint64_t key) override;
  void EraseSpill(const Fingerprint &fp, uint64_t key) override;
  bool Writable() const override;
  void Close();
  void Open();
  void ClosePuts();
  void OpenPuts();
  void SetWritable(bool writable);
  int puts_blocked() const;  // Put calls waiting at the gate now
  bool HasSpill(const Fingerprint &fp, uint64_t key) const;  // a spilled record
  int gets() const;     // Get calls so far
  int blocked() const;  // Get calls waiting at the gate now
  size_t size() const;  // records held

 private:
  mutable std::mutex mu_;
  std::condition_variable open_;
  bool closed_ = false, puts_closed_ = false, writable_ = true;
  int gets_ = 0, blocked_ = 0, puts_blocked_ = 0;
  using Records = std::map<std::pair<std::string, uint64_t>, std::vector<uint8_t>>;
  Result<std::vector<uint8_t>> GateGet(const Records &records, const Fingerprint &fp, uint64_t key);
  Status GatePut(Records &records, const Fingerprint &fp, uint64_t key, std::span<const uint8_t> record);
  Records records_, spills_;
};

// A clock the test advances.
struct FakeClock {
  double now = 1000;
  std::function<double()> fn() {
    return [this] { return now; };
  }
};

// Runs `body` in a forked child with a private mount namespace (a user
// namespace too when not root) in which a tmpfs of `bytes` is mounted at `dir`;
// `remount_read_only(dir)` inside makes it read-only. Returns what body
// returned ("" = success) or why the child could not run it. The mount
// disappears with the child.
std::string InTmpfs(const std::string &dir, size_t bytes, const std::function<std::string()> &body);
bool RemountReadOnly(const std::string &dir);

}  // namespace slimkv::kv::tiers::testing
