// Recall's spill to the disk tier (`:recall:host=N` with --kv-disk, kv_recall.cc): host blocks
// past N go to the disk as block records and come back, asynchronously, when a query wants
// them, with the bytes they had; a record that is gone or corrupt is dropped, never used; a
// sequence's records are erased when it ends.
//
// The setup is eviction_test's needle: knorm evicts the block-aligned run of large keys along
// one direction in the prompt. The prompt's queries point away from it, so with two host blocks
// per stream the needle's blocks are the ones the bound sends below host memory (dropped without
// a tier, spilled with one); decode queries along the direction want them back.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <thread>

#include "kv/kv_cache.h"
#include "kv/tiers/disk_tier.h"
#include "kv/tiers/tier_stack.h"
#include "tier_test_util.h"

namespace slimkv::kv {
namespace {

constexpr int kHd = 64, kHeads = 2, kGroup = 2, kLayers = 2;
constexpr int kPrompt = 256, kNeedle = 64, kBudget = 64;

KvSpec Spec() {
  return KvSpec{
      .n_layers = kLayers, .n_kv_heads = kHeads, .n_q_heads = kHeads * kGroup, .head_dim = kHd, .max_context = 1 << 20};
}

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
  int64_t records_left = -1;  // disk records after the sequence ended
};

// The needle run: `policy` with or without a disk tier (kCorrupt: every record on disk is
// overwritten with garbage before decoding starts), then up to `max_steps` decode steps wanting
// the needle, until every stream holds it.
NeedleRun Needle(const char* preset, const char* policy, Tier tier, int max_steps) {
  NeedleRun out;
  tiers::testing::ScratchDir dir;
  const KvSpec spec = Spec();
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
  ThreadPool pool(2);
  std::mt19937 rng(3);
  std::normal_distribution<float> nd;
  std::vector<float> dir_v(kHd);
  for (auto& x : dir_v) x = nd(rng);
  const int width = kHeads * kHd, qwidth = kHeads * kGroup * kHd;
  auto step = [&](int n, int pos0, float query_sign) {
    std::vector<float> k(n * width), v(n * width), q(n * qwidth), out_v(n * qwidth);
    for (auto* x : {&k, &v, &q})
      for (auto& e : *x) e = 0.3f * nd(rng);
    for (int i = 0; i < n; ++i) {
      if (pos0 + i >= kNeedle && pos0 + i < kNeedle + 16)  // the needle: 16 large keys along dir
        for (int r = 0; r < kHeads; ++r)
          for (int d = 0; d < kHd; ++d) k[(i * kHeads + r) * kHd + d] += 2 * dir_v[d];
      for (int r = 0; r < kHeads * kGroup; ++r)
        for (int d = 0; d < kHd; ++d) q[(i * kHeads * kGroup + r) * kHd + d] += query_sign * 2 * dir_v[d];
    }
    const StepChunk ch[] = {{seq, n, 0}};
    ASSERT_TRUE(cache.BeginStep(ch).ok());
    for (int l = 0; l < kLayers; ++l) {
      cache.Append(l, ch, k.data(), width, v.data(), width);
      cache.Attend(pool, l, ch, q.data(), qwidth, out_v.data(), qwidth, 0.125f);
    }
    cache.EndStep(ch, &pool);
    cache.CheckInvariants();
  };
  auto needle_held = [&](int layer, int head) {
    const std::vector<int32_t> pos = cache.HeldPositions(seq, layer, head);
    return std::count_if(pos.begin(), pos.end(), [](int32_t p) { return p >= kNeedle && p < kNeedle + 16; });
  };
  auto all_hold = [&] {
    for (int l = 0; l < kLayers; ++l)
      for (int h = 0; h < kHeads; ++h)
        if (needle_held(l, h) != 16) return false;
    return true;
  };
  step(kPrompt, 0, -1);  // the prompt's queries point away from the needle
  cache.Compress(seq);
  EXPECT_EQ(needle_held(1, 1), 0) << "knorm keeps the needle";
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
  for (; out.steps < max_steps && !all_hold(); ++out.steps) {
    step(1, pos++, 1);
    // The reads are asynchronous: give the reader a moment, as a real step's forward pass would.
    if (stack) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  const std::vector<int32_t> held = cache.HeldPositions(seq, 1, 1);
  const int n = static_cast<int>(held.size());
  std::vector<float> k(n * kHd), v(n * kHd);
  EXPECT_TRUE(cache.ReadTokens(seq, 1, 1, 0, n, k.data(), v.data(), true).ok());
  for (int t = 0; t < n; ++t) {
    if (held[t] < kNeedle || held[t] >= kNeedle + 16) continue;
    std::vector<float>& x = out.needle[held[t]];
    x.assign(k.begin() + t * kHd, k.begin() + (t + 1) * kHd);
    x.insert(x.end(), v.begin() + t * kHd, v.begin() + (t + 1) * kHd);
  }
  out.stats = cache.eviction_stats();
  cache.RemoveSequence(seq);
  EXPECT_EQ(cache.eviction_stats().host_bytes, 0);
  cache.CheckInvariants();
  if (stack) {
    stack->Flush();
    out.records_left = disk->spilled_records();
  }
  return out;
}

TEST(RecallSpillTest, TheNeedleComesBackFromDiskWithItsBytes) {
  for (const char* preset : {"fp32", "int4", "tq4"}) {
    SCOPED_TRACE(preset);
    // Unbounded host memory: the reference (the needle comes back at once, from memory).
    const NeedleRun ram = Needle(preset, "knorm:recall:fetch=2", Tier::kNone, 20);
    ASSERT_EQ(ram.needle.size(), 16u);
    // Two host blocks and no tier: the needle's blocks are dropped and never come back.
    const NeedleRun dropped = Needle(preset, "knorm:recall:fetch=2:host=2", Tier::kNone, 20);
    EXPECT_GT(dropped.stats.host_dropped, 0);
    EXPECT_EQ(dropped.stats.spilled, 0);
    EXPECT_EQ(dropped.needle.size(), 0u);
    // Two host blocks and a disk: spilled, read back a step after the query wants them, fetched.
    const NeedleRun disk = Needle(preset, "knorm:recall:fetch=2:host=2", Tier::kDisk, 200);
    EXPECT_EQ(disk.stats.host_dropped, 0);
    EXPECT_GT(disk.stats.spilled, 0);
    EXPECT_GE(disk.stats.spill_read, kLayers * kHeads);
    EXPECT_EQ(disk.stats.spill_lost, 0);
    EXPECT_GT(disk.steps, ram.steps) << "a spilled block cannot come back at the step that wants it";
    EXPECT_EQ(disk.needle, ram.needle) << "the bytes changed on their way through the disk";
    EXPECT_EQ(disk.records_left, 0) << "the sequence's records outlived it";
  }
}

TEST(RecallSpillTest, ACorruptRecordIsDroppedNeverUsed) {
  const NeedleRun r = Needle("int4", "knorm:recall:fetch=2:host=2", Tier::kCorrupt, 30);
  EXPECT_GT(r.stats.spilled, 0);
  EXPECT_GT(r.stats.spill_lost, 0);
  EXPECT_EQ(r.needle.size(), 0u);
  EXPECT_EQ(r.records_left, 0);
}

}  // namespace
}  // namespace slimkv::kv
