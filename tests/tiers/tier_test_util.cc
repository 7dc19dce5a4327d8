#include "tier_test_util.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>

namespace slimkv::kv::tiers::testing {

std::vector<uint8_t> MakeRecord(const Fingerprint &fp, uint64_t key, uint64_t parent, uint64_t seed,
                                int n_tokens, int n_streams, uint32_t staged_bytes, uint32_t sealed_bytes) {
  std::mt19937_64 rng(seed);
  std::vector<int32_t> tokens(n_tokens);
  for (auto &t : tokens) t = static_cast<int32_t>(rng() % 50000);
  std::vector<StreamKind> kinds(n_streams);
  std::vector<std::vector<uint8_t>> data(n_streams);
  std::vector<const uint8_t *> blocks(n_streams, nullptr);
  for (int st = 0; st < n_streams; ++st) {
    kinds[st] = st % 7 == 6 ? StreamKind::kAbsent : st % 3 == 0 ? StreamKind::kSealed : StreamKind::kStaged;
    if (kinds[st] == StreamKind::kAbsent) continue;
    data[st].resize(kinds[st] == StreamKind::kSealed ? sealed_bytes : staged_bytes);
    for (auto &b : data[st]) b = static_cast<uint8_t>(rng());
    blocks[st] = data[st].data();
  }
  RecordSource src;
  src.header = RecordHeader{.fingerprint = fp,
                            .key = key,
                            .parent = parent,
                            .n_tokens = static_cast<uint32_t>(n_tokens),
                            .n_streams = static_cast<uint32_t>(n_streams),
                            .staged_bytes = staged_bytes,
                            .sealed_bytes = sealed_bytes};
  src.tokens = tokens;
  src.kinds = kinds;
  src.blocks = blocks;
  return EncodeRecord(src);
}

Result<std::vector<uint8_t>> GatedTier::GateGet(const Records &records, const Fingerprint &fp, uint64_t key) {
  std::unique_lock lock(mu_);
  ++gets_;
  ++blocked_;
  open_.wait(lock, [&] { return !closed_; });
  --blocked_;
  auto it = records.find({fp.Hex(), key});
  if (it == records.end()) return NotFound("no record {}", key);
  return it->second;
}

Status GatedTier::GatePut(Records &records, const Fingerprint &fp, uint64_t key, std::span<const uint8_t> record) {
  std::unique_lock lock(mu_);
  ++puts_blocked_;
  open_.wait(lock, [&] { return !puts_closed_; });
  --puts_blocked_;
  records[{fp.Hex(), key}].assign(record.begin(), record.end());
  return Status::Ok();
}

Result<std::vector<uint8_t>> GatedTier::Get(const Fingerprint &fp, uint64_t key) { return GateGet(records_, fp, key); }

Status GatedTier::Put(const Fingerprint &fp, uint64_t key, std::span<const uint8_t> record) {
  return GatePut(records_, fp, key, record);
}

Result<std::vector<uint8_t>> GatedTier::GetSpill(const Fingerprint &fp, uint64_t key) {
  return GateGet(spills_, fp, key);
}

Status GatedTier::PutSpill(const Fingerprint &fp, uint64_t key, std::span<const uint8_t> record) {
  return GatePut(spills_, fp, key, record);
}

void GatedTier::EraseSpill(const Fingerprint &fp, uint64_t key) {
  std::lock_guard lock(mu_);
  spills_.erase({fp.Hex(), key});
}

bool GatedTier::Writable() const {
  std::lock_guard lock(mu_);
  return writable_;
}

void GatedTier::ClosePuts() {
  std::lock_guard lock(mu_);
  puts_closed_ = true;
}

void GatedTier::OpenPuts() {
  {
    std::lock_guard lock(mu_);
    puts_closed_ = false;
  }
  open_.notify_all();
}

void GatedTier::SetWritable(bool writable) {
  std::lock_guard lock(mu_);
  writable_ = writable;
}

int GatedTier::puts_blocked() const {
  std::lock_guard lock(mu_);
  return puts_blocked_;
}

bool GatedTier::HasSpill(const Fingerprint &fp, uint64_t key) const {
  std::lock_guard lock(mu_);
  return spills_.count({fp.Hex(), key}) > 0;
}

TierStats GatedTier::Stats() const {
  std::lock_guard lock(mu_);
  TierStats s;
  s.gets = gets_;
  s.entries = static_cast<int64_t>(records_.size());
  return s;
}

void GatedTier::Close() {
  std::lock_guard lock(mu_);
  closed_ = true;
}

void GatedTier::Open() {
  {
    std::lock_guard lock(mu_);
    closed_ = false;
  }
  open_.notify_all();
}

int GatedTier::gets() const {
  std::lock_guard lock(mu_);
  return gets_;
}

int GatedTier::blocked() const {
  std::lock_guard lock(mu_);
  return blocked_;
}

size_t GatedTier::size() const {
  std::lock_guard lock(mu_);
  return records_.size();
}

ScratchDir::ScratchDir() {
  const char *tmp = std::getenv("TMPDIR");
  std::string templ = std::string(tmp && *tmp ? tmp : "/tmp") + "/slimkv_tiers_XXXXXX";
  if (::mkdtemp(templ.data()) == nullptr) std::abort();
  path_ = templ;
}

ScratchDir::~ScratchDir() {
  std::error_code ec;
  std::filesystem::permissions(path_, std::filesystem::perms::owner_all, std::filesystem::perm_options::add,
                               ec);
  std::filesystem::remove_all(path_, ec);
}

namespace {

bool WriteProc(const char *path, const std::string &text) {
  const int fd = ::open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return false;
  const bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  ::close(fd);
  return ok;
}

std::string EnterMountNamespace() {
  const uid_t uid = ::geteuid();
  const gid_t gid = ::getegid();
  if (uid == 0 && ::unshare(CLONE_NEWNS) == 0) return "";
  if (::unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0) {
    return fmt::format("cannot make a private mount namespace: {}", std::strerror(errno));
  }
  WriteProc("/proc/self/setgroups", "deny");
  if (!WriteProc("/proc/self/uid_map", fmt::format("0 {} 1", uid)) ||
      !WriteProc("/proc/self/gid_map", fmt::format("0 {} 1", gid))) {
    return "cannot map the user into its namespace";
  }
  return "";
}

}  // namespace

bool RemountReadOnly(const std::string &dir) {
  return ::mount(nullptr, dir.c_str(), nullptr, MS_REMOUNT | MS_RDONLY, nullptr) == 0;
}

std::string InTmpfs(const std::string &dir, size_t bytes, const std::function<std::string()> &body) {
  int fds[2];
  if (::pipe(fds) != 0) return "pipe failed";
  const pid_t pid = ::fork();
  if (pid < 0) return "fork failed";
  if (pid == 0) {
    ::close(fds[0]);
    std::string r = EnterMountNamespace();
    if (r.empty() && ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
      r = fmt::format("cannot make / private: {}", std::strerror(errno));
    }
    if (r.empty() && ::mount("tmpfs", dir.c_str(), "tmpfs", 0, fmt::format("size={}", bytes).c_str()) != 0) {
      r = fmt::format("cannot mount a tmpfs on {}: {}", dir, std::strerror(errno));
    }
    if (r.empty()) r = body();
    if (r.empty()) r = "ok";
    [[maybe_unused]] ssize_t n = ::write(fds[1], r.data(), r.size());
    ::_exit(0);
  }
  ::close(fds[1]);
  std::string out;
  char buf[512];
  ssize_t n;
  while ((n = ::read(fds[0], buf, sizeof(buf))) > 0) out.append(buf, n);
  ::close(fds[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (!WIFEXITED(status)) return fmt::format("the child died (status {}) after: {}", status, out);
  return out == "ok" ? "" : out;
}

}  // namespace slimkv::kv::tiers::testing
