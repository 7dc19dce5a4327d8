// The lower tiers of one KV cache, in order (disk, then Redis): what the cache calls to
// spill a prefix block and to fetch one back (prefix_tiers.cc holds the cache's side).
//
// Reads are synchronous and go down the tiers in order; a hit in a later tier is copied
// into the earlier ones (a block another instance put in Redis lands on this one's disk).
// Writes are asynchronous: Store queues the encoded record and one writer thread puts it
// into every tier, so a slow disk or Redis never holds up a step. The queue is bounded in
// bytes; a record that does not fit is dropped (counted), which costs a later
// recomputation, never a wrong answer. The destructor writes what is queued, then stops.
//
// Prefetch: a reader thread reads the records of a chain of keys ahead of the Load calls
// that will want them (a request waiting for admission whose prefix a lower tier holds), so
// the step that admits it copies them from RAM instead of waiting on a disk or a network
// while every running sequence waits too. Read-ahead records are held in a bounded map until
// Load takes them or EndPrefetch drops them; they are checked by the cache like any record.
//
// Spill: recall (`:recall:host=N`, kv_recall.cc) keeps a sequence's evicted blocks past its
// host memory on the local tier (the disk; never Redis: no other instance could use them),
// through the same writer and reader threads. Its reads are asynchronous: the cache asks for
// the blocks a step predicts and takes those read at a later step, never waiting. A spilled
// record still queued for writing is read from the queue, so a block comes back however slow
// the disk; the cache erases a record once it has read it back or its sequence ends.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "kv/format.h"
#include "kv/spec.h"
#include "kv/tiers/tier.h"

namespace slimkv::kv::tiers {

struct TierStackOptions {
  uint64_t model_id = 0;                   // fingerprint.h
  size_t queue_bytes = size_t{256} << 20;     // records waiting for the writer, at most
  size_t prefetch_bytes = size_t{256} << 20;  // records read ahead and not taken yet, at most
  std::function<double()> clock;           // seconds; NowSeconds when empty (tests inject their own)
};

struct TierStackStats {
  int64_t loaded = 0;        // records returned to the cache
  int64_t stored = 0;        // records queued for writing
  int64_t dropped = 0;       // records not queued: the queue was full
  int64_t rejected = 0;      // records a tier returned that the cache refused (prefix_tiers.cc)
  int64_t loaded_bytes = 0;  // bytes of the loaded records
  double load_seconds = 0;   // time in Load calls that returned a record (misses on the way included)
  int64_t prefetches = 0;        // Prefetch calls that queued a chain
  int64_t prefetched = 0;        // records read ahead
  int64_t prefetch_hits = 0;     // Load calls answered from the records read ahead
  int64_t prefetch_unused = 0;   // records read ahead and dropped untaken (EndPrefetch, a full map)
  double prefetch_seconds = 0;   // time the reader spent reading them
  int64_t spilled = 0;           // spilled records queued for the local tier
  int64_t spill_reads = 0;       // spilled records read back (from the tier or the write queue)
};

// One chain of keys being read ahead (0: none).
using PrefetchId = uint64_t;

class TierStack {
 public:
  // `tiers` in the order they are read (fastest first); at least one.
  TierStack(const KvSpec& spec, const KvConfig& config, const TierStackOptions& options,
            std::vector<std::unique_ptr<BlockTier>> tiers);
  ~TierStack();
  TierStack(const TierStack&) = delete;
  TierStack& operator=(const TierStack&) = delete;

  // The fingerprint of this cache's blocks under a tenant salt (memoized).
  Fingerprint For(uint64_t salt);
  // The checked record of (fp, key) from the first tier that has one; *seconds (when given)
  // is the time the call took, hit or miss.
  std::optional<std::vector<uint8_t>> Load(const Fingerprint& fp, uint64_t key, double* seconds = nullptr);
  // Queues a record for every tier.
  void Store(const Fingerprint& fp, uint64_t key, std::vector<uint8_t> record);
  // Queues `keys` (a prefix chain, in order) for the reader thread, which stops at the first
  // key no tier holds (the chain ends there) or when the read-ahead map is full.
  PrefetchId Prefetch(const Fingerprint& fp, std::vector<uint64_t> keys);
  // Waits at most `seconds` (0: not at all) for the reader to finish with `id`; whether it has.
  bool WaitPrefetch(PrefetchId id, double seconds);
  // Stops reading `id` and drops the records of it that Load has not taken.
  void EndPrefetch(PrefetchId id);
  // Waits until every queued record is written (tests, benchmarks, shutdown).
  void Flush();
  void CountRejected();

  // Recall's spill. Whether there is a local tier to spill to.
  bool can_spill() const { return local_ != nullptr; }
  // Queues a spilled record for the local tier; false when that tier is not writable now or
  // the queue is full (the caller drops the block instead).
  bool Spill(const Fingerprint& fp, uint64_t key, std::vector<uint8_t> record);
  // Queues reads of spilled records: every key is tried (a missing one does not stop the
  // rest). WaitPrefetch(id, 0) says whether the reader is done with them, TakeRead takes one,
  // EndPrefetch drops those not taken.
  PrefetchId ReadSpilled(const Fingerprint& fp, std::vector<uint64_t> keys);
  // The record of `key` if the reader has read it; never reads or waits itself.
  std::optional<std::vector<uint8_t>> TakeRead(const Fingerprint& fp, uint64_t key);
  // Queues the removal of a spilled record (after any queued write of it).
  void Unspill(const Fingerprint& fp, uint64_t key);

  TierStackStats Stats() const;
  // (name, stats) of each tier.
  std::vector<std::pair<std::string, TierStats>> TierStatsList() const;

 private:
  struct Job {
    Fingerprint fp;
    uint64_t key = 0;
    std::vector<uint8_t> record;
    size_t end_tier = 0;  // written to tiers [0, end_tier): a fetched record goes to the tiers above
    bool spill = false;   // a spilled record: PutSpill on the local tier (Spill)
    bool erase = false;   // EraseSpill of (fp, key) on the local tier instead (Unspill)
  };
  struct PrefetchJob {
    PrefetchId id = 0;
    Fingerprint fp;
    std::vector<uint64_t> keys;
    bool spilled = false;  // spilled records: the local tier only, every key (ReadSpilled)
  };
  struct ReadAhead {
    Fingerprint fp;
    PrefetchId id = 0;
    std::vector<uint8_t> record;
    double seconds = 0;  // what reading it took
    bool spilled = false;  // a spilled record (ReadSpilled), not a prefix block
  };
  // Queues a write (or a spill's erase); false when the queue's bytes are full.
  bool Enqueue(Job job);
  // Queues a read for the reader thread: its id, 0 when stopping or there are no keys.
  PrefetchId QueueRead(PrefetchJob job);
  void WriterLoop();
  void ReaderLoop();
  // The checked record from the first tier that has one; a hit below the first tier is
  // queued for the tiers above.
  std::optional<std::vector<uint8_t>> ReadThrough(const Fingerprint& fp, uint64_t key);
  // A spilled record: from the write queue when it is still there (under mu_, which `lock`
  // holds), else from the local tier (without mu_).
  std::optional<std::vector<uint8_t>> ReadSpill(std::unique_lock<std::mutex>& lock, const Fingerprint& fp,
                                                uint64_t key);
  // Takes a record read ahead (under mu_); counts it as a prefetch hit or a spill read.
  std::optional<std::vector<uint8_t>> TakeAhead(const Fingerprint& fp, uint64_t key, double* seconds);
  double Now() const;

  KvSpec spec_;
  KvConfig config_;
  TierStackOptions options_;
  std::vector<std::unique_ptr<BlockTier>> tiers_;
  LocalTier* local_ = nullptr;  // tiers_[0] when it is local (the disk)
  mutable std::mutex mu_;
  std::condition_variable wake_, idle_;
  std::deque<Job> queue_;
  size_t queued_bytes_ = 0;
  bool writing_ = false;
  Job current_;  // the job the writer is writing (while writing_)
  bool stop_ = false;
  std::unordered_map<uint64_t, Fingerprint> fingerprints_;  // salt -> fingerprint
  TierStackStats stats_;
  std::deque<PrefetchJob> prefetch_queue_;
  std::unordered_set<PrefetchId> prefetch_pending_;  // queued or being read
  std::unordered_map<uint64_t, ReadAhead> ahead_;    // key -> a record read ahead
  size_t ahead_bytes_ = 0;
  PrefetchId next_prefetch_ = 1;
  std::condition_variable prefetch_wake_, prefetch_idle_;
  std::thread writer_, reader_;
};

}  // namespace slimkv::kv::tiers
