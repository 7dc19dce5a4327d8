// TurboQuant: the Lloyd-Max codebooks against the known distortions of N(0, 1), the codec's
// mean squared error on random and outlier-heavy vectors after the Hadamard rotation, bad
// vectors (zero, NaN, Inf), the part layouts and the spec strings.
#include "kv/codecs/turbo_codec.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "base/aligned_buffer.h"
#include "kv/attention.h"
#include "kv/codec.h"
#include "kv/format.h"
#include "kv/kv_cache.h"
#include "base/thread_pool.h"
#include "kv/rotation.h"

namespace slimkv::kv {
namespace {

// E[(X - Q(X))^2] of the Lloyd-Max quantizer of N(0, 1): 1 - 2/pi, and Max (1960, Table
// II) 0.1175, 0.03455, 0.009497 (his 4-bit figure comes from 4-digit levels; iterating to
// convergence gives 0.0095010).
constexpr double kDistortion[] = {0.363380, 0.117482, 0.034548, 0.0095010};

// Expected relative squared error of a tq format: tq_plus quarters of the channels at
// tq_bits + 1 bits, the rest at tq_bits (tq4 has no channels above 4 bits).
double MixedDistortion(const KvFormat& f) {
  const double q = 0.25 * f.tq_plus;
  const double hi = f.tq_plus > 0 ? kDistortion[f.tq_bits] : 0.0;
  return q * hi + (1 - q) * kDistortion[f.tq_bits - 1];
}

TEST(TurboCodebookTest, LloydMaxReproducesTheKnownDistortionsAndLevels) {
  for (int b = 1; b <= 4; ++b) {
    const Codebook& cb = LloydMaxGaussian(b);
    EXPECT_NEAR(cb.distortion, kDistortion[b - 1], 1e-4 * kDistortion[b - 1]) << b << " bits";
    const Codebook again = ComputeLloydMax(b);
    for (int m = 0; m < (1 << (b - 1)); ++m) EXPECT_EQ(again.magnitude[m], cb.magnitude[m]);
  }
  EXPECT_NEAR(LloydMaxGaussian(1).magnitude[0], std::sqrt(2.0 / M_PI), 1e-6);
  const float want2[] = {0.4528f, 1.5104f};
  const float want3[] = {0.2451f, 0.7560f, 1.3439f, 2.1519f};
  const float want4[] = {0.1284f, 0.3881f, 0.6568f, 0.9423f, 1.2562f, 1.6180f, 2.0690f, 2.7326f};
  for (int m = 0; m < 2; ++m) EXPECT_NEAR(LloydMaxGaussian(2).magnitude[m], want2[m], 1e-4);
  for (int m = 0; m < 4; ++m) EXPECT_NEAR(LloydMaxGaussian(3).magnitude[m], want3[m], 1e-4);
  for (int m = 0; m < 8; ++m) EXPECT_NEAR(LloydMaxGaussian(4).magnitude[m], want4[m], 1e-4);
  // Codes: nearest level, sign-magnitude.
  const Codebook& cb = LloydMaxGaussian(2);
  EXPECT_EQ(CodebookCode(cb, 0.1f), 0u);
  EXPECT_EQ(CodebookCode(cb, 1.2f), 1u);
  EXPECT_EQ(CodebookCode(cb, -0.1f), 2u);
  EXPECT_EQ(CodebookCode(cb, -9.0f), 3u);
  EXPECT_EQ(CodebookValue(cb, 3), -cb.level[1]);
  EXPECT_EQ(CodebookGridValue(cb, 3), -cb.level_code[1]);
}

// The stored levels sit on the 1/kTurboGrid grid (the integer kernels multiply them as
// bytes): each within half a step of its exact level, strictly ascending, and the grid's
// cost in distortion (computed in closed form) under 0.5 % of D(b).
TEST(TurboCodebookTest, GridLevelsCostUnderHalfAPercentOfTheDistortion) {
  for (int b = 1; b <= 4; ++b) {
    const Codebook& cb = LloydMaxGaussian(b);
    SCOPED_TRACE(std::to_string(b) + " bits");
    for (int m = 0; m < (1 << (b - 1)); ++m) {
      EXPECT_FLOAT_EQ(cb.level[m] * kTurboGrid, static_cast<float>(cb.level_code[m]));
      EXPECT_LE(std::abs(cb.level[m] - cb.magnitude[m]), 0.5f / kTurboGrid + 1e-6f);
      if (m > 0) EXPECT_GT(cb.level_code[m], cb.level_code[m - 1]);
      EXPECT_FLOAT_EQ(CodebookValue(cb, static_cast<uint32_t>(m)) * kTurboGrid,
                static_cast<float>(CodebookGridValue(cb, static_cast<uint32_t>(m))));
    }
    EXPECT_GE(cb.grid_distortion, cb.distortion);  // Lloyd-Max is the optimum
    EXPECT_LE(cb.grid_distortion, 1.005 * cb.distortion);
  }
  EXPECT_EQ(LloydMaxGaussian(4).level_code[7], 127);
}

enum class Data { kGaussian, kOutliers };

// n vectors of dimension hd: iid N(0, 1), or outlier-heavy: Student-t (3 degrees of
// freedom) entries, every 16th channel 20x larger, a per-channel offset and per-vector
// scales over three orders of magnitude (keys of real models look like this).
std::vector<float> MakeVectors(Data kind, int n, int hd, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::student_t_distribution<float> td(3.0f);
  std::uniform_real_distribution<float> ud(-3.0f, 0.0f);
  std::vector<float> offset(hd);
  for (auto& o : offset) o = 2.0f * nd(rng);
  std::vector<float> x(static_cast<size_t>(n) * hd);
  for (int i = 0; i < n; ++i) {
    const float scale = kind == Data::kOutliers ? std::pow(10.0f, ud(rng)) : 1.0f;
    for (int d = 0; d < hd; ++d) {
      float& v = x[static_cast<size_t>(i) * hd + d];
      v = kind == Data::kGaussian ? nd(rng) : scale * (td(rng) * (d % 16 == 5 ? 20.0f : 1.0f) + offset[d]);
    }
  }
  return x;
}

// Rotates every vector, encodes it into a part (keys or values layout), decodes it, rotates
// it back: sum |x - x^|^2 / sum |x|^2 in the original domain.
double RelativeMse(const KvFormat& f, bool is_key, const std::vector<float>& x, int hd) {
  const int bt = 32, n = static_cast<int>(x.size() / hd);
  const PartLayout lay = is_key ? KLayout(f, bt, hd) : VLayout(f, bt, hd);
  AlignedBuffer<uint8_t> part(lay.total());
  std::vector<float> v(hd), y(hd);
  double err = 0, energy = 0;
  for (int i = 0; i < n; ++i) {
    const Rotation rot(hd, 77, i % 30, i % 3);  // the cache's rotation of some stream
    const float* xi = &x[static_cast<size_t>(i) * hd];
    std::copy(xi, xi + hd, v.begin());
    rot.Apply(v.data());
    const int slot = i % bt;
    (is_key ? EncodeKToken : EncodeVToken)(f, bt, hd, slot, v.data(), part.data());
    (is_key ? DecodeK : DecodeV)(f, bt, hd, slot, part.data(), y.data());
    rot.Inverse(y.data());
    for (int d = 0; d < hd; ++d) {
      err += (static_cast<double>(y[d]) - xi[d]) * (static_cast<double>(y[d]) - xi[d]);
      energy += static_cast<double>(xi[d]) * xi[d];
    }
  }
  return err / energy;
}

// The rotated coordinates of a unit vector are close to N(0, 1/d), so the squared error is
// D(b) |x|^2 up to the sampling error of 10,000 vectors and the difference between N(0, 1/d)
// and the true coordinate law (lighter tails: the error is slightly lower).
constexpr double kGaussianTol = 0.06;  // relative, either side
// Outlier-heavy vectors: a few dominant channels make the rotated coordinates a mixture of
// a few discrete values rather than a Gaussian, so the error departs from D(b): mostly
// below it, above it by at most this much.
constexpr double kOutlierTol = 0.15;

TEST(TurboCodecTest, SquaredErrorMatchesTheCodebookDistortionPerBitWidth) {
  for (int hd : {64, 128}) {
    const std::vector<float> gauss = MakeVectors(Data::kGaussian, 10000, hd, hd);
    const std::vector<float> outl = MakeVectors(Data::kOutliers, 10000, hd, hd + 1);
    for (int b = 1; b <= 4; ++b) {
      const std::string spec = "tq" + std::to_string(b);
      for (bool is_key : {true, false}) {
        auto f = ParseFormat(spec, is_key);
        ASSERT_TRUE(f.ok()) << f.status().ToString();
        SCOPED_TRACE(spec + (is_key ? " keys" : " values") + ", head dim " + std::to_string(hd));
        const double want = kDistortion[b - 1];
        const double g = RelativeMse(*f, is_key, gauss, hd);
        EXPECT_NEAR(g, want, kGaussianTol * want);
        const double o = RelativeMse(*f, is_key, outl, hd);
        EXPECT_LE(o, (1 + kOutlierTol) * want);
      }
    }
  }
}

TEST(TurboCodecTest, FractionalBudgetsMixTheTwoDistortions) {
  const int hd = 64;
  const std::vector<float> gauss = MakeVectors(Data::kGaussian, 10000, hd, 5);
  for (const char* spec : {"tq2.25", "tq2.5", "tq2.75", "tq3.5"}) {
    auto f = ParseFormat(spec, false);
    ASSERT_TRUE(f.ok());
    const double want = MixedDistortion(*f);
    EXPECT_NEAR(RelativeMse(*f, false, gauss, hd), want, kGaussianTol * want) << spec;
    EXPECT_NEAR(RelativeMse(*f, true, gauss, hd), want, kGaussianTol * want) << spec;
  }
}
// `:mean` keys: a block's keys that share a large offset are coded as k - mean, so the
// error is D(b) of what differs between the tokens, not of the offset; decoding adds the
// stored mean back. Blocks of fewer tokens (compaction) take the mean of those.
TEST(TurboCodecTest, MeanKeysSpendTheirBitsOnWhatDiffers) {
  const int hd = 64, bt = 32, blocks = 300;
  std::mt19937_64 rng(21);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> offset(hd);
  for (auto& o : offset) o = 6.0f * nd(rng);
  const KvFormat plain = *ParseFormat("tq3", true), mean = *ParseFormat("tq3:mean", true);
  EXPECT_FALSE(CanEncodeByToken(mean));
  AlignedBuffer<uint8_t> part(KLayout(mean, bt, hd).total());
  std::vector<float> x(static_cast<size_t>(bt) * hd), y(hd);
  double err_plain = 0, err_mean = 0, spread = 0;
  for (int b = 0; b < blocks; ++b) {
    const int n = b % 10 == 9 ? 17 : bt;
    for (int t = 0; t < n; ++t)
      for (int d = 0; d < hd; ++d) x[t * hd + d] = offset[d] + nd(rng);
    std::vector<double> mu(hd, 0.0);
    for (int t = 0; t < n; ++t)
      for (int d = 0; d < hd; ++d) mu[d] += x[t * hd + d] / n;
    for (const KvFormat* f : {&plain, &mean}) {
      EncodeKPart(*f, bt, hd, x.data(), n, part.data());
      for (int t = 0; t < n; ++t) {
        DecodeK(*f, bt, hd, t, part.data(), y.data());
        for (int d = 0; d < hd; ++d) {
          const double e = static_cast<double>(y[d]) - x[t * hd + d];
          (f == &plain ? err_plain : err_mean) += e * e;
          if (f == &mean) spread += (x[t * hd + d] - mu[d]) * (x[t * hd + d] - mu[d]);
        }
      }
    }
  }
  // Relative to the spread around the block mean, the error is the codebook's (the mean is
  // stored in fp16: its rounding adds 2^-22 relative of the offset's energy, negligible).
  EXPECT_NEAR(err_mean / spread, kDistortion[2], kGaussianTol * kDistortion[2]);
  EXPECT_LT(err_mean, err_plain / 10);  // offsets 6x the spread: 37x less error
}

TEST(TurboCodecTest, ZeroAndNonFiniteVectorsDecodeToFiniteValues) {
  const int hd = 64, bt = 32;
  for (const char* spec : {"tq4", "tq2.5", "tq2"}) {
    auto f = ParseFormat(spec, true);
    ASSERT_TRUE(f.ok());
    AlignedBuffer<uint8_t> part(KLayout(*f, bt, hd).total());
    std::vector<float> x(hd, 0.0f), y(hd, 1.0f);
    EncodeKToken(*f, bt, hd, 3, x.data(), part.data());
    DecodeK(*f, bt, hd, 3, part.data(), y.data());
    for (float v : y) ASSERT_EQ(v, 0.0f) << spec;
    x.assign(hd, 1.0f);
    x[1] = NAN;
    x[2] = INFINITY;
    x[3] = -INFINITY;
    EncodeKToken(*f, bt, hd, 4, x.data(), part.data());
    DecodeK(*f, bt, hd, 4, part.data(), y.data());
    for (float v : y) ASSERT_TRUE(std::isfinite(v)) << spec;
    // The zero token next to them is still zero.
    DecodeK(*f, bt, hd, 3, part.data(), y.data());
    for (float v : y) ASSERT_EQ(v, 0.0f) << spec;
  }
}

// Attention over tq codes (keys and values rotated as the cache stores them, the query
// rotated by the kernel, the output rotated back) against fp32 attention over the raw
// vectors. The codec's errors are independent per vector, with E|e|^2 = D |x|^2 spread evenly
// over the rotated coordinates, so to first order a row's output error has the expected
// square
//   values: D sum_t p_t^2 |v_t|^2
//   keys:   sum_t p_t^2 var(delta_t) |v_t - o|^2,  var(delta_t) = D scale^2 |q|^2 |k_t|^2 / d
// (delta_t the error of score t). Over many rows the mean squared error must be close to the
// mean of that prediction: within a factor kAttnErrorRatio either side (the first-order
// terms leave out the curvature of exp at 2 bits and the shrinkage of the codes).
constexpr double kAttnErrorRatio = 1.5;  // measured: 0.72 (tq2, d 64) to 1.09 (tq4, d 128)

TEST(TurboAttentionTest, ErrorAgainstFp32AttentionFollowsTheCodebookDistortion) {
  const int bt = 32, group = 4, n_keys = 300;
  for (int hd : {64, 128}) {
    for (const char* spec : {"tq4", "tq3", "tq2.5", "tq2"}) {
      SCOPED_TRACE(std::string(spec) + ", head dim " + std::to_string(hd));
      const KvFormat f = *ParseFormat(spec, true);
      const double dist = MixedDistortion(f);
      const BlockKind kind = MakeBlockKind(f, *ParseFormat(spec, false), bt, hd);
      const Rotation k_rot(hd, 5, 3, 0), v_rot(hd, 6, 3, 0);
      const std::vector<float> k = MakeVectors(Data::kGaussian, n_keys, hd, 100 + hd);
      const std::vector<float> v = MakeVectors(Data::kGaussian, n_keys, hd, 200 + hd);
      const int n_blocks = (n_keys + bt - 1) / bt;
      std::vector<AlignedBuffer<uint8_t>> blocks;
      std::vector<const uint8_t*> ptrs;
      std::vector<float> x(hd);
      for (int b = 0; b < n_blocks; ++b) {
        blocks.emplace_back(kind.v_offset + kind.v_layout.total());
        std::memset(blocks.back().data(), 0, kind.v_offset + kind.v_layout.total());
        for (int t = 0; t < bt && b * bt + t < n_keys; ++t) {
          const size_t i = static_cast<size_t>(b * bt + t) * hd;
          std::copy(&k[i], &k[i] + hd, x.begin());
          k_rot.Apply(x.data());
          EncodeKToken(kind.k, bt, hd, t, x.data(), blocks.back().data());
          std::copy(&v[i], &v[i] + hd, x.begin());
          v_rot.Apply(x.data());
          EncodeVToken(kind.v, bt, hd, t, x.data(), blocks.back().data() + kind.v_offset);
        }
        ptrs.push_back(blocks.back().data());
      }
      double err2 = 0, pred2 = 0;
      AttnScratch scratch;
      for (int trial = 0; trial < 25; ++trial) {
        const std::vector<float> q = MakeVectors(Data::kGaussian, group, hd, 1000 * hd + trial);
        AttnTask t;
        t.blocks = ptrs.data();
        t.n_sealed = n_blocks;
        t.sealed = t.staged = &kind;
        t.block_tokens = bt;
        t.head_dim = hd;
        t.k_rotation = &k_rot;
        t.q = q.data();
        t.ldq = group * hd;
        t.scale = 2.0f / std::sqrt(static_cast<float>(hd));  // a peaked softmax, as in trained models
        t.n_q_tokens = 1;
        t.group = group;
        t.first_q_slot = n_keys - 1;
        t.key_end = n_keys;
        std::vector<float> acc(group * hd), m(group), l(group), out(group * hd);
        RunAttnTask(t, {acc.data(), m.data(), l.data()}, scratch);
        AttnPartial part{acc.data(), m.data(), l.data()};
        MergePartials(&part, 1, group, group, hd, out.data(), group * hd);
        for (int r = 0; r < group; ++r) {
          float* o_hat = &out[r * hd];
          v_rot.Inverse(o_hat);
          const float* qr = &q[r * hd];
          std::vector<double> p(n_keys), kn(n_keys);
          double mx = -INFINITY, sum = 0, qq = 0;
          for (int d = 0; d < hd; ++d) qq += static_cast<double>(qr[d]) * qr[d];
          for (int j = 0; j < n_keys; ++j) {
            double dot = 0;
            kn[j] = 0;
            for (int d = 0; d < hd; ++d) {
              dot += static_cast<double>(qr[d]) * k[static_cast<size_t>(j) * hd + d];
              kn[j] += static_cast<double>(k[static_cast<size_t>(j) * hd + d]) * k[static_cast<size_t>(j) * hd + d];
            }
            p[j] = dot * t.scale;
            mx = std::max(mx, p[j]);
          }
          for (double& pj : p) sum += (pj = std::exp(pj - mx));
          std::vector<double> o(hd, 0.0);
          for (int j = 0; j < n_keys; ++j) {
            p[j] /= sum;
            for (int d = 0; d < hd; ++d) o[d] += p[j] * v[static_cast<size_t>(j) * hd + d];
          }
          for (int j = 0; j < n_keys; ++j) {
            double vv = 0, dv = 0;
            for (int d = 0; d < hd; ++d) {
              const double vj = v[static_cast<size_t>(j) * hd + d];
              vv += vj * vj;
              dv += (vj - o[d]) * (vj - o[d]);
            }
            const double var_delta = dist * t.scale * t.scale * qq * kn[j] / hd;
            pred2 += p[j] * p[j] * (dist * vv + var_delta * dv);
          }
          for (int d = 0; d < hd; ++d) {
            ASSERT_TRUE(std::isfinite(o_hat[d]));
            err2 += (o_hat[d] - o[d]) * (o_hat[d] - o[d]);
          }
        }
      }
      const double ratio = err2 / pred2;
      RecordProperty(std::string(spec) + "_hd" + std::to_string(hd), std::to_string(ratio));
      EXPECT_LE(ratio, kAttnErrorRatio);
      EXPECT_GE(ratio, 1.0 / kAttnErrorRatio);
    }
  }
}

// Through the cache: keys and values rotated and encoded as they arrive (or sealed out of
// the residual window), attention on the codes, the output rotated back. Against fp32
// attention over the raw vectors the relative error stays within what the codebook allows:
// with scale 1/sqrt(d) and unit-variance data the value and key terms of the prediction
// above are about equal, so |o^ - o| ~ sqrt(2 D) |o|; the bound leaves 1.5x of that.
TEST(TurboCacheTest, PrefillAndDecodeOnCodesMatchFp32Attention) {
  const KvSpec spec{.n_layers = 1, .n_kv_heads = 2, .n_q_heads = 6, .head_dim = 64, .max_context = 1024};
  const int hd = spec.head_dim, Hq = spec.n_q_heads, Hk = spec.n_kv_heads, G = Hq / Hk;
  const int width = Hk * hd, qwidth = Hq * hd;
  const float scale = 0.125f;
  struct Cfg {
    const char* preset;
    const char* k;
    int residual;
    double dist;
  };
  for (const Cfg& c : {Cfg{"tq4", "", 0, kDistortion[3]}, Cfg{"tq3", "", 64, kDistortion[2]},
                       Cfg{"tq2.5", "", 0, 0.5 * (kDistortion[1] + kDistortion[2])},
                       Cfg{"tq3", "tq3:mean", 0, kDistortion[2]}}) {
    SCOPED_TRACE(std::string(c.preset) + " " + c.k + " residual " + std::to_string(c.residual));
    auto config = MakeConfig(c.preset, c.k, "", c.residual);
    ASSERT_TRUE(config.ok()) << config.status().ToString();
    auto cache_or = KvCache::Create(spec, *config, 64 << 20);
    ASSERT_TRUE(cache_or.ok()) << cache_or.status().ToString();
    KvCache& cache = **cache_or;
    ThreadPool pool(2);
    const SeqId seq = cache.AddSequence();
    std::mt19937_64 rng(11);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::vector<float> kh, vh;
    double err2 = 0, out2 = 0;
    for (int step = 0; step < 5; ++step) {
      const int n = step == 0 ? 200 : 1;
      const StepChunk chunks[] = {{seq, n, 0}};
      std::vector<float> k(n * width), v(n * width), q(n * qwidth), out(n * qwidth);
      for (auto* vec : {&k, &v, &q})
        for (auto& x : *vec) x = nd(rng);
      if (step == 2) std::fill(k.begin(), k.end(), 0.0f), std::fill(v.begin(), v.end(), 0.0f);  // zero vectors
      ASSERT_TRUE(cache.BeginStep(chunks).ok());
      cache.Append(0, chunks, k.data(), width, v.data(), width);
      cache.Attend(pool, 0, chunks, q.data(), qwidth, out.data(), qwidth, scale);
      cache.EndStep(chunks);
      cache.CheckInvariants();
      kh.insert(kh.end(), k.begin(), k.end());
      vh.insert(vh.end(), v.begin(), v.end());
      const int len = static_cast<int>(kh.size() / width);
      for (int i = 0; i < n; ++i) {
        const int pos = len - n + i;
        for (int h = 0; h < Hq; ++h) {
          std::vector<double> p(pos + 1);
          double m = -INFINITY, l = 0;
          for (int j = 0; j <= pos; ++j) {
            double dot = 0;
            for (int d = 0; d < hd; ++d) dot += static_cast<double>(q[(i * Hq + h) * hd + d]) * kh[(j * Hk + h / G) * hd + d];
            m = std::max(m, p[j] = dot * scale);
          }
          for (double& x : p) l += (x = std::exp(x - m));
          for (int d = 0; d < hd; ++d) {
            double o = 0;
            for (int j = 0; j <= pos; ++j) o += p[j] * vh[(j * Hk + h / G) * hd + d];
            o /= l;
            const float got = out[(i * Hq + h) * hd + d];
            ASSERT_TRUE(std::isfinite(got));
            err2 += (got - o) * (got - o);
            out2 += o * o;
          }
        }
      }
    }
    const double rel = std::sqrt(err2 / out2);
    EXPECT_LE(rel, 1.5 * std::sqrt(2 * c.dist));
    EXPECT_GT(rel, 0.0);  // the codes, not a float copy, were attended to
  }
}

TEST(TurboCacheTest, RejectsHeadDimsThatAreNotPowersOfTwo) {
  auto config = ParsePreset("tq3");
  ASSERT_TRUE(config.ok());
  auto c = KvCache::Create(KvSpec{.n_layers = 1, .n_kv_heads = 1, .n_q_heads = 1, .head_dim = 96}, *config, 1 << 20);
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("96"), std::string::npos) << c.status().message();
}

TEST(TurboFormatTest, LayoutsAreDenseAndCountTheNorms) {
  const int bt = 32, hd = 64;
  struct Want {
    const char* spec;
    size_t data, meta;
  };
  // Codes: bt * hd * bits / 8 (3-bit codes in bit planes waste nothing); norms: 2 bytes a token.
  for (const Want& w : {Want{"tq4", 1024, 64}, Want{"tq3", 768, 64}, Want{"tq2", 512, 64},
                        Want{"tq2.5", 640, 64}, Want{"tq3.25", 832, 64}, Want{"tq1", 256, 64},
                        Want{"tq3:mean", 768, 64 + 128}}) {
    auto f = ParseFormat(w.spec, true);
    ASSERT_TRUE(f.ok()) << w.spec;
    const PartLayout k = KLayout(*f, bt, hd), v = VLayout(*f, bt, hd);
    EXPECT_EQ(k.data_bytes, w.data) << w.spec;
    EXPECT_EQ(k.meta_bytes, w.meta) << w.spec;
    EXPECT_EQ(v.data_bytes, w.data) << w.spec;
    EXPECT_EQ(FormatName(*f), w.spec);
  }
  KvConfig c;
  c.k = *ParseFormat("tq4", true);
  c.v = *ParseFormat("tq3", false);
  EXPECT_DOUBLE_EQ(BitsPerElement(c, hd), 3.75);  // 3.5 nominal + 16-bit norms over 64 channels
  EXPECT_FALSE(c.needs_staging());                 // written token by token
  c.residual = 64;
  EXPECT_TRUE(c.needs_staging());
}

TEST(TurboFormatTest, BadSpecsAndHeadDimsAreRejectedWithTheReason) {
  for (const char* bad : {"tq5", "tq0", "tq4.5", "tq2.3", "tq", "tq3:channel", "tq3:pre"}) {
    EXPECT_FALSE(ParseFormat(bad, true).ok()) << bad;
  }
  auto v_mean = ParseFormat("tq3:mean", false);
  ASSERT_FALSE(v_mean.ok());
  EXPECT_NE(v_mean.status().message().find("keys only"), std::string::npos);
  EXPECT_FALSE(ParseFormat("tq3:qjl", true).ok());  // measured, lost, removed (DECISIONS)
  EXPECT_FALSE(ParseFormat("int4:mean", true).ok());
  auto f = ParseFormat("tq3", true);
  ASSERT_TRUE(f.ok());
  EXPECT_TRUE(f->rotate);
  const Status s = CheckFormat(*f, 80, true);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("80"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("power-of-two"), std::string::npos) << s.message();
  EXPECT_TRUE(CheckFormat(*f, 64, true).ok());
  EXPECT_FALSE(CheckFormat(*ParseFormat("tq2.5", false), 32, false).ok());  // 8 channels a quarter
}

}  // namespace
}  // namespace slimkv::kv
