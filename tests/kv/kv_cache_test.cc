#include "kv/kv_cache.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "base/half.h"
#include "test_util.h"

namespace slimkv::kv {
namespace {

// Naive causal attention over contiguous fp32 K/V of one sequence: the bottom rung.
// k, v: [n_tokens][n_kv_heads][hd]; q: [n_q][n_q_heads][hd] for the last n_q tokens.
std::vector<float> NaiveAttention(const KvSpec& s, const std::vector<float>& k,
                                  const std::vector<float>& v, const std::vector<float>& q,
                                  int n_tokens, int n_q, float scale, int window = 0) {
  const int hd = s.head_dim, G = s.group_size(), Hq = s.n_q_heads, Hk = s.n_kv_heads;
  std::vector<float> out(n_q * Hq * hd, 0.0f);
  for (int i = 0; i < n_q; ++i) {
    const int pos = n_tokens - n_q + i;
    for (int h = 0; h < Hq; ++h) {
      const int kh = h / G;
      std::vector<double> sc(pos + 1, -1e300);
      double m = -1e300;
      const int lo = window > 0 ? std::max(0, pos - window + 1) : 0;
      for (int j = lo; j <= pos; ++j) {
        double dot = 0;
        for (int d = 0; d < hd; ++d) dot += q[(i * Hq + h) * hd + d] * k[(j * Hk + kh) * hd + d];
        sc[j] = dot * scale;
        m = std::max(m, sc[j]);
      }
      double l = 0;
      for (int j = lo; j <= pos; ++j) l += (sc[j] = std::exp(sc[j] - m));
      for (int d = 0; d < hd; ++d) {
        double acc = 0;
        for (int j = lo; j <= pos; ++j) acc += sc[j] * v[(j * Hk + kh) * hd + d];
        out[(i * Hq + h) * hd + d] = static_cast<float>(acc / l);
      }
    }
  }
  return out;
}

float RoundF16(float x) { return HalfToFloat(FloatToHalf(x)); }

TEST(KvCacheTest, PrefillThenDecodeMatchesNaiveAttention) {
  const KvSpec spec{.n_layers = 2, .n_kv_heads = 3, .n_q_heads = 9, .head_dim = 64, .max_context = 4096};
  for (const char* preset : {"fp32", "fp16"}) {
    SCOPED_TRACE(preset);
    auto config = ParsePreset(preset);
    ASSERT_TRUE(config.ok());
    auto cache_or = KvCache::Create(spec, *config, 64 << 20);
    ASSERT_TRUE(cache_or.ok()) << cache_or.status().ToString();
    KvCache& cache = **cache_or;
    ThreadPool pool(2);
    // Two sequences of different lengths in the same steps.
    const SeqId a = cache.AddSequence(), b = cache.AddSequence();
    const int width = spec.n_kv_heads * spec.head_dim, qwidth = spec.n_q_heads * spec.head_dim;
    std::vector<float> ka, va, kb, vb;  // contiguous history per sequence (layer 1 only)
    std::mt19937_64 rng(5);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    const bool f16 = std::string(preset) == "fp16";
    const float scale = 0.125f;
    for (int step = 0; step < 6; ++step) {
      const int na = step == 0 ? 45 : 1, nb = step == 0 ? 70 : (step == 3 ? 33 : 1);
      const StepChunk chunks[] = {{a, na, 0}, {b, nb, na}};
      const int rows = na + nb;
      std::vector<float> k(rows * width), v(rows * width), q(rows * qwidth), out(rows * qwidth);
      for (auto* vec : {&k, &v, &q})
        for (auto& x : *vec) x = nd(rng);
      ASSERT_TRUE(cache.BeginStep(chunks).ok());
      for (int layer = 0; layer < 2; ++layer) {
        cache.Append(layer, chunks, k.data(), width, v.data(), width);
        cache.Attend(pool, layer, chunks, q.data(), qwidth, out.data(), qwidth, scale);
      }
      cache.EndStep(chunks);
      cache.CheckInvariants();
      for (int r = 0; r < rows; ++r) {
        auto& kh = r < na ? ka : kb;
        auto& vh = r < na ? va : vb;
        for (int j = 0; j < width; ++j) {
          kh.push_back(f16 ? RoundF16(k[r * width + j]) : k[r * width + j]);
          vh.push_back(f16 ? RoundF16(v[r * width + j]) : v[r * width + j]);
        }
      }
      const int len_a = static_cast<int>(ka.size() / width), len_b = static_cast<int>(kb.size() / width);
      EXPECT_EQ(cache.Length(a), len_a);
      EXPECT_EQ(cache.Length(b), len_b);
      const std::vector<float> qa(q.begin(), q.begin() + na * qwidth), qb(q.begin() + na * qwidth, q.end());
      const auto want_a = NaiveAttention(spec, ka, va, qa, len_a, na, scale);
      const auto want_b = NaiveAttention(spec, kb, vb, qb, len_b, nb, scale);
      for (int i = 0; i < na * qwidth; ++i) ASSERT_NEAR(out[i], want_a[i], 1e-4) << "step " << step;
      for (int i = 0; i < nb * qwidth; ++i) ASSERT_NEAR(out[na * qwidth + i], want_b[i], 1e-4) << "step " << step;
    }
    const KvUsage u = cache.SequenceUsage(a);
    EXPECT_EQ(u.tokens, 50);
    EXPECT_EQ(u.bytes_data + u.bytes_meta + u.bytes_waste, u.bytes_allocated);
    EXPECT_EQ(u.bytes_data, cache.DataBytesPerToken() * 50);
    EXPECT_EQ(cache.DataBytesPerToken(), static_cast<size_t>(2 * 3 * 64 * 2 * (f16 ? 2 : 4)));
    cache.RemoveSequence(a);
    cache.RemoveSequence(b);
    cache.CheckInvariants();
    EXPECT_EQ(cache.blocks_in_use(), 0);
  }
}

TEST(KvCacheTest, WindowLayersAttendInTheirWindowAndFreeOldBlocks) {
  // Layer 0 global, layer 1 a window of 40 tokens (MQA: one KV head for four query heads).
  const KvSpec spec{.n_layers = 2, .n_kv_heads = 1, .n_q_heads = 4, .head_dim = 32, .max_context = 4096,
                    .layer_window = {0, 40}};
  KvConfig config = *ParsePreset("fp32");
  config.block_tokens = 16;
  auto cache_or = KvCache::Create(spec, config, 8 << 20);
  ASSERT_TRUE(cache_or.ok()) << cache_or.status().ToString();
  KvCache& cache = **cache_or;
  ThreadPool pool(2);
  const SeqId s = cache.AddSequence();
  const int width = 32, qwidth = 128;
  std::vector<float> kh, vh;
  std::mt19937_64 rng(9);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (int step = 0; step < 40; ++step) {
    const int n = step == 0 ? 50 : (step % 10 == 0 ? 23 : 1);
    const StepChunk chunk[] = {{s, n, 0}};
    std::vector<float> k(n * width), v(n * width), q(n * qwidth), out(n * qwidth);
    for (auto* vec : {&k, &v, &q})
      for (auto& x : *vec) x = nd(rng);
    ASSERT_TRUE(cache.BeginStep(chunk).ok());
    for (int layer = 0; layer < 2; ++layer) {
      cache.Append(layer, chunk, k.data(), width, v.data(), width);
      cache.Attend(pool, layer, chunk, q.data(), qwidth, out.data(), qwidth, 0.2f);
      if (layer == 1) {
        std::vector<float> kk = kh, vv = vh;
        kk.insert(kk.end(), k.begin(), k.end());
        vv.insert(vv.end(), v.begin(), v.end());
        const auto want = NaiveAttention(spec, kk, vv, q, static_cast<int>(kk.size() / width), n, 0.2f, 40);
        for (size_t i = 0; i < want.size(); ++i) ASSERT_NEAR(out[i], want[i], 1e-4) << "step " << step;
      }
    }
    cache.EndStep(chunk);
    cache.CheckInvariants();
    kh.insert(kh.end(), k.begin(), k.end());
    vh.insert(vh.end(), v.begin(), v.end());
    // The window layer keeps only blocks a future token can still see.
    const int len = cache.Length(s);
    const int first_visible = std::max(0, len - 40 + 1);
    const KvUsage local = cache.LayerUsage(s, 1), global = cache.LayerUsage(s, 0);
    EXPECT_EQ(local.blocks, (len + 15) / 16 - first_visible / 16) << "len " << len;
    EXPECT_EQ(global.blocks, (len + 15) / 16);
    EXPECT_LE(local.tokens, 40 + 15);
  }
  cache.RemoveSequence(s);
  cache.CheckInvariants();
  EXPECT_EQ(cache.blocks_in_use(), 0);
}

TEST(KvCacheTest, ExhaustedPoolIsAnErrorAndChangesNothing) {
  const KvSpec spec{.n_layers = 2, .n_kv_heads = 1, .n_q_heads = 1, .head_dim = 16, .max_context = 100};
  auto config = ParsePreset("fp32");
  ASSERT_TRUE(config.ok());
  // Block = 32 tokens * 16 * 4 bytes * 2 (K, V) = 4 KiB; budget of 5 blocks.
  auto cache_or = KvCache::Create(spec, *config, 5 * 4096);
  ASSERT_TRUE(cache_or.ok());
  KvCache& cache = **cache_or;
  const SeqId s = cache.AddSequence();
  const StepChunk ok_step[] = {{s, 64, 0}};  // 2 blocks x 2 streams
  ASSERT_TRUE(cache.BeginStep(ok_step).ok());
  cache.EndStep(ok_step);
  const StepChunk too_big[] = {{s, 64, 0}};  // needs 4 more, 1 free
  const Status st = cache.BeginStep(too_big);
  EXPECT_EQ(st.code(), StatusCode::kResourceExhausted);
  EXPECT_NE(st.message().find("KV pool exhausted"), std::string::npos) << st.message();
  EXPECT_EQ(cache.Length(s), 64);
  EXPECT_EQ(cache.blocks_in_use(), 4);
  cache.CheckInvariants();
  const StepChunk twice[] = {{s, 1, 0}, {s, 1, 1}};
  EXPECT_EQ(cache.BeginStep(twice).code(), StatusCode::kInvalidArgument);
  const StepChunk unknown[] = {{42, 1, 0}};
  EXPECT_EQ(cache.BeginStep(unknown).code(), StatusCode::kInvalidArgument);
}

TEST(KvCacheTest, RejectsBadSpecsAndConfigs) {
  auto config = ParsePreset("fp16");
  ASSERT_TRUE(config.ok());
  EXPECT_FALSE(KvCache::Create(KvSpec{.n_layers = 1, .n_kv_heads = 2, .n_q_heads = 3, .head_dim = 64}, *config, 1 << 20).ok());
  EXPECT_FALSE(KvCache::Create(KvSpec{.n_layers = 1, .n_kv_heads = 1, .n_q_heads = 1, .head_dim = 60}, *config, 1 << 20).ok());
  EXPECT_FALSE(KvCache::Create(KvSpec{.n_layers = 1, .n_kv_heads = 1, .n_q_heads = 1, .head_dim = 64}, *config, 10).ok());
  KvConfig odd = *config;
  odd.block_tokens = 20;
  EXPECT_FALSE(KvCache::Create(KvSpec{.n_layers = 1, .n_kv_heads = 1, .n_q_heads = 1, .head_dim = 64}, odd, 1 << 20).ok());
  const auto bad = ParsePreset("int5");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("fp16"), std::string::npos);
}

}  // namespace
}  // namespace slimkv::kv
