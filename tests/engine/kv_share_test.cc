// Cross-layer KV sharing (model/kv_share.h, engine/kv_sharer.h): the map's
// rules, a cache that really holds fewer layers, layers before the first
// sharing one untouched, and the KVSharer search.
#include "model/kv_share.h"

#include <gtest/gtest.h>

#include <cmath>

#include "engine/engine.h"
#include "engine/kv_sharer.h"
#include "test_util.h"

namespace slimkv {
namespace {

model::ModelConfig Config(std::vector<int> windows) {
  model::ModelConfig c;
  c.n_layers = static_cast<int>(windows.size());
  c.layer_window = windows;
  c.layer_rope_base.assign(c.n_layers, 10000.0f);
  c.layer_rope_scaling.assign(c.n_layers, {});
  return c;
}

TEST(KvShareTest, MapsFollowTheRules) {
  const model::ModelConfig c = Config({0, 0, 0, 0, 512, 512});
  auto s = model::ParseKvShareMap("2=1,3=1,5=4", c);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ(s->shared(), 3);
  EXPECT_EQ(s->CacheLayers(6), (std::vector<int>{0, 1, 1, 1, 2, 2}));
  EXPECT_EQ(model::KvShareMapString(*s), "2=1,3=1,5=4");
  auto bad = [&](const char *spec, const char *says) {
    auto r = model::ParseKvShareMap(spec, c);
    ASSERT_FALSE(r.ok()) << spec;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find(says), std::string::npos) << r.status().message();
  };
  bad("1=2", "only an earlier layer");
  bad("2=1,3=2", "itself uses layer 1");
  bad("4=3", "sliding window");
  bad("7=1", "outside 0..5");
  bad("2=1,2=0", "named twice");
  bad("2:1", "LAYER=SOURCE");
  EXPECT_TRUE(model::ParseKvShareMap("", c).ok());
}

// With layers 20 and 22 on layer 14's cache: the cache holds 28 layers (2/30 of
// the bytes freed), every layer before 20 computes what the full model computes
// (its cache rows are the same bits), the logits move a little, and int4 with
// eviction still runs.
TEST(KvShareTest, SharingLayersFreeTheirCacheAndChangeNothingBeforeThem) {
  SLIMKV_REQUIRE_MODEL(path, testing::DefaultModelFile());
  engine::EngineOptions o{.model_path = path, .kv = *kv::ParsePreset("fp32"), .n_ctx = 128};
  auto full = engine::Engine::Create(o);
  ASSERT_TRUE(full.ok()) << full.status().ToString();
  o.kv_share = "20=14,22=14";
  auto shared = engine::Engine::Create(o);
  ASSERT_TRUE(shared.ok()) << shared.status().ToString();
  engine::Engine &f = **full;
  engine::Engine &s = **shared;
  EXPECT_EQ(f.kv().spec().n_layers, 30);
  EXPECT_EQ(s.kv().spec().n_layers, 28);
  EXPECT_EQ(s.kv().DataBytesPerToken() * 30, f.kv().DataBytesPerToken() * 28);
  const std::vector<int32_t> ids =
      f.tokenizer().Encode("The quick brown fox jumps over the lazy dog and runs", true, false);
  std::vector<float> lf, ls;
  const kv::SeqId qf = f.kv().AddSequence(), qs = s.kv().AddSequence();
  ASSERT_TRUE(f.Prefill(qf, ids, -1, &lf).ok());
  ASSERT_TRUE(s.Prefill(qs, ids, -1, &ls).ok());
  const int n = static_cast<int>(ids.size()), hd = f.model().config().head_dim;
  std::vector<float> kf(n * hd), vf(n * hd), ks(n * hd), vs(n * hd);
  for (int l = 0; l < 20; ++l) {  // cache layer == model layer below the first sharing layer
    for (int h = 0; h < f.kv().spec().n_kv_heads; ++h) {
      ASSERT_TRUE(f.kv().ReadTokens(qf, l, h, 0, n, kf.data(), vf.data()).ok());
      ASSERT_TRUE(s.kv().ReadTokens(qs, l, h, 0, n, ks.data(), vs.data()).ok());
      EXPECT_EQ(kf, ks) << "layer " << l;
      EXPECT_EQ(vf, vs) << "layer " << l;
    }
  }
  double diff = 0;
  for (size_t i = 0; i < lf.size(); ++i) diff = std::max(diff, static_cast<double>(std::abs(lf[i] - ls[i])));
  EXPECT_GT(diff,
            1e-3);  // the sharing layers do attend over another layer's keys
  // Any format and an eviction policy on top.
  o.kv = *kv::ParsePreset("int4");
  o.policy = *kv::ParsePolicy("h2o", 64);
  auto combined = engine::Engine::Create(o);
  ASSERT_TRUE(combined.ok()) << combined.status().ToString();
  engine::GenerateOptions go{.max_tokens = 8};
  go.sampling.temperature = 0;
  auto g = (*combined)->Generate(ids, go, [](int32_t, const std::string &) { return true; });
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  EXPECT_EQ(g->generated_tokens, 8);
}

TEST(KvShareTest, KvSharerSearchSharesDissimilarLayersAboveTheThreshold) {
  SLIMKV_REQUIRE_MODEL(path, testing::DefaultModelFile());
  auto m = model::Model::Load(path);
  ASSERT_TRUE(m.ok());
  ThreadPool pool(2);
  std::vector<int32_t> text;
  for (int i = 0; i < 600; ++i) text.push_back(1000 + (i * 7919) % 20000);
  engine::KvSharerOptions o{.layers = 3, .threshold = 0.5, .samples = 2, .sample_tokens = 32};
  auto r = engine::SearchKvShare(**m, pool, text, o);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->share.shared(), 3);
  EXPECT_TRUE(model::CheckKvShare(r->share, (*m)->config()).ok());
  ASSERT_EQ(r->accepted_similarity.size(), 3u);
  for (double sim : r->accepted_similarity) EXPECT_GT(sim, 0.5);
  EXPECT_FALSE((*m)->kv_share().active());  // the model is left as it was
  auto again = engine::SearchKvShare(**m, pool, text, o);
  EXPECT_EQ(model::KvShareMapString(again->share), model::KvShareMapString(r->share));
  o.threshold = 1.5;  // not a cosine similarity
  EXPECT_EQ(engine::SearchKvShare(**m, pool, text, o).status().code(), StatusCode::kInvalidArgument);
  o.threshold = 0.5;
  o.layers = 30;
  EXPECT_EQ(engine::SearchKvShare(**m, pool, text, o).status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace slimkv
