#include "kv/tiers/tier_stack.h"

#include <chrono>

#include "base/check.h"
#include "base/log.h"

namespace slimkv::kv::tiers {

TierStack::TierStack(const KvSpec& spec, const KvConfig& config, const TierStackOptions& options,
                     std::vector<std::unique_ptr<BlockTier>> tiers)
    : spec_(spec), config_(config), options_(options), tiers_(std::move(tiers)) {
  CHECK(!tiers_.empty(), "a tier stack without tiers");
  local_ = dynamic_cast<LocalTier*>(tiers_[0].get());
  writer_ = std::thread([this] { WriterLoop(); });
  reader_ = std::thread([this] { ReaderLoop(); });
}

TierStack::~TierStack() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  prefetch_wake_.notify_all();
  reader_.join();
  writer_.join();
}

Fingerprint TierStack::For(uint64_t salt) {
  std::lock_guard lock(mu_);
  auto it = fingerprints_.find(salt);
  if (it == fingerprints_.end()) {
    const FingerprintInputs in{
        .model_id = options_.model_id, .spec = &spec_, .config = &config_, .salt = salt};
    it = fingerprints_.emplace(salt, MakeFingerprint(in)).first;
  }
  return it->second;
}

double TierStack::Now() const { return options_.clock ? options_.clock() : NowSeconds(); }

std::optional<std::vector<uint8_t>> TierStack::ReadThrough(const Fingerprint& fp, uint64_t key) {
  for (size_t i = 0; i < tiers_.size(); ++i) {
    auto r = tiers_[i]->Get(fp, key);
    if (!r.ok()) continue;  // a miss, a dropped record or a tier that cannot answer: try the next
    if (i > 0) Enqueue(Job{.fp = fp, .key = key, .record = *r, .end_tier = i});
    return std::move(r).value();
  }
  return std::nullopt;
}

std::optional<std::vector<uint8_t>> TierStack::TakeAhead(const Fingerprint& fp, uint64_t key, double* seconds) {
  auto it = ahead_.find(key);
  if (it == ahead_.end() || !(it->second.fp == fp)) return std::nullopt;
  ReadAhead a = std::move(it->second);
  ahead_.erase(it);
  ahead_bytes_ -= a.record.size();
  // The time the read took, not the time this call took: the swap-cost rule weighs what a
  // fetch costs, whoever paid it.
  if (seconds) *seconds = a.seconds;
  if (a.spilled) {
    ++stats_.spill_reads;
  } else {
    ++stats_.loaded;
    ++stats_.prefetch_hits;
    stats_.loaded_bytes += static_cast<int64_t>(a.record.size());
  }
  return std::move(a.record);
}

std::optional<std::vector<uint8_t>> TierStack::Load(const Fingerprint& fp, uint64_t key, double* seconds) {
  {
    std::lock_guard lock(mu_);
    if (auto r = TakeAhead(fp, key, seconds)) return r;
  }
  const double t0 = Now();
  auto r = ReadThrough(fp, key);
  const double dt = Now() - t0;
  if (seconds) *seconds = dt;
  if (!r) return std::nullopt;
  std::lock_guard lock(mu_);
  ++stats_.loaded;
  stats_.loaded_bytes += static_cast<int64_t>(r->size());
  stats_.load_seconds += dt;
  return r;
}

PrefetchId TierStack::Prefetch(const Fingerprint& fp, std::vector<uint64_t> keys) {
  return QueueRead(PrefetchJob{.fp = fp, .keys = std::move(keys)});
}

PrefetchId TierStack::QueueRead(PrefetchJob job) {
  if (job.keys.empty()) return 0;
  PrefetchId id;
  {
    std::lock_guard lock(mu_);
    if (stop_) return 0;
    id = job.id = next_prefetch_++;
    if (!job.spilled) ++stats_.prefetches;
    prefetch_pending_.insert(id);
    prefetch_queue_.push_back(std::move(job));
  }
  prefetch_wake_.notify_one();
  return id;
}

bool TierStack::WaitPrefetch(PrefetchId id, double seconds) {
  std::unique_lock lock(mu_);
  return prefetch_idle_.wait_for(lock, std::chrono::duration<double>(seconds),
                                 [&] { return stop_ || !prefetch_pending_.count(id); });
}

void TierStack::EndPrefetch(PrefetchId id) {
  if (id == 0) return;
  std::lock_guard lock(mu_);
  prefetch_pending_.erase(id);  // the reader stops at its next key
  std::erase_if(prefetch_queue_, [&](const PrefetchJob& j) { return j.id == id; });
  for (auto it = ahead_.begin(); it != ahead_.end();) {
    if (it->second.id == id) {
      ahead_bytes_ -= it->second.record.size();
      ++stats_.prefetch_unused;
      it = ahead_.erase(it);
    } else {
      ++it;
    }
  }
}

void TierStack::ReaderLoop() {
  std::unique_lock lock(mu_);
  for (;;) {
    prefetch_wake_.wait(lock, [&] { return stop_ || !prefetch_queue_.empty(); });
    if (stop_) break;
    PrefetchJob job = std::move(prefetch_queue_.front());
    prefetch_queue_.pop_front();
    for (uint64_t key : job.keys) {
      if (stop_ || !prefetch_pending_.count(job.id)) break;  // ended by its owner
      if (ahead_.count(key)) continue;  // read ahead for another request with the same prefix
      const double t0 = Now();
      std::optional<std::vector<uint8_t>> r;
      if (job.spilled) {
        r = ReadSpill(lock, job.fp, key);
      } else {
        lock.unlock();
        r = ReadThrough(job.fp, key);
        lock.lock();
      }
      const double dt = Now() - t0;
      if (!r) {
        if (job.spilled) continue;  // gone (evicted from the tier, corrupt): the cache drops it
        break;                      // the chain ends here: the cache computes the rest
      }
      if (!job.spilled) stats_.prefetch_seconds += dt;
      if (!prefetch_pending_.count(job.id) || ahead_bytes_ + r->size() > options_.prefetch_bytes) {
        if (!job.spilled) ++stats_.prefetch_unused;
        break;
      }
      if (!job.spilled) ++stats_.prefetched;
      ahead_bytes_ += r->size();
      ahead_[key] =
          ReadAhead{.fp = job.fp, .id = job.id, .record = std::move(*r), .seconds = dt, .spilled = job.spilled};
    }
    prefetch_pending_.erase(job.id);
    prefetch_idle_.notify_all();  // WaitPrefetch(job.id)
  }
  prefetch_idle_.notify_all();
}

std::optional<std::vector<uint8_t>> TierStack::ReadSpill(std::unique_lock<std::mutex>& lock, const Fingerprint& fp,
                                                         uint64_t key) {
  // The newest queued job of the key decides: a write not done yet, or an erase.
  for (auto it = queue_.rbegin(); it != queue_.rend(); ++it) {
    if (!(it->spill || it->erase) || it->key != key || !(it->fp == fp)) continue;
    if (it->erase) return std::nullopt;
    return it->record;
  }
  if (writing_ && current_.spill && current_.key == key && current_.fp == fp) return current_.record;
  lock.unlock();
  auto r = local_->GetSpill(fp, key);
  lock.lock();
  if (!r.ok()) return std::nullopt;
  return std::move(r).value();
}

bool TierStack::Spill(const Fingerprint& fp, uint64_t key, std::vector<uint8_t> record) {
  if (!local_ || !local_->Writable()) return false;
  return Enqueue(Job{.fp = fp, .key = key, .record = std::move(record), .end_tier = 1, .spill = true});
}

PrefetchId TierStack::ReadSpilled(const Fingerprint& fp, std::vector<uint64_t> keys) {
  if (!local_) return 0;
  return QueueRead(PrefetchJob{.fp = fp, .keys = std::move(keys), .spilled = true});
}

std::optional<std::vector<uint8_t>> TierStack::TakeRead(const Fingerprint& fp, uint64_t key) {
  std::lock_guard lock(mu_);
  return TakeAhead(fp, key, nullptr);
}

void TierStack::Unspill(const Fingerprint& fp, uint64_t key) {
  if (local_) Enqueue(Job{.fp = fp, .key = key, .erase = true});
}

void TierStack::Store(const Fingerprint& fp, uint64_t key, std::vector<uint8_t> record) {
  Enqueue(Job{.fp = fp, .key = key, .record = std::move(record), .end_tier = tiers_.size()});
}

bool TierStack::Enqueue(Job job) {
  {
    std::lock_guard lock(mu_);
    if (queued_bytes_ + job.record.size() > options_.queue_bytes) {
      if (!job.spill) ++stats_.dropped;  // a refused spill is the caller's to count (it drops the block)
      return false;
    }
    if (job.spill) {
      ++stats_.spilled;
    } else if (!job.erase) {
      ++stats_.stored;
    }
    queued_bytes_ += job.record.size();
    queue_.push_back(std::move(job));
  }
  wake_.notify_one();
  return true;
}

void TierStack::WriterLoop() {
  std::unique_lock lock(mu_);
  for (;;) {
    wake_.wait(lock, [&] { return stop_ || !queue_.empty(); });
    if (queue_.empty()) break;  // stopping, and everything is written
    current_ = std::move(queue_.front());
    queue_.pop_front();
    writing_ = true;
    lock.unlock();
    // A tier that refuses says why in its own stats and log; the next tier still gets it.
    // current_ does not change until the lock is taken again (ReadSpill reads it under it).
    if (current_.erase) {
      local_->EraseSpill(current_.fp, current_.key);
    } else if (current_.spill) {
      local_->PutSpill(current_.fp, current_.key, current_.record).ok();
    } else {
      for (size_t i = 0; i < current_.end_tier; ++i) tiers_[i]->Put(current_.fp, current_.key, current_.record).ok();
    }
    lock.lock();
    writing_ = false;
    queued_bytes_ -= current_.record.size();
    current_ = Job{};
    if (queue_.empty()) idle_.notify_all();
  }
  idle_.notify_all();
}

void TierStack::Flush() {
  std::unique_lock lock(mu_);
  idle_.wait(lock, [&] { return queue_.empty() && !writing_; });
}

void TierStack::CountRejected() {
  std::lock_guard lock(mu_);
  ++stats_.rejected;
}

TierStackStats TierStack::Stats() const {
  std::lock_guard lock(mu_);
  return stats_;
}

std::vector<std::pair<std::string, TierStats>> TierStack::TierStatsList() const {
  std::vector<std::pair<std::string, TierStats>> out;
  for (const auto& t : tiers_) out.emplace_back(t->name(), t->Stats());
  return out;
}

}  // namespace slimkv::kv::tiers
