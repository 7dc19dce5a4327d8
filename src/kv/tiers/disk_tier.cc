#include "kv/tiers/disk_tier.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <set>
#include <tuple>

#include "base/check.h"
#include "base/log.h"
#include "kv/tiers/block_record.h"

namespace slimkv::kv::tiers {
namespace {

namespace fs = std::filesystem;

constexpr size_t kNameChars = 32 + 1 + 16 + 4;  // <fingerprint>-<key>.kvb

bool ParseHex(std::string_view s, uint64_t *out) {
  uint64_t v = 0;
  for (char c : s) {
    int d;
    if (c >= '0' && c <= '9')
      d = c - '0';
    else if (c >= 'a' && c <= 'f')
      d = c - 'a' + 10;
    else
      return false;
    v = v << 4 | static_cast<uint64_t>(d);
  }
  *out = v;
  return true;
}

// Reads a whole file; errno-style error code in *err (0 on success).
std::vector<uint8_t> ReadFile(const std::string &path, int *err) {
  std::vector<uint8_t> buf;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    *err = errno;
    return buf;
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    *err = errno;
    ::close(fd);
    return buf;
  }
  buf.resize(static_cast<size_t>(st.st_size));
  size_t done = 0;
  *err = 0;
  while (done < buf.size()) {
    const ssize_t n = ::read(fd, buf.data() + done, buf.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      *err = errno;
      break;
    }
    if (n == 0) break;  // shrank under us: the size check of the record catches it
    done += static_cast<size_t>(n);
  }
  buf.resize(done);
  ::close(fd);
  return buf;
}

// Writes `bytes` to a new file `path`; the errno of the first failure, or 0.
// Writes all of `bytes` at `offset`; 0 or the errno that stopped it.
int WriteAll(int fd, std::span<const uint8_t> bytes, uint64_t offset) {
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::pwrite(fd, bytes.data() + done, bytes.size() - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno;
    done += static_cast<size_t>(n);
  }
  return 0;
}

int WriteNewFile(const std::string &path, std::span<const uint8_t> bytes) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) return errno;
  int err = WriteAll(fd, bytes, 0);
  if (::close(fd) != 0 && err == 0) err = errno;
  return err;
}

std::string SlabPath(const std::string &dir, uint64_t record_bytes) {
  return fmt::format("{}/spill-{}.kvs", dir, record_bytes);
}

}  // namespace

DiskTier::DiskTier(const DiskTierOptions &options) : options_(options), cap_bytes_(options.budget_bytes) {}

DiskTier::~DiskTier() {
  for (auto &[bytes, slab] : slabs_) {
    ::close(slab.fd);
    ::unlink(SlabPath(options_.dir, bytes).c_str());
  }
  if (lock_fd_ >= 0) ::close(lock_fd_);  // releases the flock
}

double DiskTier::Now() const { return options_.clock ? options_.clock() : NowSeconds(); }

std::string DiskTier::FileName(const Id &id) const {
  return fmt::format("{}-{:016x}.kvb", id.fp.Hex(), id.key);
}

std::string DiskTier::PathOf(const Fingerprint &fp, uint64_t key) const {
  return options_.dir + "/" + FileName(Id{fp, key});
}

Result<std::unique_ptr<DiskTier>> DiskTier::Open(const DiskTierOptions &options) {
  if (options.dir.empty()) return InvalidArgument("--kv-disk: empty directory name");
  if (options.budget_bytes == 0) return InvalidArgument("--kv-disk-mem: the disk tier's budget is zero");
  std::error_code ec;
  fs::create_directories(options.dir, ec);
  if (!fs::is_directory(options.dir, ec)) {
    return IoError("--kv-disk {}: not a directory and cannot be made one{}", options.dir,
                   ec ? ": " + ec.message() : "");
  }
  std::unique_ptr<DiskTier> t(new DiskTier(options));
  const std::string lock_path = options.dir + "/LOCK";
  // The lock is held on a read-only descriptor: a file open for writing would
  // keep the directory's filesystem from being remounted read-only (EBUSY)
  // under a running server.
  if (const int fd = ::open(lock_path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644); fd >= 0) ::close(fd);
  t->lock_fd_ = ::open(lock_path.c_str(), O_RDONLY | O_CLOEXEC);
  if (t->lock_fd_ >= 0 && ::flock(t->lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    return IoError(
        "--kv-disk {}: another process uses this directory ({}); "
        "give each instance its own",
        options.dir, std::strerror(errno));
  }
  if (::access(options.dir.c_str(), W_OK) != 0) {
    std::lock_guard lock(t->mu_);
    t->Stop(State::kReadOnly, errno);
  }
  RETURN_IF_ERROR(t->Scan());
  return t;
}

Status DiskTier::Scan() {
  std::error_code ec;
  fs::directory_iterator it(options_.dir, ec);
  if (ec) return IoError("--kv-disk {}: cannot list: {}", options_.dir, ec.message());
  const bool writable = state_ != State::kReadOnly;
  std::vector<std::tuple<int64_t, Id, uint64_t>> found;  // (mtime ns, record, bytes)
  for (; it != fs::directory_iterator(); it.increment(ec)) {
    if (ec) return IoError("--kv-disk {}: cannot list: {}", options_.dir, ec.message());
    const std::string name = it->path().filename().string();
    const std::string path = it->path().string();
    if (name.rfind(".tmp-", 0) == 0 ||  // a write a crash interrupted
        (name.rfind("spill-", 0) == 0 && name.ends_with(".kvs"))) {  // a dead process's spilled records
      if (writable) ::unlink(path.c_str());
      continue;
    }
    Id id;
    if (name.size() != kNameChars || name[32] != '-' || name.substr(49) != ".kvb" ||
        !ParseHex(std::string_view(name).substr(0, 16), &id.fp.hi) ||
        !ParseHex(std::string_view(name).substr(16, 16), &id.fp.lo) ||
        !ParseHex(std::string_view(name).substr(33, 16), &id.key)) {
      continue;  // not ours: left alone
    }
    struct stat st;
    uint8_t head[kRecordHeaderBytes];
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    bool ok = false;
    if (fd >= 0) {
      if (::fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
        const ssize_t n = ::pread(fd, head, sizeof(head), 0);
        const auto h = ParseRecordHeader(std::span<const uint8_t>(head, n > 0 ? n : 0), st.st_size);
        ok = h.ok() && h->fingerprint == id.fp && h->key == id.key;
      }
      ::close(fd);
    }
    if (!ok) {  // truncated, foreign or renamed: never used, and deleted
      ++stats_.corrupt;
      if (writable) ::unlink(path.c_str());
      continue;
    }
    found.emplace_back(static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec, id,
                       static_cast<uint64_t>(st.st_size));
  }
  std::sort(found.begin(), found.end(),
            [](const auto &a, const auto &b) { return std::get<0>(a) < std::get<0>(b); });
  std::lock_guard lock(mu_);
  for (const auto &[mtime, id, bytes] : found) {
    const uint64_t tick = ++use_clock_;
    index_[id] = Entry{.bytes = bytes, .last_use = tick};
    order_[tick] = id;
    bytes_held_ += bytes;
  }
  // The budget may be smaller than last time.
  if (writable) EvictFor(0);
  return Status::Ok();
}

bool DiskTier::Contains(const Fingerprint &fp, uint64_t key) const {
  std::lock_guard lock(mu_);
  return index_.count(Id{fp, key}) > 0;
}

void DiskTier::Touch(const Id &id, bool touch_file) {
  auto it = index_.find(id);
  if (it == index_.end()) return;
  order_.erase(it->second.last_use);
  it->second.last_use = ++use_clock_;
  order_[it->second.last_use] = id;
  // The order of last use survives a restart through the files' times (best
  // effort: a read-only directory keeps the old times).
  if (touch_file) ::utimensat(AT_FDCWD, (options_.dir + "/" + FileName(id)).c_str(), nullptr, 0);
}

bool DiskTier::Writable() const {
  std::lock_guard lock(mu_);
  return !(state_ == State::kReadOnly || state_ == State::kFailing) || Now() >= retry_at_;
}

bool DiskTier::Resume() {
  if (state_ != State::kOk && Now() >= retry_at_) {  // try growing again
    state_ = State::kOk;
    cap_bytes_ = options_.budget_bytes;
  }
  if (state_ == State::kReadOnly || state_ == State::kFailing) {
    ++stats_.fast_failures;
    ++stats_.put_failures;
    return false;
  }
  return true;
}

void DiskTier::Fail(int err) {
  ++stats_.put_failures;
  const bool full = err == ENOSPC || err == EDQUOT;
  const bool read_only = err == EROFS || err == EACCES || err == EPERM;
  Stop(full ? State::kFull : read_only ? State::kReadOnly : State::kFailing, err);
}

Status DiskTier::PutSpill(const Fingerprint &fp, uint64_t key, std::span<const uint8_t> record) {
  const Id id{fp, key};
  const uint64_t size = record.size();
  std::lock_guard lock(mu_);
  FreeSpill(id);  // a key spilled again replaces its record
  if (!Resume()) return ResourceExhausted("KV disk tier {} is {}", options_.dir, state_reason_);
  if (!EvictFor(size)) {
    ++stats_.put_failures;
    return ResourceExhausted("KV disk tier {}: a spilled record of {} bytes does not fit in {} bytes",
                             options_.dir, size, cap_bytes_);
  }
  Slab &slab = slabs_[size];
  if (slab.fd < 0) {
    slab.fd = ::open(SlabPath(options_.dir, size).c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (slab.fd < 0) {
      const int err = errno;
      slabs_.erase(size);
      Fail(err);
      return IoError("KV disk tier: cannot create {}: {}", SlabPath(options_.dir, size), std::strerror(err));
    }
  }
  uint64_t slot = slab.slots;
  if (!slab.free.empty()) {
    slot = slab.free.back();
    slab.free.pop_back();
  } else {
    ++slab.slots;
  }
  const double t0 = Now();
  if (const int err = WriteAll(slab.fd, record, slot * size); err != 0) {
    slab.free.push_back(slot);
    Fail(err);
    return IoError("KV disk tier: cannot write {}: {}", SlabPath(options_.dir, size), std::strerror(err));
  }
  stats_.bytes_written += static_cast<int64_t>(size);
  stats_.write_seconds += Now() - t0;
  spills_[id] = SpillSlot{.bytes = size, .slot = slot};
  spill_bytes_ += size;
  return Status::Ok();
}

Result<std::vector<uint8_t>> DiskTier::GetSpill(const Fingerprint &fp, uint64_t key) {
  const Id id{fp, key};
  std::lock_guard lock(mu_);
  auto it = spills_.find(id);
  if (it == spills_.end()) return NotFound("KV disk tier: no spilled record {:016x}", key);
  const SpillSlot s = it->second;
  std::vector<uint8_t> bytes(s.bytes);
  const double t0 = Now();
  const ssize_t n = ::pread(slabs_[s.bytes].fd, bytes.data(), s.bytes, static_cast<off_t>(s.slot * s.bytes));
  if (n != static_cast<ssize_t>(s.bytes)) {
    FreeSpill(id);
    return IoError("KV disk tier: cannot read spilled record {:016x}: {}", key,
                   n < 0 ? std::strerror(errno) : "short read");
  }
  if (auto view = ParseRecord(bytes, fp, key); !view.ok()) {
    ++stats_.corrupt;
    FreeSpill(id);
    return view.status();
  }
  stats_.bytes_read += static_cast<int64_t>(s.bytes);
  stats_.read_seconds += Now() - t0;
  return bytes;
}

void DiskTier::EraseSpill(const Fingerprint &fp, uint64_t key) {
  std::lock_guard lock(mu_);
  FreeSpill(Id{fp, key});
}

void DiskTier::FreeSpill(const Id &id) {
  auto it = spills_.find(id);
  if (it == spills_.end()) return;
  slabs_[it->second.bytes].free.push_back(it->second.slot);
  spill_bytes_ -= it->second.bytes;
  spills_.erase(it);
}

int64_t DiskTier::spilled_records() const {
  std::lock_guard lock(mu_);
  return static_cast<int64_t>(spills_.size());
}

void DiskTier::Drop(const Id &id, bool unlink_file) {
  auto it = index_.find(id);
  if (it == index_.end()) return;
  order_.erase(it->second.last_use);
  bytes_held_ -= it->second.bytes;
  index_.erase(it);
  if (unlink_file) ::unlink((options_.dir + "/" + FileName(id)).c_str());
}

bool DiskTier::EvictFor(uint64_t bytes) {
  if (bytes > cap_bytes_) return false;
  while (bytes_held_ + spill_bytes_ + bytes > cap_bytes_ && !order_.empty()) {
    const Id victim = order_.begin()->second;  // a copy: Drop erases the entry it refers to
    Drop(victim, true);
    ++stats_.evicted;
  }
  return bytes_held_ + spill_bytes_ + bytes <= cap_bytes_;
}

void DiskTier::Stop(State state, int err) {
  const char *what = state == State::kFull ? "full" : state == State::kReadOnly ? "read-only" : "failing";
  const std::string reason = fmt::format("{} ({})", what, std::strerror(err));
  if (state_ != state) {
    spdlog::warn(
        "KV disk tier {}: {}; it stops growing and retries in {:.0f} "
        "s, serving goes on",
        options_.dir, reason, options_.retry_seconds);
  }
  state_ = state;
  state_reason_ = reason;
  retry_at_ = Now() + options_.retry_seconds;
  if (state == State::kFull) cap_bytes_ = std::min(cap_bytes_, bytes_held_ + spill_bytes_);
}

Result<std::vector<uint8_t>> DiskTier::Get(const Fingerprint &fp, uint64_t key) {
  const Id id{fp, key};
  std::string path;
  {
    std::lock_guard lock(mu_);
    ++stats_.gets;
    if (!index_.count(id)) return NotFound("KV disk tier: no record {:016x}", key);
    path = options_.dir + "/" + FileName(id);
  }
  const double t0 = Now();
  int err = 0;
  std::vector<uint8_t> bytes = ReadFile(path, &err);
  const double t1 = Now();
  std::lock_guard lock(mu_);
  if (err != 0) {
    // Gone (deleted by hand, or evicted by a concurrent write) or unreadable: a
    // miss.
    Drop(id, err != ENOENT && state_ != State::kReadOnly);
    return err == ENOENT ? NotFound("KV disk tier: {} vanished", path)
                         : IoError("KV disk tier: cannot read {}: {}", path, std::strerror(err));
  }
  auto view = ParseRecord(bytes, fp, key);
  if (!view.ok()) {
    ++stats_.corrupt;
    spdlog::warn("KV disk tier: dropping {}: {}", path, view.status().message());
    Drop(id, true);
    return view.status();
  }
  ++stats_.hits;
  stats_.bytes_read += static_cast<int64_t>(bytes.size());
  stats_.read_seconds += t1 - t0;
  Touch(id, state_ != State::kReadOnly);
  return bytes;
}

Status DiskTier::Put(const Fingerprint &fp, uint64_t key, std::span<const uint8_t> record) {
  const Id id{fp, key};
  const uint64_t size = record.size();
  std::string tmp;
  {
    std::lock_guard lock(mu_);
    ++stats_.puts;
    if (auto it = index_.find(id); it != index_.end()) {
      // The same record again (a copy from Redis, a republished block): keep the file. A
      // record of another size replaces it (the cache sealed a block published staged).
      if (it->second.bytes == size) {
        Touch(id, state_ != State::kReadOnly);
        return Status::Ok();
      }
      Drop(id, /*unlink_file=*/false);  // the write below renames over the file
    }
    if (!Resume()) return ResourceExhausted("KV disk tier {} is {}", options_.dir, state_reason_);
    if (!EvictFor(size)) {
      ++stats_.put_failures;
      return ResourceExhausted("KV disk tier {}: a record of {} bytes does not fit in {} bytes{}",
                               options_.dir, size, cap_bytes_,
                               state_ == State::kFull ? " (the disk is full)" : "");
    }
    bytes_held_ += size;  // reserved while the file is written
    tmp = fmt::format("{}/.tmp-{}-{}.kvb", options_.dir, ::getpid(), ++temp_counter_);
  }
  const double t0 = Now();
  int err = WriteNewFile(tmp, record);
  const std::string path = PathOf(fp, key);
  if (err == 0 && ::rename(tmp.c_str(), path.c_str()) != 0) err = errno;
  const double t1 = Now();
  if (err != 0) ::unlink(tmp.c_str());
  std::lock_guard lock(mu_);
  bytes_held_ -= size;
  if (err != 0) {
    Fail(err);
    return IoError("KV disk tier: cannot write {}: {}", path, std::strerror(err));
  }
  stats_.bytes_written += static_cast<int64_t>(size);
  stats_.write_seconds += t1 - t0;
  auto [it, added] = index_.try_emplace(id, Entry{.bytes = size, .last_use = ++use_clock_});
  if (added) {
    order_[it->second.last_use] = id;
    bytes_held_ += size;
    EvictFor(0);  // a concurrent put may have taken the room this one reserved
  }
  return Status::Ok();
}

TierStats DiskTier::Stats() const {
  std::lock_guard lock(mu_);
  TierStats s = stats_;
  s.entries = static_cast<int64_t>(index_.size());
  s.bytes_held = static_cast<int64_t>(bytes_held_ + spill_bytes_);
  s.state = state_ == State::kOk ? "ok" : state_reason_;
  s.condition = state_ == State::kOk         ? "ok"
                : state_ == State::kFull     ? "full"
                : state_ == State::kReadOnly ? "read_only"
                                             : "failing";
  return s;
}

void DiskTier::CheckInvariants() const {
  std::lock_guard lock(mu_);
  CHECK(order_.size() == index_.size(), "disk tier: order holds {} records, index {}", order_.size(),
        index_.size());
  uint64_t sum = 0;
  for (const auto &[id, e] : index_) {
    sum += e.bytes;
    auto o = order_.find(e.last_use);
    CHECK(o != order_.end() && o->second == id, "disk tier: record {:016x} missing from the order", id.key);
  }
  CHECK(sum == bytes_held_, "disk tier: index holds {} bytes, the counter says {}", sum, bytes_held_);
  CHECK(state_ == State::kFull || bytes_held_ + spill_bytes_ <= cap_bytes_,
        "disk tier: {} bytes held ({} spilled) over the cap {}", bytes_held_ + spill_bytes_, spill_bytes_, cap_bytes_);
  uint64_t spilled = 0;
  std::map<uint64_t, std::set<uint64_t>> used;  // record bytes -> slots in use
  for (const auto &[id, s] : spills_) {
    spilled += s.bytes;
    auto slab = slabs_.find(s.bytes);
    CHECK(slab != slabs_.end() && s.slot < slab->second.slots, "disk tier: spilled record {:016x} outside its slab",
          id.key);
    CHECK(used[s.bytes].insert(s.slot).second, "disk tier: two spilled records in slot {}", s.slot);
  }
  CHECK(spilled == spill_bytes_, "disk tier: spilled records hold {} bytes, the counter says {}", spilled,
        spill_bytes_);
  for (const auto &[bytes, slab] : slabs_) {
    for (uint64_t f : slab.free)
      CHECK(f < slab.slots && used[bytes].insert(f).second, "disk tier: free slot {} in use or listed twice", f);
    CHECK(used[bytes].size() == slab.slots, "disk tier: {} of {} slots accounted for", used[bytes].size(),
          slab.slots);
  }
}

}  // namespace slimkv::kv::tiers
