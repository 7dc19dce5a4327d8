// Recall's spill to the disk tier (`:recall:host=N` with --kv-disk, kv_recall.cc): host blocks
// past N go to the disk as block records and come back, asynchronously, when a query wants
// them, with the bytes they had; a record that is gone or corrupt is dropped, never used; a
// sequence's records are erased when it ends.
//
// The setup is the recall tests' needle (kv/recall_needle.h): knorm evicts the run of large keys along
// one direction in the prompt. The prompt's queries point away from it, so with two host blocks
// per stream the needle's blocks are the ones the bound sends below host memory (dropped without
// a tier, spilled with one); decode queries along the direction want them back.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <thread>

#include "kv/kv_cache.h"
#include "kv/tiers/disk_tier.h"
#include "kv/tiers/tier_stack.h"
#include "../kv/recall_needle.h"
#include "tier_test_util.h"

namespace slimkv::kv {
namespace {

using Needle = testing::RecallNeedle;
constexpr int kPrompt = 256, kBudget = 64;

KvConfig Config(const char* preset) {
  KvConfig c = *ParsePreset(preset);
  c.block_tokens = 16;
  if (c.residual > 0) c.residual = 32;
  return c;
}

enum class Tier { kNone, kDisk, kCorrupt };

struct NeedleRun {
  std::map<int32_t, std::vector<float>> needle;  // position -> key, value of the needle held at the end
  int steps = 0;                                 // decode steps until every stream held the needle
  EvictionStats stats;
  int64_t records_left = -1;  // spilled records on disk after the sequence ended
};

// The needle run: `policy` with or without a disk tier (kCorrupt: every spilled record on disk
// is overwritten with garbage before decoding starts), the prompt's queries pointing away from
// the needle, then up to `max_steps` decode steps wanting it, until every stream holds it.
NeedleRun RunNeedle(const char* preset, const char* policy, Tier tier, int max_steps) {
  NeedleRun out;
  tiers::testing::ScratchDir dir;
  const KvSpec spec{.n_layers = Needle::kLayers,
                    .n_kv_heads = Needle::kHeads,
                    .n_q_heads = Needle::kHeads * Needle::kGroup,
                    .head_dim = Needle::kHd,
                    .max_context = 1 << 20};
  const KvConfig config = Config(preset);
  std::unique_ptr<tiers::TierStack> stack;
  tiers::DiskTier* disk = nullptr;
  if (tier != Tier::kNone) {
    auto d = tiers::DiskTier::Open({.dir = dir.path(), .budget_bytes = 64 << 20});
    EXPECT_TRUE(d.ok()) << d.status().ToString();
    if (!d.ok()) return out;
    disk = d->get();
    std::vector<std::unique_ptr<tiers::BlockTier>> ts;
    ts.push_back(std::move(d).value());
    stack = std::make_unique<tiers::TierStack>(spec, config, tiers::TierStackOptions{}, std::move(ts));
  }
  auto c = KvCache::Create(spec, config, 64 << 20);
  EXPECT_TRUE(c.ok());
  KvCache& cache = **c;
  if (stack) cache.SetTiers(stack.get());
  EXPECT_TRUE(cache.SetPolicy(*ParsePolicy(policy, kBudget)).ok());
  const SeqId seq = cache.AddSequence();
  Needle needle(cache, seq);
  needle.Step(kPrompt, 0, -1);  // the prompt's queries point away from the needle
  cache.Compress(seq);
  EXPECT_EQ(needle.Held(1, 1), 0) << "knorm keeps the needle";
  if (stack) stack->Flush();
  if (tier == Tier::kCorrupt) {
    int corrupted = 0;  // every slot of every slab (spill-<record bytes>.kvs)
    for (const auto& e : std::filesystem::directory_iterator(dir.path())) {
      const std::string name = e.path().filename().string();
      if (e.path().extension() != ".kvs") continue;
      const uint64_t bytes = std::stoull(name.substr(6));
      std::fstream f(e.path(), std::ios::in | std::ios::out | std::ios::binary);
      for (uint64_t at = 100; at + 8 <= std::filesystem::file_size(e.path()); at += bytes, ++corrupted) {
        f.seekp(static_cast<std::streamoff>(at));
        f.write("garbage!", 8);
      }
    }
    EXPECT_GT(corrupted, 0);
  }
  int pos = kPrompt;
  for (; out.steps < max_steps && !needle.AllHold(); ++out.steps) {
    needle.Step(1, pos++, 1);
    // The reads are asynchronous: give the reader a moment, as a real step's forward pass would.
    if (stack) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  out.needle = needle.Tokens(1, 1);
  out.stats = cache.eviction_stats();
  cache.RemoveSequence(seq);
  EXPECT_EQ(cache.eviction_stats().host_bytes, 0);
  cache.CheckInvariants();
  if (stack) {
    stack->Flush();
    out.records_left = disk->spilled_records();
    disk->CheckInvariants();
  }
  return out;
}

TEST(RecallSpillTest, TheNeedleComesBackFromDiskWithItsBytes) {
  for (const char* preset : {"fp32", "int4", "tq4"}) {
    SCOPED_TRACE(preset);
    // Unbounded host memory: the reference (the needle comes back at once, from memory).
    const NeedleRun ram = RunNeedle(preset, "knorm:recall:fetch=2", Tier::kNone, 20);
    ASSERT_EQ(ram.needle.size(), 16u);
    // Two host blocks and no tier: the needle's blocks are dropped and never come back.
    const NeedleRun dropped = RunNeedle(preset, "knorm:recall:fetch=2:host=2", Tier::kNone, 20);
    EXPECT_GT(dropped.stats.host_dropped, 0);
    EXPECT_EQ(dropped.stats.spilled, 0);
    EXPECT_EQ(dropped.needle.size(), 0u);
    // Two host blocks and a disk: spilled, read back a step after the query wants them, fetched.
    const NeedleRun disk = RunNeedle(preset, "knorm:recall:fetch=2:host=2", Tier::kDisk, 200);
    EXPECT_EQ(disk.stats.host_dropped, 0);
    EXPECT_GT(disk.stats.spilled, 0);
    EXPECT_GE(disk.stats.spill_read, Needle::kLayers * Needle::kHeads);
    EXPECT_EQ(disk.stats.spill_lost, 0);
    EXPECT_GT(disk.steps, ram.steps) << "a spilled block cannot come back at the step that wants it";
    EXPECT_EQ(disk.needle, ram.needle) << "the bytes changed on their way through the disk";
    EXPECT_EQ(disk.records_left, 0) << "the sequence's records outlived it";
  }
}

TEST(RecallSpillTest, ACorruptRecordIsDroppedNeverUsed) {
  const NeedleRun r = RunNeedle("int4", "knorm:recall:fetch=2:host=2", Tier::kCorrupt, 30);
  EXPECT_GT(r.stats.spilled, 0);
  EXPECT_GT(r.stats.spill_lost, 0);
  EXPECT_EQ(r.needle.size(), 0u);
  EXPECT_EQ(r.records_left, 0);
}

}  // namespace
}  // namespace slimkv::kv
