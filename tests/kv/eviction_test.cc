// Eviction inside the cache: attention over exactly the tokens a policy keeps,
// for float and quantized formats that really seal and evict; sealed blocks
// moved by reference (a token's bytes are written once); re-indexing policies
// attending as if their tokens were contiguous; Expected Attention in the keys'
// domain whatever the format rotates; Ada-KV without per-step rewrites; value
// merging; constant memory for streaming policies.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <random>

#include "kv/kv_cache.h"
#include "recall_needle.h"

namespace slimkv::kv {
namespace {

constexpr int kHd = 64, kHeads = 2, kGroup = 2, kLayers = 2;

KvSpec Spec(bool rope) {
  KvSpec s{.n_layers = kLayers,
           .n_kv_heads = kHeads,
           .n_q_heads = kHeads * kGroup,
           .head_dim = kHd,
           .max_context = 1 << 20};
  if (rope) {
    s.rope_dim = kHd;
    std::vector<float> f(kHd / 2);
    for (int i = 0; i < kHd / 2; ++i) f[i] = static_cast<float>(std::pow(10000.0, -2.0 * i / kHd));
    s.layer_inv_freq.assign(kLayers, f);
  }
  return s;
}

// Drives one sequence through a cache: a prompt, Compress, then decode steps,
// with keys given before RoPE and queries rotated to the sequence's position,
// as the model does.
struct Driver {
  Driver(const KvSpec& spec, const KvConfig& config, const char* policy, int budget, size_t bytes = 64 << 20)
      : spec(spec), pool(2), rng(7) {
    auto c = KvCache::Create(spec, config, bytes);
    EXPECT_TRUE(c.ok()) << c.status().ToString();
    cache = std::move(c).value();
    if (policy) {
      const Status st = cache->SetPolicy(*ParsePolicy(policy, budget));
      EXPECT_TRUE(st.ok()) << st.ToString();
    }
    seq = cache->AddSequence();
  }

  // One step of n tokens; with `check`, the last token's attention in every
  // layer is compared with attention over the tokens the stream held before the
  // step plus the step's own (positions as `Positions` says), within `tol`.
  void Step(int n, bool check, float tol) {
    if (::testing::Test::HasFailure()) return;  // one failure, not a cascade
    const int width = kHeads * kHd, qwidth = kHeads * kGroup * kHd;
    std::vector<float> k(n * width), v(n * width), q(n * qwidth), out(n * qwidth);
    std::normal_distribution<float> nd;
    for (auto* x : {&k, &v, &q})
      for (auto& e : *x) e = nd(rng);
    // Keys with a large shared offset on a few channels (as real keys have):
    // quantizers see it.
    for (int r = 0; r < n * kHeads; ++r) k[r * kHd + 3] += 4, k[r * kHd + 17] -= 3;
    const int64_t pos0 = cache->NextPosition(seq);
    for (int i = 0; i < n; ++i) Rope(&q[i * qwidth], kHeads * kGroup, pos0 + i);
    const StepChunk ch[] = {{seq, n, 0}};
    ASSERT_TRUE(cache->BeginStep(ch).ok());
    for (int l = 0; l < kLayers; ++l) {
      std::vector<std::vector<float>> kk(kHeads), vv(kHeads);
      std::vector<std::vector<int32_t>> pp(kHeads);
      for (int h = 0; check && h < kHeads; ++h) {
        const int held = cache->Slots(seq, l, h);
        kk[h].resize(held * kHd);
        vv[h].resize(held * kHd);
        ASSERT_TRUE(cache->ReadTokens(seq, l, h, 0, held, kk[h].data(), vv[h].data(), true).ok());
        pp[h] = cache->HeldPositions(seq, l, h);
      }
      cache->Append(l, ch, k.data(), width, v.data(), width);
      cache->Attend(pool, l, ch, q.data(), qwidth, out.data(), qwidth, 0.125f);
      for (int h = 0; check && h < kHeads; ++h) {
        // Held keys back to raw (before RoPE), then the step's own tokens.
        std::vector<float> raw = kk[h];
        for (size_t t = 0; t < pp[h].size(); ++t) {
          if (!stored_pre_rope) Rope(&raw[t * kHd], 1, -pp[h][t]);
        }
        for (int i = 0; i < n; ++i) {
          raw.insert(raw.end(), k.begin() + (i * kHeads + h) * kHd, k.begin() + (i * kHeads + h + 1) * kHd);
          vv[h].insert(vv[h].end(), v.begin() + (i * kHeads + h) * kHd,
                       v.begin() + (i * kHeads + h + 1) * kHd);
          pp[h].push_back(static_cast<int32_t>(pos0 + i));
        }
        const std::vector<int64_t> at = Positions(pp[h], pos0 + n - 1);
        for (int g = 0; g < kGroup; ++g) {
          const float* qr = &q[((n - 1) * kHeads * kGroup + h * kGroup + g) * kHd];
          const int m = static_cast<int>(pp[h].size());
          std::vector<double> p(m);
          double mx = -1e300, z = 0;
          for (int t = 0; t < m; ++t) {
            std::vector<float> key(raw.begin() + t * kHd, raw.begin() + (t + 1) * kHd);
            Rope(key.data(), 1, at[t]);
            double dot = 0;
            for (int d = 0; d < kHd; ++d) dot += static_cast<double>(qr[d]) * key[d];
            mx = std::max(mx, p[t] = dot * 0.125);
          }
          for (auto& x : p) z += (x = std::exp(x - mx));
          for (int d = 0; d < kHd; ++d) {
            double acc = 0;
            for (int t = 0; t < m; ++t) acc += p[t] * vv[h][t * kHd + d];
            ASSERT_NEAR(out[((n - 1) * kHeads * kGroup + h * kGroup + g) * kHd + d], acc / z, tol)
                << "step " << steps << " layer " << l << " head " << h;
          }
        }
      }
    }
    cache->EndStep(ch, &pool);
    cache->CheckInvariants();
    ++steps;
  }

  // Where attention places held tokens (original positions; a re-indexing
  // policy makes them contiguous, ending at the query).
  std::vector<int64_t> Positions(const std::vector<int32_t>& pos, int64_t query) const {
    std::vector<int64_t> at(pos.begin(), pos.end());
    if (reindexing) {
      for (size_t t = 0; t < at.size(); ++t) at[t] = query - static_cast<int64_t>(at.size() - 1 - t);
    }
    return at;
  }

  void Rope(float* x, int heads, int64_t pos) const {
    if (spec.rope_dim == 0) return;
    std::vector<float> c(kHd / 2), s(kHd / 2);
    ops::RopeAngles(pos, spec.layer_inv_freq[0], c.data(), s.data());
    ops::RopeApply(x, heads, kHd, spec.rope_dim, c.data(), s.data(), spec.rope_style);
  }

  KvSpec spec;
  std::unique_ptr<KvCache> cache;
  ThreadPool pool;
  std::mt19937 rng;
  SeqId seq = 0;
  int steps = 0;
  bool reindexing = false, stored_pre_rope = false;
};

KvConfig Config(const char* preset, int block = 16) {
  KvConfig c = *ParsePreset(preset);
  c.block_tokens = block;
  if (c.residual > 0) c.residual = 32;
  return c;
}

// Every policy, float and quantized formats: attention equals attention over
// the held tokens (read back as stored), memory stays within the policy's
// bounds, the invariants hold.
TEST(EvictionTest, AttentionOverExactlyTheKeptTokens) {
  for (const char* preset : {"fp32", "int4", "tq4", "q4_0r"}) {
    for (const char* policy : {"sinks:sinks=4", "window", "h2o", "tova", "snapkv", "knorm", "expected",
                               "adakv:h2o", "knorm:merge", "h2o:pyramid", "h2o:recall", "knorm:recall",
                               "expected:recall", "adakv:snapkv:recall"}) {
      SCOPED_TRACE(std::string(preset) + " " + policy);
      const bool quantized = std::string(preset) != "fp32";
      Driver d(Spec(true), Config(preset), policy, 64);
      d.reindexing = ParsePolicy(policy, 64)->reindexes();
      d.Step(100, false, 0);  // the prompt: above twice the budget, so it is cut
                              // once on the way
      d.cache->Compress(d.seq);
      d.cache->CheckInvariants();
      // q4_0r's kernel rounds the query to 8 bits (llama.cpp's q8 query): its outputs move by a
      // few hundredths whichever tokens are held (0.049 seen without a policy's recall, 0.066
      // with one); the other formats' kernels read the stored bytes exactly.
      const float tol = !quantized ? 2e-4f : std::string(preset) == "q4_0r" ? 0.1f : 0.05f;
      for (int i = 0; i < 120; ++i) d.Step(1, i % 7 == 0, tol);
      const EvictionStats es = d.cache->eviction_stats();
      EXPECT_GT(es.compactions, 0);
      EXPECT_GT(es.block_passes, 0);
      EXPECT_EQ(es.sealed_reencoded, 0);
      if (quantized) EXPECT_GT(d.cache->SequenceUsage(d.seq).bytes_data,
                               0u);  // blocks were sealed
      d.cache->RemoveSequence(d.seq);
      d.cache->CheckInvariants();
      EXPECT_EQ(d.cache->blocks_in_use(), 0);
    }
  }
}

// A token's bytes are written once: a sealed block the policy keeps is the same
// pool block with the same decoded values at every later step (moved by
// reference, never re-encoded).
TEST(EvictionTest, SealedBlocksMoveByReference) {
  for (const char* policy : {"h2o", "sinks", "expected", "adakv:knorm", "h2o:recall", "expected:recall"}) {
    SCOPED_TRACE(policy);
    Driver d(Spec(true), Config("int4"), policy, 64);
    d.Step(40, false, 0);
    d.cache->Compress(d.seq);
    std::map<int32_t, std::vector<float>> first_seen;  // position -> key and value as first sealed
    int checked = 0;
    for (int i = 0; i < 300; ++i) {
      d.Step(1, false, 0);
      const int bt = d.cache->config().block_tokens;
      for (int h = 0; h < kHeads; ++h) {
        const int n = d.cache->Slots(d.seq, 1, h);
        std::vector<float> k(n * kHd), v(n * kHd);
        ASSERT_TRUE(d.cache->ReadTokens(d.seq, 1, h, 0, n, k.data(), v.data()).ok());
        const std::vector<int32_t> pos = d.cache->HeldPositions(d.seq, 1, h);
        // Tokens older than the residual window and the open block are sealed.
        for (int t = 0; t + 32 + bt < n; ++t) {
          std::vector<float> kv(k.begin() + t * kHd, k.begin() + (t + 1) * kHd);
          kv.insert(kv.end(), v.begin() + t * kHd, v.begin() + (t + 1) * kHd);
          const int32_t key = pos[t] * kHeads + h;
          auto [it, fresh] = first_seen.emplace(key, kv);
          if (!fresh) {
            ASSERT_EQ(it->second, kv) << "position " << pos[t] << " head " << h << " changed at step " << i;
            ++checked;
          }
        }
      }
    }
    EXPECT_GT(checked, 1000);
    const EvictionStats es = d.cache->eviction_stats();
    // Recall: blocks went to host memory and came back with the same bytes.
    if (std::string(policy).ends_with(":recall")) {
      EXPECT_GT(es.fetched, 10);
    }
    EXPECT_GT(es.blocks_dropped, 5);
    EXPECT_EQ(es.sealed_reencoded, 0);
    // After the prompt no token is copied: only the prompt's cut moved tokens.
    EXPECT_LE(es.compactions, kLayers * kHeads);
  }
}

// Re-indexing policies attend to sinks and window as if contiguous
// (StreamingLLM's positions), whether keys are stored after RoPE (the query is
// rotated back for the sinks) or before (positions are slots).
TEST(EvictionTest, SinksAttendAsIfContiguous) {
  for (const char* k_format : {"f32", "f32:pre"}) {
    SCOPED_TRACE(k_format);
    KvConfig c = Config("fp32");
    c.k = *ParseFormat(k_format, true);
    Driver d(Spec(true), c, "sinks:sinks=4", 48);
    d.reindexing = true;
    d.stored_pre_rope = c.k.pre_rope;
    d.Step(20, false, 0);
    d.cache->Compress(d.seq);
    for (int i = 0; i < 200; ++i) d.Step(1, true, 2e-4f);
    // The sinks are still there.
    const std::vector<int32_t> pos = d.cache->HeldPositions(d.seq, 0, 0);
    EXPECT_EQ(pos[0], 0);
    EXPECT_EQ(pos[3], 3);
    EXPECT_GT(pos[4], 100);
  }
}

// A streaming policy holds constant memory however long the sequence runs.
TEST(EvictionTest, StreamingPolicyHoldsConstantMemory) {
  Driver d(Spec(true), Config("int4"), "sinks", 64);
  d.Step(8, false, 0);
  d.cache->Compress(d.seq);
  size_t most = 0;
  for (int i = 0; i < 2000; ++i) {
    d.Step(1, false, 0);
    // Bytes move with the open block and sealing; after the budget fills, never
    // above the most of an early stretch.
    if (i >= 200 && i < 400) most = std::max(most, d.cache->bytes_in_use());
    if (i >= 400) ASSERT_LE(d.cache->bytes_in_use(), most) << "step " << i;
  }
  EXPECT_EQ(d.cache->Length(d.seq), 2008);
  EXPECT_LE(d.cache->Slots(d.seq, 0, 0), 64 + 16 + 1);
}

// Expected Attention scores keys in the queries' domain: a rotated key format
// (rotation is exact in f32) makes the same choices as the unrotated one.
TEST(EvictionTest, ExpectedAttentionIgnoresTheKeyRotation) {
  KvConfig plain = Config("fp32"), rotated = plain;
  rotated.k = *ParseFormat("f32:rot", true);
  Driver a(Spec(true), plain, "expected", 48), b(Spec(true), rotated, "expected", 48);
  for (Driver* d : {&a, &b}) {
    d->Step(120, false, 0);
    d->cache->Compress(d->seq);
    for (int i = 0; i < 100; ++i) d->Step(1, false, 0);
  }
  int differ = 0;
  for (int l = 0; l < kLayers; ++l)
    for (int h = 0; h < kHeads; ++h)
      differ += a.cache->HeldPositions(a.seq, l, h) != b.cache->HeldPositions(b.seq, l, h);
  EXPECT_EQ(differ, 0);
}

// Ada-KV: heads of a layer end with unequal shares of its budget, and after the
// prompt a stream is cut only when the layer has gained a block per head (not
// at every step).
TEST(EvictionTest, AdaKvUnequalHeadsWithoutPerStepRewrites) {
  Driver d(Spec(true), Config("int4"), "adakv:knorm", 64);
  d.Step(200, false, 0);
  d.cache->Compress(d.seq);
  const EvictionStats before = d.cache->eviction_stats();
  int unequal = 0;
  for (int i = 0; i < 256; ++i) {
    d.Step(1, false, 0);
    for (int l = 0; l < kLayers; ++l) unequal += d.cache->Slots(d.seq, l, 0) != d.cache->Slots(d.seq, l, 1);
  }
  EXPECT_GT(unequal, 0);
  const EvictionStats after = d.cache->eviction_stats();
  EXPECT_EQ(after.compactions,
            before.compactions);  // no token-level rewrite after the prompt
  // 256 steps add 16 blocks per stream; a pass frees at least a block.
  EXPECT_LE(after.block_passes - before.block_passes, kLayers * kHeads * 256 / 16);
  EXPECT_EQ(after.sealed_reencoded, 0);
}

// `:merge` folds evicted values into kept ones: a kept token's value changes to
// the mass-weighted mean, and only the receivers' values are written.
TEST(EvictionTest, MergeChangesKeptValues) {
  Driver d(Spec(false), Config("fp32"), "h2o:merge", 32);
  d.Step(10, false, 0);
  d.cache->Compress(d.seq);
  std::map<int32_t, std::vector<float>> values;
  int changed = 0;
  for (int i = 0; i < 120; ++i) {
    d.Step(1, i % 5 == 0, 2e-4f);
    const int n = d.cache->Slots(d.seq, 0, 0);
    std::vector<float> k(n * kHd), v(n * kHd);
    ASSERT_TRUE(d.cache->ReadTokens(d.seq, 0, 0, 0, n, k.data(), v.data()).ok());
    const std::vector<int32_t> pos = d.cache->HeldPositions(d.seq, 0, 0);
    for (int t = 0; t < n; ++t) {
      std::vector<float> vt(v.begin() + t * kHd, v.begin() + (t + 1) * kHd);
      auto [it, fresh] = values.emplace(pos[t], vt);
      if (!fresh && it->second != vt) ++changed, it->second = vt;
    }
  }
  EXPECT_GT(changed, 0);
  EXPECT_GT(d.cache->eviction_stats().merged, 0);
}

// `expected` weighs a token by |v|, remembered at append: a receiver of `:merge` has a
// new value, and its |v| follows it (token-level compaction at the prompt's end, block
// cuts after), on a plain and a rotated value format.
TEST(EvictionTest, MergedValuesAreScoredAgain) {
  for (const char* vformat : {"f32", "f32:rot"}) {
    SCOPED_TRACE(vformat);
    KvConfig config = Config("fp32");
    config.v = *ParseFormat(vformat, false);
    Driver d(Spec(true), config, "expected:merge", 32);
    auto check = [&](const char* when) {
      for (int l = 0; l < kLayers; ++l)
        for (int h = 0; h < kHeads; ++h) {
          const int n = d.cache->Slots(d.seq, l, h);
          std::vector<float> k(n * kHd), v(n * kHd);
          ASSERT_TRUE(d.cache->ReadTokens(d.seq, l, h, 0, n, k.data(), v.data(), true).ok());
          const std::vector<float> score = d.cache->HeldScores(d.seq, l, h);
          ASSERT_EQ(static_cast<int>(score.size()), n);
          for (int t = 0; t < n; ++t) {
            double norm = 0;
            for (int x = 0; x < kHd; ++x) norm += static_cast<double>(v[t * kHd + x]) * v[t * kHd + x];
            ASSERT_NEAR(score[t], std::sqrt(norm), 1e-4 * (1 + std::sqrt(norm)))
                << when << ", layer " << l << " head " << h << " token " << t;
          }
        }
    };
    d.Step(100, false, 0);
    d.cache->Compress(d.seq);
    ASSERT_GT(d.cache->eviction_stats().merged, 0);
    check("after the prompt");
    const int64_t merged = d.cache->eviction_stats().merged;
    for (int i = 0; i < 100; ++i) d.Step(1, false, 0);
    ASSERT_GT(d.cache->eviction_stats().merged, merged);
    check("after decoding");
  }
}

// Recall: a block the policy evicted sits in host memory and comes back when a
// query wants it. knorm evicts the keys with the largest norms, so the "needle"
// (a block-aligned run of large keys along one direction) leaves in the prompt;
// decode queries along that direction fetch it back at the first step, the bytes
// unchanged; the next step with the same query finds it fetched (a hit). Without
// recall it stays gone. With host memory bounded to two blocks per stream
// (`host=2`) and the prompt's queries along the needle's direction, the host
// blocks each stream keeps are the two the needle's tokens were packed into: the
// others, bounded lower by the newest query, are dropped.
TEST(EvictionTest, RecallFetchesTheBlockTheQueryWants) {
  using Needle = testing::RecallNeedle;
  constexpr int kPrompt = 256, kBudget = 64;
  static_assert(Needle::kHd == kHd && Needle::kHeads == kHeads && Needle::kGroup == kGroup &&
                Needle::kLayers == kLayers);
  for (const char* preset : {"fp32", "int4", "tq4"}) {
    for (const char* policy : {"knorm", "knorm:recall:fetch=2", "knorm:recall:fetch=2:host=2"}) {
      SCOPED_TRACE(std::string(preset) + " " + policy);
      const bool recall = std::string(policy).find(":recall") != std::string::npos;
      const bool bounded = std::string(policy).ends_with(":host=2");
      auto c = KvCache::Create(Spec(false), Config(preset), 64 << 20);
      ASSERT_TRUE(c.ok());
      KvCache& cache = **c;
      ASSERT_TRUE(cache.SetPolicy(*ParsePolicy(policy, kBudget)).ok());
      const SeqId seq = cache.AddSequence();
      Needle needle(cache, seq);
      needle.Step(kPrompt, 0, bounded ? 1 : 0);
      cache.Compress(seq);
      EXPECT_EQ(needle.Held(1, 1), 0) << "knorm keeps the needle";
      if (bounded) {  // two host blocks per stream are left
        const EvictionStats e = cache.eviction_stats();
        EXPECT_GT(e.host_dropped, 0);
        EXPECT_EQ(e.offloaded - e.host_dropped - e.fetched, 2 * kLayers * kHeads);
      }
      needle.Step(1, kPrompt, 1);
      if (!recall) {
        EXPECT_EQ(needle.Held(1, 1), 0);
        continue;
      }
      EXPECT_EQ(needle.Held(1, 1), 16);
      const EvictionStats first = cache.eviction_stats();
      EXPECT_GE(first.offloaded, kLayers * kHeads * 8);
      EXPECT_GE(first.fetched, kLayers * kHeads);
      EXPECT_GE(first.fetch_missed, kLayers * kHeads);  // wanted at the first step, still in host memory
      EXPECT_GT(first.host_bytes, 0);
      // The fetched blocks hold the needle's keys as the format stored them (position -> key, value).
      const auto fetched = needle.Tokens(1, 1);
      ASSERT_EQ(fetched.size(), 16u);
      const std::vector<float>& dir = needle.dir();
      for (const auto& [p, x] : fetched) {
        double dot = 0, nk = 0, nn = 0;
        for (int d = 0; d < kHd; ++d) dot += x[d] * dir[d], nk += x[d] * x[d], nn += dir[d] * dir[d];
        EXPECT_GT(dot / std::sqrt(nk * nn), 0.9) << "position " << p;
      }
      needle.Step(1, kPrompt + 1, 1);
      const EvictionStats second = cache.eviction_stats().Since(first);
      EXPECT_GE(second.fetch_used, kLayers * kHeads);  // the prediction held: a hit per stream
      if (bounded) {
        const EvictionStats e = cache.eviction_stats();
        EXPECT_LE(e.offloaded - e.host_dropped - e.fetched, 2 * kLayers * kHeads);
      }
      EXPECT_EQ(needle.Tokens(1, 1), fetched);  // the same bytes, not quantized again
      cache.RemoveSequence(seq);
      EXPECT_EQ(cache.eviction_stats().host_bytes, 0);
      cache.CheckInvariants();
    }
  }
}

// Recall in a prompt evicted over several token-level passes (chunks of 23 against a bound of
// twice the budget): a pass's evicted tokens short of a block wait for the next pass instead of
// being lost, so every evicted token is offloaded but for fewer than a block per stream when the
// prompt ends.
TEST(EvictionTest, RecallCarriesAPassRemainderToTheNextPass) {
  constexpr int kStreams = kLayers * kHeads, kBlock = 16;
  for (const char* preset : {"fp32", "int4"}) {
    SCOPED_TRACE(preset);
    Driver d(Spec(false), Config(preset, kBlock), "h2o:recall", 64);
    for (int i = 0; i < 22; ++i) d.Step(23, false, 0);
    d.cache->Compress(d.seq);
    d.cache->CheckInvariants();
    const EvictionStats e = d.cache->eviction_stats();
    EXPECT_GE(e.compactions, 3 * kStreams) << "the prompt was not evicted over several passes";
    EXPECT_EQ(e.offloaded * kBlock + e.offload_lost, e.tokens_evicted);
    EXPECT_LT(e.offload_lost, kBlock * kStreams);
  }
}

}  // namespace
}  // namespace slimkv::kv
