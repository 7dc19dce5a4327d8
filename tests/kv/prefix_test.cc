// Prefix sharing: attached blocks give exactly the attention a recomputation
// gives, tenants are isolated, and the cache evicts, refcounts and frees
// correctly.
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "kv/kv_cache.h"
#include "kv/policy.h"

namespace slimkv::kv {
namespace {

constexpr int kHd = 32, kHeads = 2, kQHeads = 4, kLayers = 2;

KvSpec Spec(int window = 0) {
  return KvSpec{.n_layers = kLayers,
                .n_kv_heads = kHeads,
                .n_q_heads = kQHeads,
                .head_dim = kHd,
                .max_context = 4096,
                .layer_window = {window, 0}};
}

// K/V/Q of a token depend only on the token id and its position, like a real
// model's.
void Rows(const std::vector<int32_t>& tokens, int first_pos, int n, std::vector<float>* k,
          std::vector<float>* v, std::vector<float>* q) {
  k->resize(n * kHeads * kHd);
  v->resize(k->size());
  q->resize(n * kQHeads * kHd);
  for (int i = 0; i < n; ++i) {
    std::mt19937 rng(tokens[first_pos + i] * 7919 + (first_pos + i));
    std::normal_distribution<float> nd;
    for (int j = 0; j < kHeads * kHd; ++j)
      (*k)[i * kHeads * kHd + j] = nd(rng), (*v)[i * kHeads * kHd + j] = nd(rng);
    for (int j = 0; j < kQHeads * kHd; ++j) (*q)[i * kQHeads * kHd + j] = nd(rng);
  }
}

// Feeds tokens [from, to) of `tokens` into `seq` in steps of `step`; returns
// the attention outputs of the last step's tokens (layer kLayers - 1).
std::vector<float> Feed(KvCache& c, ThreadPool& pool, SeqId seq, const std::vector<int32_t>& tokens, int from,
                        int to, int step) {
  std::vector<float> k, v, q, out;
  for (int p = from; p < to; p += step) {
    const int n = std::min(step, to - p);
    Rows(tokens, p, n, &k, &v, &q);
    out.assign(q.size(), 0.0f);
    const StepChunk chunk[] = {{seq, n, 0}};
    EXPECT_TRUE(c.BeginStep(chunk).ok());
    for (int l = 0; l < kLayers; ++l) {
      c.Append(l, chunk, k.data(), kHeads * kHd, v.data(), kHeads * kHd);
      c.Attend(pool, l, chunk, q.data(), kQHeads * kHd, out.data(), kQHeads * kHd, 0.2f);
    }
    c.EndStep(chunk);
    c.CheckInvariants();
  }
  return out;
}

std::vector<int32_t> Tokens(int n, int seed) {
  std::vector<int32_t> t(n);
  std::mt19937 rng(seed);
  for (auto& x : t) x = static_cast<int32_t>(rng() % 1000);
  return t;
}

struct PrefixCase {
  const char* preset;
  int window;  // of layer 0 (a sliding-window layer beside a global one)
};

class PrefixTest : public ::testing::TestWithParam<PrefixCase> {};

TEST_P(PrefixTest, AttachedPrefixGivesTheSameAttentionAsRecomputing) {
  KvConfig cfg = *ParsePreset(GetParam().preset);
  cfg.residual = cfg.needs_staging() ? cfg.block_tokens : 0;
  auto c_or = KvCache::Create(Spec(GetParam().window), cfg, 16 << 20);
  ASSERT_TRUE(c_or.ok()) << c_or.status().ToString();
  KvCache& c = **c_or;
  ThreadPool pool(2);
  const std::vector<int32_t> shared = Tokens(200, 1);
  std::vector<int32_t> a = shared, b = shared;
  for (int32_t t : Tokens(20, 2)) a.push_back(t);
  for (int32_t t : Tokens(37, 3)) b.push_back(t);
  // A runs and publishes; B attaches and computes only its suffix; C recomputes
  // all of B.
  const SeqId sa = c.AddSequence();
  Feed(c, pool, sa, a, 0, static_cast<int>(a.size()), 64);
  c.PublishPrefix(sa, 7, a);
  c.RemoveSequence(sa);
  c.CheckInvariants();
  const SeqId sb = c.AddSequence();
  const int reused = c.AttachPrefix(sb, 7, b);
  // 6 full blocks of 32 lie inside the 200 shared tokens. A window layer needs
  // the blocks its window still sees at the attach point; when A had already
  // freed them (window 100 < A's 220 tokens), nothing can be attached and B
  // computes everything itself.
  if (GetParam().window == 0 || GetParam().window >= 220) {
    EXPECT_EQ(reused, 192);
  } else {
    EXPECT_EQ(reused, 0);
  }
  EXPECT_EQ(c.Length(sb), reused);
  c.CheckInvariants();
  const std::vector<float> got = Feed(c, pool, sb, b, reused, static_cast<int>(b.size()), 64);
  const SeqId sc = c.AddSequence();
  const std::vector<float> want = Feed(c, pool, sc, b, 0, static_cast<int>(b.size()), 64);
  // The suffix is fed in different steps (B from 192, C from 0), so only the
  // last step's tokens line up: compare the final token.
  ASSERT_GE(got.size(), static_cast<size_t>(kQHeads * kHd));
  for (int i = 0; i < kQHeads * kHd; ++i) {
    EXPECT_NEAR(got[got.size() - kQHeads * kHd + i], want[want.size() - kQHeads * kHd + i], 1e-5) << i;
  }
  const PrefixStats st = c.prefix_stats();
  EXPECT_EQ(st.hits, reused > 0 ? 1 : 0);
  EXPECT_EQ(st.hit_tokens, reused);
  c.RemoveSequence(sb);
  c.RemoveSequence(sc);
  c.ClearPrefixCache();
  c.CheckInvariants();
  EXPECT_EQ(c.blocks_in_use(), 0);
  EXPECT_EQ(c.bytes_in_use(), 0u);
}

INSTANTIATE_TEST_SUITE_P(Formats, PrefixTest,
                         ::testing::Values(PrefixCase{"fp16", 0}, PrefixCase{"int4", 0},
                                           PrefixCase{"q4_0", 0}, PrefixCase{"kivi2", 0},
                                           PrefixCase{"fp16", 100}, PrefixCase{"fp16", 300},
                                           PrefixCase{"int4", 256}));

TEST(PrefixCacheTest, TenantsAreIsolatedAndShortPromptsMiss) {
  auto c_or = KvCache::Create(Spec(), *ParsePreset("fp16"), 8 << 20);
  ASSERT_TRUE(c_or.ok());
  KvCache& c = **c_or;
  ThreadPool pool(1);
  const std::vector<int32_t> t = Tokens(100, 5);
  const SeqId s = c.AddSequence();
  Feed(c, pool, s, t, 0, 100, 100);
  c.PublishPrefix(s, 1, t);
  EXPECT_EQ(c.AttachPrefix(c.AddSequence(), 2, t), 0);   // another tenant's salt
  EXPECT_EQ(c.AttachPrefix(c.AddSequence(), 1, t), 96);  // the same tenant
  std::vector<int32_t> other = t;
  other[40] += 1;  // diverges inside block 1: only block 0 matches
  EXPECT_EQ(c.AttachPrefix(c.AddSequence(), 1, other), 32);
  EXPECT_EQ(c.AttachPrefix(c.AddSequence(), 1, std::span(t).first(32)),
            0);  // nothing left to compute
  c.CheckInvariants();
}

TEST(PrefixCacheTest, FullPoolEvictsCachedPrefixesLeastRecentlyUsedFirst) {
  KvConfig cfg = *ParsePreset("fp16");
  // Block: 32 tokens x 32 dims x 2 bytes x 2 (K, V) = 4 KiB; 4 streams; budget
  // of 40 blocks.
  auto c_or = KvCache::Create(Spec(), cfg, 40 * 4096);
  ASSERT_TRUE(c_or.ok());
  KvCache& c = **c_or;
  ThreadPool pool(1);
  for (int round = 0; round < 6; ++round) {
    const std::vector<int32_t> t = Tokens(128, 100 + round);  // 4 blocks x 4 streams = 16 blocks
    const SeqId s = c.AddSequence();
    Feed(c, pool, s, t, 0, 128, 64);
    c.PublishPrefix(s, 0, t);
    c.RemoveSequence(s);
    c.CheckInvariants();
    EXPECT_LE(c.bytes_in_use(), c.budget_bytes());
  }
  EXPECT_GT(c.prefix_stats().evicted, 0);
  c.ClearPrefixCache();
  EXPECT_EQ(c.blocks_in_use(), 0);
}

// A prompt published mid-way (its later blocks still staged) and again once
// they are sealed: the entries take the sealed blocks, so a later sequence
// attaches the whole chain (sealed blocks must come before staged ones) instead
// of stopping after the first staged block.
TEST(PrefixCacheTest, EntriesPublishedStagedTakeTheSealedBlocks) {
  KvConfig cfg = *ParsePreset("int4");
  const int bt = cfg.block_tokens;
  cfg.residual = bt;  // a block seals once a block's worth of newer tokens follows it
  auto c_or = KvCache::Create(Spec(), cfg, 16 << 20);
  ASSERT_TRUE(c_or.ok());
  KvCache& c = **c_or;
  ThreadPool pool(1);
  const std::vector<int32_t> t = Tokens(5 * bt + 10, 21);
  const SeqId s = c.AddSequence();
  Feed(c, pool, s, t, 0, 2 * bt, 2 * bt);
  c.PublishPrefix(s, 0, std::span(t).first(2 * bt));  // block 0 sealed, block 1 staged
  Feed(c, pool, s, t, 2 * bt, 5 * bt, bt);
  c.PublishPrefix(s, 0, std::span(t).first(5 * bt));  // blocks 0-3 sealed, block 4 staged
  c.CheckInvariants();
  EXPECT_EQ(c.prefix_stats().cached_blocks, 5);
  const SeqId s2 = c.AddSequence();
  EXPECT_EQ(c.AttachPrefix(s2, 0, t), 5 * bt);  // without the upgrade: 2 * bt
  c.CheckInvariants();
  c.RemoveSequence(s);
  c.RemoveSequence(s2);
  c.ClearPrefixCache();
  EXPECT_EQ(c.blocks_in_use(), 0);
}

// With an eviction policy a shared prefix stays shared: sequences attach it,
// their policy never evicts it (nor seals it), and each evicts only in its own
// part after it.
TEST(PrefixCacheTest, SharedPrefixStaysSharedUnderEviction) {
  for (const char* preset : {"fp16", "int4"}) {
    SCOPED_TRACE(preset);
    KvConfig cfg = *ParsePreset(preset);
    cfg.residual = cfg.needs_staging() ? cfg.block_tokens : 0;
    auto c_or = KvCache::Create(Spec(), cfg, 16 << 20);
    ASSERT_TRUE(c_or.ok());
    KvCache& c = **c_or;
    ASSERT_TRUE(c.SetPolicy(*ParsePolicy("h2o", 64)).ok());
    ThreadPool pool(2);
    const std::vector<int32_t> shared = Tokens(128, 11);
    auto prompt = [&](int seed) {
      std::vector<int32_t> p = shared;
      for (int32_t t : Tokens(300, seed)) p.push_back(t);
      return p;
    };
    // A reads the shared part (published before its policy acts), then its own,
    // and decodes.
    const std::vector<int32_t> a = prompt(12);
    const SeqId sa = c.AddSequence();
    Feed(c, pool, sa, a, 0, 128, 128);
    c.PublishPrefix(sa, 0, std::span(a).first(128));
    Feed(c, pool, sa, a, 128, 168, 40);
    c.Compress(sa);
    Feed(c, pool, sa, a, 168, 300, 1);
    // B and C attach the shared blocks and evict only after them.
    std::vector<SeqId> seqs;
    for (int seed : {13, 14}) {
      const std::vector<int32_t> p = prompt(seed);
      const SeqId s = c.AddSequence();
      EXPECT_EQ(c.AttachPrefix(s, 0, p), 128);
      Feed(c, pool, s, p, 128, 160, 32);
      c.Compress(s);
      seqs.push_back(s);
    }
    for (int step = 0; step < 150; ++step) {
      for (size_t i = 0; i < seqs.size(); ++i) {
        const std::vector<int32_t> p = prompt(13 + static_cast<int>(i));
        Feed(c, pool, seqs[i], p, 160 + step, 161 + step, 1);
      }
    }
    for (SeqId s : seqs) {
      for (int l = 0; l < kLayers; ++l) {
        for (int h = 0; h < kHeads; ++h) {
          const std::vector<int32_t> pos = c.HeldPositions(s, l, h);
          ASSERT_GE(pos.size(), 128u);
          for (int i = 0; i < 128; ++i) ASSERT_EQ(pos[i], i);  // the whole prefix, in place
          EXPECT_LE(static_cast<int>(pos.size()) - 128, 64 + cfg.block_tokens);
        }
      }
    }
    // Each block of the prefix, in every stream, is held by B, C and the index.
    EXPECT_GE(c.prefix_stats().shared_blocks, 128 / cfg.block_tokens * kLayers * kHeads);
    EXPECT_GT(c.eviction_stats().blocks_dropped, 0);
    c.RemoveSequence(sa);
    for (SeqId s : seqs) c.RemoveSequence(s);
    c.ClearPrefixCache();
    c.CheckInvariants();
    EXPECT_EQ(c.blocks_in_use(), 0);
  }
}

}  // namespace
}  // namespace slimkv::kv
