// A small deterministic model behind the scheduler's step interface, so scheduler tests run without the 98 MB
// one: per token and layer, keys, values and queries are pseudo-random functions of (token, position);
// attention goes through the real KV cache; the logits are a fixed projection of the last layer's attention
// output, so what the cache keeps changes them.
#pragma once

#include <cmath>
#include <random>
#include <vector>

#include "base/check.h"
#include "engine/step_model.h"
#include "kv/format.h"

namespace slimkv::testing {

class FakeModel : public engine::StepModel {
 public:
  static constexpr int kLayers = 2, kKvHeads = 2, kQHeads = 4, kHd = 16, kVocab = 64;

  FakeModel() : w_(static_cast<size_t>(kVocab) * kQHeads * kHd) {
    std::mt19937 rng(3);
    std::normal_distribution<float> nd;
    for (float &x : w_) x = nd(rng);
  }

  static kv::KvSpec Spec() {
    kv::KvSpec s{.n_layers = kLayers,
                 .n_kv_heads = kKvHeads,
                 .n_q_heads = kQHeads,
                 .head_dim = kHd,
                 .max_context = 1 << 20,
                 .rope_dim = kHd};
    std::vector<float> f(kHd / 2);
    for (int i = 0; i < kHd / 2; ++i) f[i] = static_cast<float>(std::pow(10000.0, -2.0 * i / kHd));
    s.layer_inv_freq.assign(kLayers, f);
    return s;
  }

  int vocab_size() const override { return kVocab; }
  int forward_calls = 0;

  Status Forward(ThreadPool &pool, kv::KvCache &kv, std::span<const model::BatchEntry> batch,
                 std::vector<float> *logits) override {
    ++forward_calls;
    const std::vector<kv::StepChunk> chunks = model::StepChunks(batch);
    for (const model::BatchEntry &e : batch) {
      for (int32_t t : e.tokens) {
        if (t < 0 || t >= kVocab) return InvalidArgument("token id {} is out of range", t);
      }
    }
    CHECK(kv.StepReserved(chunks), "the fake model ran a batch whose slots are not reserved");
    int64_t rows = 0;
    for (const auto &c : chunks) rows += c.n_tokens;
    const int kw = kKvHeads * kHd, qw = kQHeads * kHd;
    std::vector<float> k(rows * kw), v(rows * kw), q(rows * qw), out(rows * qw);
    for (int l = 0; l < kLayers; ++l) {
      int64_t r = 0;
      for (const model::BatchEntry &e : batch) {
        const int64_t p0 = kv.NextPosition(e.seq);
        for (size_t i = 0; i < e.tokens.size(); ++i, ++r) {
          std::mt19937 rng(static_cast<uint32_t>(e.tokens[i] * 131 + l * 7 + 1));
          std::normal_distribution<float> nd;
          for (int j = 0; j < kw; ++j) k[r * kw + j] = nd(rng), v[r * kw + j] = nd(rng);
          for (int j = 0; j < qw; ++j) q[r * qw + j] = nd(rng);
          // A position-dependent nudge (RoPE on the query, as a model applies it).
          std::vector<float> c(kHd / 2), s(kHd / 2);
          ops::RopeAngles(p0 + static_cast<int64_t>(i), Spec().layer_inv_freq[l], c.data(), s.data());
          ops::RopeApply(&q[r * qw], kQHeads, kHd, kHd, c.data(), s.data(), ops::RopeStyle::kNormal);
        }
      }
      kv.Append(l, chunks, k.data(), kw, v.data(), kw);
      kv.Attend(pool, l, chunks, q.data(), qw, out.data(), qw, 0.25f);
    }
    kv.EndStep(chunks);
    logits->clear();
    int64_t r = 0;
    for (const model::BatchEntry &e : batch) {
      for (int64_t i = 0; i < static_cast<int64_t>(e.tokens.size()); ++i, ++r) {
        if (i < e.first_logit()) continue;
        for (int t = 0; t < kVocab; ++t) {
          double z = 0;
          for (int j = 0; j < qw; ++j) z += static_cast<double>(w_[t * qw + j]) * out[r * qw + j];
          logits->push_back(static_cast<float>(z));
        }
      }
    }
    return Status::Ok();
  }

 private:
  std::vector<float> w_;  // [vocab][q_dim]
};

// A prompt of n tokens of the fake model's vocabulary, a function of seed.
inline std::vector<engine::TokenId> RandomPrompt(int n, int seed) {
  std::mt19937 rng(seed);
  std::vector<engine::TokenId> t(n);
  for (auto &x : t) x = static_cast<engine::TokenId>(rng() % FakeModel::kVocab);
  return t;
}

// int4 KV in 16-token blocks with a one-block residual window: sealing and staging within a
// few dozen tokens.
inline kv::KvConfig SmallInt4Config() {
  kv::KvConfig c = *kv::ParsePreset("int4");
  c.block_tokens = 16;
  if (c.residual > 0) c.residual = 16;
  return c;
}

}  // namespace slimkv::testing
