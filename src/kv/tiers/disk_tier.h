// The disk tier: block records as files in one directory, within a byte budget
// (`--kv-disk DIR`, `--kv-disk-mem GiB`).
//
// Files are named <fingerprint hex>-<key hex>.kvb and hold one record each
// (block_record.h). The tier keeps its own index (which records it holds, their
// sizes, their order of last use) in memory and rebuilds it on start from the
// files: their names, headers and sizes (a file whose header disagrees with its
// name or size is deleted), ordered by modification time, which a read
// refreshes. So the cache survives restarts and its least recently used records
// go first when the budget needs room.
//
// Writes are atomic: a record is written to a temporary file in the directory
// and renamed over its final name, so a reader (this process or the next) sees
// either the whole record or none. No fsync: a record torn by a crash fails its
// checksum when read and is deleted, which costs one recomputation, not a wrong
// answer.
//
// Faults: a read that fails its checks deletes the file and is a miss. A write
// that fails because the disk is full (ENOSPC, EDQUOT) caps the tier at the
// bytes it holds then (it stops growing, still replacing old records by new
// ones); one that fails because the directory is read-only or not writable
// (EROFS, EACCES, EPERM) stops writes. Either state is reported (Stats().state,
// one warning in the log) and lifts after `retry_seconds`, when the tier tries
// again. Any other write error (EIO, ...) stops writes the same way. Serving
// never waits on any of this.
//
// One process per directory: Open takes an exclusive flock on DIR/LOCK and
// fails if another process holds it.
//
// Spilled records (LocalTier) live in slots of one file per record size,
// DIR/spill-<bytes>.kvs, written in place (pwrite) and freed without a file
// operation: recall spills and erases thousands of blocks per second, and a
// file created and unlinked per block cost decode a third of its speed on
// ext4 (inode allocation). Their slots count against the budget with the
// prefix records (the least recently used records leave to make room); the
// slab files are removed at Open and at destruction, since no other process
// and no restart can use them.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "kv/tiers/tier.h"

namespace slimkv::kv::tiers {

struct DiskTierOptions {
  std::string dir;
  uint64_t budget_bytes = 0;      // records held at most, in file bytes
  double retry_seconds = 30;      // after a full or read-only failure, writes resume after this
  std::function<double()> clock;  // seconds; NowSeconds when empty (tests inject their own)
};

class DiskTier final : public LocalTier {
 public:
  // Creates the directory if needed and rebuilds the index from it.
  // InvalidArgument for a zero budget; Io if the directory cannot be created or
  // read, or another process holds it. A directory that exists but cannot be
  // written opens read-only (state "read-only").
  static Result<std::unique_ptr<DiskTier>> Open(const DiskTierOptions &options);
  ~DiskTier() override;

  const char *name() const override { return "disk"; }
  Result<std::vector<uint8_t>> Get(const Fingerprint &fp, uint64_t key) override;
  Status Put(const Fingerprint &fp, uint64_t key, std::span<const uint8_t> record) override;
  TierStats Stats() const override;
  Status PutSpill(const Fingerprint &fp, uint64_t key, std::span<const uint8_t> record) override;
  Result<std::vector<uint8_t>> GetSpill(const Fingerprint &fp, uint64_t key) override;
  void EraseSpill(const Fingerprint &fp, uint64_t key) override;
  bool Writable() const override;
  int64_t spilled_records() const;  // spilled records held now (tests)

  bool Contains(const Fingerprint &fp, uint64_t key) const;
  // Index and directory agree: the byte sum and the order hold every entry
  // once. Tests only.
  void CheckInvariants() const;
  // The file a record lives in (tests corrupt it).
  std::string PathOf(const Fingerprint &fp, uint64_t key) const;

 private:
  struct Id {
    Fingerprint fp;
    uint64_t key = 0;
    bool operator==(const Id &) const = default;
  };
  struct IdHash {
    size_t operator()(const Id &id) const { return id.fp.lo ^ (id.fp.hi * 0x9E3779B97F4A7C15ull) ^ id.key; }
  };
  struct Entry {
    uint64_t bytes = 0;
    uint64_t last_use = 0;  // a tick of use_clock_; the key of order_
  };
  enum class State { kOk, kFull, kReadOnly, kFailing };

  explicit DiskTier(const DiskTierOptions &options);
  double Now() const;
  Status Scan();
  void Touch(const Id &id, bool touch_file);  // under mu_
  void Drop(const Id &id, bool unlink_file);  // under mu_
  bool EvictFor(uint64_t bytes);              // under mu_; false if the record cannot fit
  void Stop(State state, int err);            // under mu_
  void Fail(int err);                         // under mu_: a write failed with errno err
  bool Resume();                              // under mu_: false while writes are stopped
  void FreeSpill(const Id &id);               // under mu_
  std::string FileName(const Id &id) const;

  DiskTierOptions options_;
  int lock_fd_ = -1;
  mutable std::mutex mu_;
  std::unordered_map<Id, Entry, IdHash> index_;
  std::map<uint64_t, Id> order_;  // last_use -> record, oldest first
  uint64_t use_clock_ = 0;
  uint64_t bytes_held_ = 0;  // of the indexed (prefix) records
  // Spilled records: per record size a slab file of slots; where each record is.
  struct Slab {
    int fd = -1;
    uint64_t slots = 0;           // the file's length in slots
    std::vector<uint64_t> free;   // slots below `slots` not in use
  };
  struct SpillSlot {
    uint64_t bytes = 0, slot = 0;
  };
  std::map<uint64_t, Slab> slabs_;  // record bytes -> slab
  std::unordered_map<Id, SpillSlot, IdHash> spills_;
  uint64_t spill_bytes_ = 0;  // bytes of the slots in use
  uint64_t cap_bytes_ = 0;  // the budget, or less while the disk is full
  uint64_t temp_counter_ = 0;
  State state_ = State::kOk;
  std::string state_reason_;
  double retry_at_ = 0;
  TierStats stats_;
};

}  // namespace slimkv::kv::tiers
