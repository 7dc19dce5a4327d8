#include "kv/tiers/tier_stack.h"

#include "base/check.h"
#include "base/log.h"

namespace slimkv::kv::tiers {

TierStack::TierStack(const KvSpec& spec, const KvConfig& config, const TierStackOptions& options,
                     std::vector<std::unique_ptr<BlockTier>> tiers)
    : spec_(spec), config_(config), options_(options), tiers_(std::move(tiers)) {
  CHECK(!tiers_.empty(), "a tier stack without tiers");
  writer_ = std::thread([this] { WriterLoop(); });
}

TierStack::~TierStack() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  wake_.notify_all();
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

std::optional<std::vector<uint8_t>> TierStack::Load(const Fingerprint& fp, uint64_t key, double* seconds) {
  const double t0 = Now();
  for (size_t i = 0; i < tiers_.size(); ++i) {
    auto r = tiers_[i]->Get(fp, key);
    if (!r.ok()) continue;  // a miss, a dropped record or a tier that cannot answer: try the next
    if (i > 0) Enqueue(Job{.fp = fp, .key = key, .record = *r, .end_tier = i});
    const double dt = Now() - t0;
    if (seconds) *seconds = dt;
    std::lock_guard lock(mu_);
    ++stats_.loaded;
    stats_.loaded_bytes += static_cast<int64_t>(r->size());
    stats_.load_seconds += dt;
    return std::move(r).value();
  }
  if (seconds) *seconds = Now() - t0;
  return std::nullopt;
}

void TierStack::Store(const Fingerprint& fp, uint64_t key, std::vector<uint8_t> record) {
  Enqueue(Job{.fp = fp, .key = key, .record = std::move(record), .end_tier = tiers_.size()});
}

void TierStack::Enqueue(Job job) {
  {
    std::lock_guard lock(mu_);
    if (queued_bytes_ + job.record.size() > options_.queue_bytes) {
      ++stats_.dropped;
      return;
    }
    ++stats_.stored;
    queued_bytes_ += job.record.size();
    queue_.push_back(std::move(job));
  }
  wake_.notify_one();
}

void TierStack::WriterLoop() {
  std::unique_lock lock(mu_);
  for (;;) {
    wake_.wait(lock, [&] { return stop_ || !queue_.empty(); });
    if (queue_.empty()) break;  // stopping, and everything is written
    Job job = std::move(queue_.front());
    queue_.pop_front();
    writing_ = true;
    lock.unlock();
    // A tier that refuses says why in its own stats and log; the next tier still gets it.
    for (size_t i = 0; i < job.end_tier; ++i) tiers_[i]->Put(job.fp, job.key, job.record).ok();
    lock.lock();
    writing_ = false;
    queued_bytes_ -= job.record.size();
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
