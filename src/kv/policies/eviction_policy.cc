#include "kv/policies/eviction_policy.h"

#include <algorithm>
#include <cmath>

namespace slimkv::kv {
namespace {

// Scores every token by one of its statistics.
std::vector<float>& ScoreBy(std::span<const float> stat, int n, std::vector<float>* score) {
  score->assign(n, 0.0f);
  if (!stat.empty()) std::copy(stat.begin(), stat.end(), score->begin());
  return *score;
}

// window: the last `budget` tokens (StreamingLLM without sinks).
class WindowPolicy : public EvictionPolicy {
 public:
  using EvictionPolicy::EvictionPolicy;
  void Score(const StreamView& v, std::vector<float>* score) const override {
    score->resize(v.size());
    for (int i = 0; i < v.size(); ++i) (*score)[i] = static_cast<float>(v.positions[i]);  // newer keeps
  }
  int recent(int budget) const override { return budget - sinks(); }
};

// sinks: the first S tokens and the last budget - S (StreamingLLM).
class SinksPolicy : public WindowPolicy {
 public:
  using WindowPolicy::WindowPolicy;
  int sinks() const override { return spec_.sinks; }
};

// h2o: heavy hitters by accumulated attention mass, and a recent window (H2O).
class H2OPolicy : public EvictionPolicy {
 public:
  using EvictionPolicy::EvictionPolicy;
  bool wants_attention() const override { return true; }
  void ObserveAttention(TokenStats& s, std::span<const float> w,
                        std::span<const float> newest) const override {
    for (size_t i = 0; i < w.size(); ++i) s.mass[i] += w[i];
  }
  void Score(const StreamView& v, std::vector<float>* score) const override {
    ScoreBy(v.mass, v.size(), score);
  }
  int recent(int budget) const override {
    return budget - static_cast<int>(std::lround(budget * spec_.heavy_share));
  }
};

// tova: the tokens the newest query attends to least leave first (TOVA).
class TovaPolicy : public EvictionPolicy {
 public:
  using EvictionPolicy::EvictionPolicy;
  bool wants_attention() const override { return true; }
  void ObserveAttention(TokenStats& s, std::span<const float> w,
                        std::span<const float> newest) const override {
    for (size_t i = 0; i < w.size(); ++i) s.mass[i] += w[i];
    std::copy(newest.begin(), newest.end(), s.last_mass.begin());
  }
  void Score(const StreamView& v, std::vector<float>* score) const override {
    ScoreBy(v.last_mass, v.size(), score);
  }
  int recent(int) const override { return 0; }
};

// snapkv: the attention of an observation window (the prompt's last tokens; a
// decode step's token), pooled over neighbouring positions so a kept token
// brings its context (SnapKV).
class SnapKvPolicy : public EvictionPolicy {
 public:
  using EvictionPolicy::EvictionPolicy;
  bool wants_attention() const override { return true; }
  int observed_tokens() const override { return spec_.obs_window; }
  // Only the latest observation window counts.
  void ObserveAttention(TokenStats& s, std::span<const float> w,
                        std::span<const float> newest) const override {
    std::copy(w.begin(), w.end(), s.mass.begin());
  }
  void Score(const StreamView& v, std::vector<float>* score) const override {
    const int n = v.size(), r = spec_.pool_kernel / 2;
    score->assign(n, 0.0f);
    if (v.mass.empty()) return;
    for (int i = 0; i < n; ++i) {
      float m = 0;
      for (int j = std::max(0, i - r); j <= std::min(n - 1, i + r); ++j) m = std::max(m, v.mass[j]);
      (*score)[i] = m;
    }
  }
};

// knorm: keys with the smallest norm draw the most attention; keep those.
class KnormPolicy : public EvictionPolicy {
 public:
  using EvictionPolicy::EvictionPolicy;
  float OnAppend(const float* key, const float*, int hd) const override {
    double norm = 0;
    for (int d = 0; d < hd; ++d) norm += static_cast<double>(key[d]) * key[d];
    return -static_cast<float>(std::sqrt(norm));
  }
  void Score(const StreamView& v, std::vector<float>* score) const override {
    ScoreBy(v.score, v.size(), score);
  }
};

// expected: Expected Attention (Devoto et al., 2025; KVPress's ExpectedAttentionPress).
// Each query head's future queries are modelled as a Gaussian with the moments of its recent
// ones, q ~ N(mean, diag(var)); a key's expected logit under head g is
// z_g = c mean_g.k + c^2/2 sum_d var_g,d k_d^2 (c = 1/sqrt(d), log E[exp(q.k c)]), the
// head's expected attention is softmax_t(z_g), the group's is the mean over its heads, and
// the score is that times |v| (what the token adds to the output). Heads keep their own
// moments: the mean query of several heads is no head's query, and a needle one head
// retrieves would be averaged away. Queries and keys are taken after RoPE and unrotated, so
// the moments and the keys live in one domain whatever the format stores (rotated formats
// are unrotated when the cache reads keys back).
class ExpectedPolicy : public EvictionPolicy {
 public:
  using EvictionPolicy::EvictionPolicy;
  bool wants_queries() const override { return true; }
  bool wants_keys() const override { return true; }
  // The first tokens stay (KVPress's n_sink = 4): the attention sink draws mass no moment of
  // the queries predicts, and losing it costs more than any other token.
  int sinks() const override { return spec_.sinks; }
  float OnAppend(const float* key, const float* value, int hd) const override {
    double norm = 0;
    for (int d = 0; d < hd; ++d) norm += static_cast<double>(value[d]) * value[d];
    return static_cast<float>(std::sqrt(norm));
  }
  bool scores_value() const override { return true; }
  void ObserveQueries(TokenStats& s, const float* q, int64_t ldq, int n_tokens, int group,
                      int hd) const override {
    // Exponential moving moments, a short memory: future queries resemble recent ones.
    const size_t m = static_cast<size_t>(group) * hd;
    if (s.q_mean.size() != m) s.q_mean.assign(m, 0.0f), s.q_sq.assign(m, 0.0f);
    for (int i = 0; i < n_tokens; ++i) {
      const double w = std::max(1.0 / static_cast<double>(s.q_count + 1 + i), 1.0 / 64.0);
      const float* x = q + i * ldq;
      for (size_t j = 0; j < m; ++j) {
        s.q_mean[j] = static_cast<float>((1 - w) * s.q_mean[j] + w * x[j]);
        s.q_sq[j] = static_cast<float>((1 - w) * s.q_sq[j] + w * x[j] * x[j]);
      }
    }
    s.q_count += n_tokens;
  }
  void Score(const StreamView& v, std::vector<float>* score) const override {
    const int n = v.size(), hd = v.head_dim;
    score->assign(n, 0.0f);
    if (n == 0 || v.keys.empty() || !v.stats || v.stats->q_mean.empty()) return;
    const int group = static_cast<int>(v.stats->q_mean.size()) / hd;
    const double c = 1.0 / std::sqrt(static_cast<double>(hd));
    std::vector<double> z(n), attn(n, 0.0), var(hd);
    for (int g = 0; g < group; ++g) {
      const float* mean = v.stats->q_mean.data() + static_cast<size_t>(g) * hd;
      const float* sq = v.stats->q_sq.data() + static_cast<size_t>(g) * hd;
      for (int d = 0; d < hd; ++d)
        var[d] = std::max(0.0, static_cast<double>(sq[d]) - static_cast<double>(mean[d]) * mean[d]);
      double top = -INFINITY;
      for (int t = 0; t < n; ++t) {
        const float* k = v.keys.data() + static_cast<size_t>(t) * hd;
        double e = 0;
        for (int d = 0; d < hd; ++d) e += c * mean[d] * k[d] + 0.5 * c * c * var[d] * k[d] * k[d];
        z[t] = e;
        top = std::max(top, e);
      }
      double sum = 0;
      for (int t = 0; t < n; ++t) sum += (z[t] = std::exp(z[t] - top));
      for (int t = 0; t < n; ++t) attn[t] += z[t] / sum;
    }
    for (int t = 0; t < n; ++t) {
      const double vnorm = v.score.empty() ? 1.0 : v.score[t];
      (*score)[t] = static_cast<float>(attn[t] / group * vnorm);
    }
  }
};

}  // namespace

std::unique_ptr<EvictionPolicy> EvictionPolicy::Create(const PolicySpec& p) {
  switch (p.kind) {
    case PolicyKind::kNone:
      return nullptr;
    case PolicyKind::kWindow:
      return std::unique_ptr<EvictionPolicy>(new WindowPolicy(p));
    case PolicyKind::kSinks:
      return std::unique_ptr<EvictionPolicy>(new SinksPolicy(p));
    case PolicyKind::kH2O:
      return std::unique_ptr<EvictionPolicy>(new H2OPolicy(p));
    case PolicyKind::kTova:
      return std::unique_ptr<EvictionPolicy>(new TovaPolicy(p));
    case PolicyKind::kSnapKv:
      return std::unique_ptr<EvictionPolicy>(new SnapKvPolicy(p));
    case PolicyKind::kKnorm:
      return std::unique_ptr<EvictionPolicy>(new KnormPolicy(p));
    case PolicyKind::kExpected:
      return std::unique_ptr<EvictionPolicy>(new ExpectedPolicy(p));
  }
  return nullptr;
}

void EvictionPolicy::ObserveAttention(TokenStats& s, std::span<const float> w, std::span<const float>) const {
  for (size_t i = 0; i < w.size(); ++i) s.mass[i] += w[i];  // merging weighs values by mass
}

int EvictionPolicy::recent(int budget) const {
  return spec_.recent > 0 ? spec_.recent : std::max(1, budget / 8);
}

void EvictionPolicy::MustKeep(const StreamView& v, int budget, std::vector<uint8_t>* keep) const {
  const int n = v.size();
  keep->assign(n, 0);
  for (int i = std::max(0, n - v.protect_tail); i < n; ++i) (*keep)[i] = 1;
  for (int i = 0; i < std::min(n, sinks()); ++i) (*keep)[i] = 1;
  for (int i = std::max(0, n - std::max(0, recent(budget))); i < n; ++i) (*keep)[i] = 1;
}

}  // namespace slimkv::kv
