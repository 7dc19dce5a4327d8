// The disk tier: a bounded directory whose index survives restarts, evicts
// least recently used first, writes atomically, drops corrupt/truncated/foreign
// files, and stops growing (without failing anyone) on a full or read-only
// disk.
#include "kv/tiers/disk_tier.h"

#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "tier_test_util.h"

namespace slimkv::kv::tiers {
namespace {

namespace fs = std::filesystem;
using testing::FakeClock;
using testing::MakeRecord;
using testing::ScratchDir;

const Fingerprint kFp{.lo = 0xabc, .hi = 0xdef};
const Fingerprint kOtherFp{.lo = 0xabc, .hi = 0xdee};

std::unique_ptr<DiskTier> OpenTier(const std::string &dir, uint64_t budget, FakeClock *clock = nullptr) {
  DiskTierOptions o{.dir = dir, .budget_bytes = budget};
  if (clock) o.clock = clock->fn();
  auto t = DiskTier::Open(o);
  EXPECT_TRUE(t.ok()) << t.status().ToString();
  return t.ok() ? std::move(*t) : nullptr;
}

int CountFiles(const std::string &dir, const std::string &suffix) {
  int n = 0;
  for (const auto &e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    n +=
        name.size() >= suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
  }
  return n;
}

// A block published while staged and again once sealed has a record of another size: the
// second replaces the first (the cache re-spills it); the same record again keeps the file.
TEST(DiskTierTest, ARecordOfAnotherSizeReplacesTheStoredOne) {
  ScratchDir dir;
  auto t = OpenTier(dir.path(), 1 << 20);
  const auto staged = MakeRecord(kFp, 1, 0, 11, 16, 5, 128, 64);
  const auto sealed = MakeRecord(kFp, 1, 0, 12, 16, 5, 64, 32);
  ASSERT_NE(staged.size(), sealed.size());
  ASSERT_TRUE(t->Put(kFp, 1, staged).ok());
  ASSERT_TRUE(t->Put(kFp, 1, sealed).ok());
  t->CheckInvariants();
  auto got = t->Get(kFp, 1);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(*got, sealed);
  EXPECT_EQ(t->Stats().entries, 1);
  EXPECT_EQ(t->Stats().bytes_held, static_cast<int64_t>(sealed.size()));
}

TEST(DiskTierTest, PutGetAndNamespaces) {
  ScratchDir dir;
  auto t = OpenTier(dir.path(), 1 << 20);
  const auto rec = MakeRecord(kFp, 1, 0, 11);
  ASSERT_TRUE(t->Put(kFp, 1, rec).ok());
  t->CheckInvariants();
  auto got = t->Get(kFp, 1);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(*got, rec);
  EXPECT_EQ(t->Get(kFp, 2).status().code(), StatusCode::kNotFound);
  // Another fingerprint (model, format or tenant) never sees the record.
  EXPECT_EQ(t->Get(kOtherFp, 1).status().code(), StatusCode::kNotFound);
  const TierStats s = t->Stats();
  EXPECT_EQ(s.entries, 1);
  EXPECT_EQ(s.bytes_held, static_cast<int64_t>(rec.size()));
  EXPECT_EQ(s.hits, 1);
  EXPECT_EQ(s.gets, 3);
  EXPECT_EQ(CountFiles(dir.path(), ".kvb"), 1);  // no temporary file is left
}

// Spilled records (recall's, LocalTier): slots of a slab file per record size, reused once
// freed; never found by Get nor counted as entries; a corrupt slot is a miss and freed; they
// count against the budget (a prefix record leaves to make room); the slab files go with the
// tier, and a dead process's are removed at Open.
TEST(DiskTierTest, SpilledRecordsLiveInSlotsApartFromThePrefixRecords) {
  ScratchDir dir;
  const auto a = MakeRecord(kFp, 1, 0, 11), b = MakeRecord(kFp, 2, 0, 12), c = MakeRecord(kFp, 3, 0, 13);
  const auto prefix = MakeRecord(kFp, 9, 0, 19);
  {
    auto t = OpenTier(dir.path(), 3 * a.size() + a.size() / 2);
    ASSERT_TRUE(t->Put(kFp, 9, prefix).ok());
    ASSERT_TRUE(t->PutSpill(kFp, 1, a).ok());
    ASSERT_TRUE(t->PutSpill(kFp, 2, b).ok());
    t->CheckInvariants();
    EXPECT_EQ(t->Get(kFp, 1).status().code(), StatusCode::kNotFound);  // not a prefix record
    EXPECT_EQ(t->GetSpill(kFp, 9).status().code(), StatusCode::kNotFound);
    EXPECT_EQ(t->Stats().entries, 1);
    EXPECT_EQ(t->spilled_records(), 2);
    EXPECT_EQ(CountFiles(dir.path(), ".kvs"), 1);  // one slab for the one record size
    EXPECT_EQ(CountFiles(dir.path(), ".kvb"), 1);
    // Budget: a third spilled record needs the prefix record's room.
    ASSERT_TRUE(t->PutSpill(kFp, 3, c).ok());
    EXPECT_FALSE(t->Contains(kFp, 9));
    EXPECT_EQ(t->Stats().bytes_held, static_cast<int64_t>(3 * a.size()));
    EXPECT_FALSE(t->PutSpill(kFp, 4, MakeRecord(kFp, 4, 0, 14)).ok());  // nothing left to evict
    auto got = t->GetSpill(kFp, 2);
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    EXPECT_EQ(*got, b);
    // A freed slot is reused: the slab does not grow.
    const auto slab = dir.path() + "/spill-" + std::to_string(a.size()) + ".kvs";
    const auto length = fs::file_size(slab);
    t->EraseSpill(kFp, 1);
    t->EraseSpill(kFp, 7);  // not there: nothing
    ASSERT_TRUE(t->PutSpill(kFp, 5, MakeRecord(kFp, 5, 0, 15)).ok());
    EXPECT_EQ(fs::file_size(slab), length);
    t->CheckInvariants();
    // A corrupt slot: a miss, dropped, never returned.
    {
      std::fstream f(slab, std::ios::in | std::ios::out | std::ios::binary);
      f.seekp(static_cast<std::streamoff>(a.size() + 100));  // the second slot: key 2's record
      f.write("garbage!", 8);
    }
    EXPECT_EQ(t->GetSpill(kFp, 2).status().code(), StatusCode::kDataLoss);
    EXPECT_EQ(t->GetSpill(kFp, 2).status().code(), StatusCode::kNotFound);
    EXPECT_EQ(t->spilled_records(), 2);
    t->CheckInvariants();
  }
  EXPECT_EQ(CountFiles(dir.path(), ".kvs"), 0);  // gone with the tier
  // A slab a dead process left behind is removed at Open.
  { std::ofstream(dir.path() + "/spill-1234.kvs") << "stale"; }
  auto t = OpenTier(dir.path(), 1 << 20);
  EXPECT_EQ(CountFiles(dir.path(), ".kvs"), 0);
  EXPECT_TRUE(t->Writable());
}

TEST(DiskTierTest, EvictsLeastRecentlyUsedWithinTheBudget) {
  ScratchDir dir;
  const size_t rec_bytes = MakeRecord(kFp, 0, 0, 0).size();
  auto t = OpenTier(dir.path(), 3 * rec_bytes + rec_bytes / 2);  // room for 3
  for (uint64_t k = 1; k <= 3; ++k) ASSERT_TRUE(t->Put(kFp, k, MakeRecord(kFp, k, 0, k)).ok());
  ASSERT_TRUE(t->Get(kFp, 1).ok());  // 2 is now the oldest
  ASSERT_TRUE(t->Put(kFp, 4, MakeRecord(kFp, 4, 0, 4)).ok());
  t->CheckInvariants();
  EXPECT_TRUE(t->Contains(kFp, 1));
  EXPECT_FALSE(t->Contains(kFp, 2));
  EXPECT_TRUE(t->Contains(kFp, 3));
  EXPECT_TRUE(t->Contains(kFp, 4));
  EXPECT_FALSE(fs::exists(t->PathOf(kFp, 2)));
  EXPECT_EQ(t->Stats().evicted, 1);
  EXPECT_LE(t->Stats().bytes_held, static_cast<int64_t>(3 * rec_bytes + rec_bytes / 2));
  // A record larger than the whole budget is refused, the others stay.
  auto big = MakeRecord(kFp, 9, 0, 9, 16, 5, 4096, 4096);
  EXPECT_FALSE(t->Put(kFp, 9, big).ok());
  EXPECT_EQ(t->Stats().entries, 3);
}

TEST(DiskTierTest, TheIndexAndItsOrderSurviveARestart) {
  ScratchDir dir;
  const size_t rec_bytes = MakeRecord(kFp, 0, 0, 0).size();
  const uint64_t budget = 3 * rec_bytes;
  {
    auto t = OpenTier(dir.path(), budget);
    for (uint64_t k = 1; k <= 3; ++k) {
      ASSERT_TRUE(t->Put(kFp, k, MakeRecord(kFp, k, 0, k)).ok());
      usleep(20000);  // distinct modification times
    }
    ASSERT_TRUE(t->Get(kFp, 1).ok());  // refreshes 1's time: 2 is the oldest
  }
  auto t = OpenTier(dir.path(), budget);
  t->CheckInvariants();
  EXPECT_EQ(t->Stats().entries, 3);
  auto got = t->Get(kFp, 3);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(*got, MakeRecord(kFp, 3, 0, 3));
  ASSERT_TRUE(t->Put(kFp, 4, MakeRecord(kFp, 4, 0, 4)).ok());
  EXPECT_FALSE(t->Contains(kFp, 2));
  EXPECT_TRUE(t->Contains(kFp, 1));
  // Reopened with a smaller budget, it evicts down to it at once.
  t.reset();
  t = OpenTier(dir.path(), rec_bytes);
  EXPECT_EQ(t->Stats().entries, 1);
  t->CheckInvariants();
}

TEST(DiskTierTest, OneProcessPerDirectory) {
  ScratchDir dir;
  auto t = OpenTier(dir.path(), 1 << 20);
  // flock locks are per open file description: a second Open in this process
  // conflicts too.
  auto second = DiskTier::Open(DiskTierOptions{.dir = dir.path(), .budget_bytes = 1 << 20});
  ASSERT_FALSE(second.ok());
  EXPECT_NE(second.status().message().find("another process"), std::string::npos);
}

TEST(DiskTierTest, CorruptTruncatedAndForeignFilesAreDroppedNeverUsed) {
  ScratchDir dir;
  auto t = OpenTier(dir.path(), 1 << 20);
  for (uint64_t k = 1; k <= 4; ++k) ASSERT_TRUE(t->Put(kFp, k, MakeRecord(kFp, k, 0, k)).ok());
  // 1: a byte flipped in the payload (found when read).
  {
    std::fstream f(t->PathOf(kFp, 1), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(100);
    f.put('\x5a');
  }
  auto got = t->Get(kFp, 1);
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.status().code(), StatusCode::kDataLoss);
  EXPECT_FALSE(fs::exists(t->PathOf(kFp, 1)));
  EXPECT_EQ(t->Get(kFp, 1).status().code(), StatusCode::kNotFound);
  // 2: truncated while running (found when read).
  fs::resize_file(t->PathOf(kFp, 2), 50);
  EXPECT_EQ(t->Get(kFp, 2).status().code(), StatusCode::kDataLoss);
  // 3: truncated, 4: renamed to another key, and a stale temporary file: found
  // at restart.
  fs::resize_file(t->PathOf(kFp, 3), 200);
  fs::rename(t->PathOf(kFp, 4), t->PathOf(kFp, 5));
  std::ofstream(dir.path() + "/.tmp-1-1.kvb") << "half a record";
  std::ofstream(dir.path() + "/notes.txt") << "not ours";
  const int64_t corrupt_before = t->Stats().corrupt;
  EXPECT_EQ(corrupt_before, 2);
  t.reset();
  t = OpenTier(dir.path(), 1 << 20);
  t->CheckInvariants();
  EXPECT_EQ(t->Stats().entries, 0);
  EXPECT_EQ(t->Stats().corrupt, 2);  // 3 and "5"
  EXPECT_FALSE(fs::exists(dir.path() + "/.tmp-1-1.kvb"));
  EXPECT_TRUE(fs::exists(dir.path() + "/notes.txt"));  // files not named like records are left alone
  EXPECT_EQ(CountFiles(dir.path(), ".kvb"), 0);
}

TEST(DiskTierTest, AFileDeletedBehindItsBackIsAMiss) {
  ScratchDir dir;
  auto t = OpenTier(dir.path(), 1 << 20);
  ASSERT_TRUE(t->Put(kFp, 1, MakeRecord(kFp, 1, 0, 1)).ok());
  fs::remove(t->PathOf(kFp, 1));
  EXPECT_EQ(t->Get(kFp, 1).status().code(), StatusCode::kNotFound);
  EXPECT_FALSE(t->Contains(kFp, 1));
  t->CheckInvariants();
}

// A full disk: writes fail with ENOSPC, the tier caps itself at what it holds,
// keeps answering reads and keeps replacing old records by new ones; after
// retry_seconds it tries to grow again.
TEST(DiskTierTest, AFullDiskStopsGrowthNotService) {
  ScratchDir dir;
  const std::string err = testing::InTmpfs(dir.path(), 64 * 1024, [&]() -> std::string {
    FakeClock clock;
    auto t = OpenTier(dir.path(), 100 << 20, &clock);
    if (!t) return "open failed";
    int ok = 0;
    uint64_t k = 1;
    for (; k <= 200; ++k) {
      if (!t->Put(kFp, k, MakeRecord(kFp, k, 0, k, 16, 20, 512, 256)).ok()) break;
      ++ok;
    }
    if (k > 200) return "the 64 KiB tmpfs never filled";
    const TierStats s = t->Stats();
    if (s.state.find("full") == std::string::npos) return "state after ENOSPC: " + s.state;
    if (s.entries != ok) return fmt::format("{} entries after {} good puts", s.entries, ok);
    // Reads go on.
    if (!t->Get(kFp, 1).ok()) return "read after ENOSPC failed";
    // New records replace old ones within the bytes held.
    for (uint64_t j = 1000; j < 1010; ++j) {
      if (!t->Put(kFp, j, MakeRecord(kFp, j, 0, j, 16, 20, 512, 256)).ok()) return "no turnover when full";
    }
    if (t->Stats().bytes_held > s.bytes_held) return "the full tier grew";
    t->CheckInvariants();
    clock.now += 31;  // the retry: it tries to grow, fails again, caps again
    t->Put(kFp, 5000, MakeRecord(kFp, 5000, 0, 5000, 16, 20, 512, 256)).ok();
    if (t->Stats().state.find("full") == std::string::npos)
      return "state after the retry: " + t->Stats().state;
    t->CheckInvariants();
    return "";
  });
  EXPECT_EQ(err, "");
}

// A read-only directory: writes fail fast, reads go on; after retry_seconds
// writes resume when the directory is writable again.
// Spilled records on a disk that fills: the spill that meets ENOSPC fails and caps the tier at
// what it holds; those held still read; a freed slot takes a new record (written in place).
TEST(DiskTierTest, SpilledRecordsOnAFullDisk) {
  ScratchDir dir;
  const std::string err = testing::InTmpfs(dir.path(), 64 * 1024, [&]() -> std::string {
    FakeClock clock;
    auto t = OpenTier(dir.path(), 100 << 20, &clock);
    if (!t) return "open failed";
    uint64_t k = 1;
    for (; k <= 200; ++k)
      if (!t->PutSpill(kFp, k, MakeRecord(kFp, k, 0, k, 16, 20, 512, 256)).ok()) break;
    if (k > 200) return "the 64 KiB tmpfs never filled";
    if (t->Stats().state.find("full") == std::string::npos) return "state after ENOSPC: " + t->Stats().state;
    if (t->spilled_records() != static_cast<int64_t>(k - 1)) return "a failed spill was counted";
    if (!t->GetSpill(kFp, 1).ok()) return "read after ENOSPC failed";
    t->EraseSpill(kFp, 2);
    if (!t->PutSpill(kFp, 1000, MakeRecord(kFp, 1000, 0, 1000, 16, 20, 512, 256)).ok())
      return "a freed slot did not take a new record";
    auto got = t->GetSpill(kFp, 1000);
    if (!got.ok() || *got != MakeRecord(kFp, 1000, 0, 1000, 16, 20, 512, 256)) return "the new record reads wrong";
    t->CheckInvariants();
    return "";
  });
  EXPECT_EQ(err, "");
}

TEST(DiskTierTest, AReadOnlyDirectoryStopsWritesNotReads) {
  ScratchDir dir;
  const std::string err = testing::InTmpfs(dir.path(), 1 << 20, [&]() -> std::string {
    FakeClock clock;
    auto t = OpenTier(dir.path(), 100 << 20, &clock);
    if (!t || !t->Put(kFp, 1, MakeRecord(kFp, 1, 0, 1)).ok()) return "first put failed";
    if (!testing::RemountReadOnly(dir.path())) return "cannot remount read-only";
    if (t->Put(kFp, 2, MakeRecord(kFp, 2, 0, 2)).ok()) return "a put to a read-only disk succeeded";
    if (t->Stats().state.find("read-only") == std::string::npos) return "state: " + t->Stats().state;
    if (t->Writable()) return "a read-only disk says it is writable";
    const int64_t fast_before = t->Stats().fast_failures;
    if (t->Put(kFp, 3, MakeRecord(kFp, 3, 0, 3)).ok()) return "second put succeeded";
    if (t->Stats().fast_failures != fast_before + 1) return "the second put was not refused at once";
    if (!t->Get(kFp, 1).ok()) return "read from a read-only disk failed";
    // Reopened read-only (a restart): the index is rebuilt, nothing is
    // deleted.
    t.reset();
    t = OpenTier(dir.path(), 100 << 20, &clock);
    if (!t || t->Stats().entries != 1) return "reopen read-only lost the record";
    if (t->Stats().state.find("read-only") == std::string::npos) return "reopen state: " + t->Stats().state;
    if (::mount(nullptr, dir.path().c_str(), nullptr, MS_REMOUNT, nullptr) != 0) return "remount rw failed";
    clock.now += 31;
    if (!t->Writable()) return "not writable once its retry time has come";
    if (!t->Put(kFp, 4, MakeRecord(kFp, 4, 0, 4)).ok()) return "writes did not resume";
    if (t->Stats().state != "ok") return "state after resuming: " + t->Stats().state;
    t->CheckInvariants();
    return "";
  });
  EXPECT_EQ(err, "");
}

TEST(DiskTierTest, BadOptionsAreErrorsNotCrashes) {
  ScratchDir dir;
  EXPECT_FALSE(DiskTier::Open(DiskTierOptions{.dir = dir.path(), .budget_bytes = 0}).ok());
  EXPECT_FALSE(DiskTier::Open(DiskTierOptions{.dir = "", .budget_bytes = 1}).ok());
  std::ofstream(dir.path() + "/file") << "x";
  EXPECT_FALSE(DiskTier::Open(DiskTierOptions{.dir = dir.path() + "/file", .budget_bytes = 1}).ok());
}

}  // namespace
}  // namespace slimkv::kv::tiers
