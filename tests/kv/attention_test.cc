// The attention ladder: naive attention over decoded vectors (the reference) -> fused
// kernel over stored blocks (RunAttnTask), for every format and on every SIMD target.
#include "kv/attention.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "base/aligned_buffer.h"
#include "kv/codec.h"
#include "kv/format.h"
#include "ops/target_util.h"

namespace slimkv::kv {
namespace {

// The kernel and the reference see the same stored bytes and differ only in the order of
// fp32 sums, the folding of scales into queries and weights, and exp(): relative error of
// a few ulp of the largest term, times the dynamic range of the codes.
constexpr float kRelTol = 3e-5f;
// On AVX3_DL, integer codes are multiplied as integers (attention-inl.h): the query (keys
// side) and the weights (values side) are rounded to 16-bit integers, a step of 2^-15 of
// their largest value, and a score sums hd such terms times codes of up to 2^bits - 1
// around their mean: a few 1e-4 of the output range. The same rounding must also stay a
// small fraction of the format's own error: at 5 % of it (the measured worst case is 2.5 %,
// int8 keys with outlier channels), independent errors add 0.13 % to the total.
constexpr float kIntRelTol = 1e-3f;
constexpr float kIntShareOfFormatError = 0.05f;

// Formats the AVX3_DL integer paths may take (tq: 2-4 bit levels on their grid).
bool IsInt(const KvFormat& f) {
  return f.type == ElemType::kInt8 || f.type == ElemType::kInt4 || f.type == ElemType::kInt3 ||
         f.type == ElemType::kInt2 || (f.type == ElemType::kTurbo && f.tq_bits >= 2);
}

struct Stream {
  std::vector<AlignedBuffer<uint8_t>> storage;
  std::vector<const uint8_t*> ptrs;
  BlockKind sealed, staged;
  int n_sealed = 0;
  std::vector<float> pos_cos, pos_sin;  // [pairs][positions] for pre-RoPE keys
  RopeTables rope;
  std::vector<float> raw_k, raw_v;  // [n_keys][hd]: the values before encoding
};

// n_keys random keys/values; the first n_sealed blocks sealed in (kf, vf), the rest staged
// in f16. Slots past n_keys hold garbage the kernel must never use.
Stream MakeStream(const KvFormat& kf, const KvFormat& vf, int bt, int hd, int n_keys, int n_sealed,
                  uint64_t seed, bool outliers) {
  Stream s;
  s.sealed = MakeBlockKind(kf, vf, bt, hd);
  const KvFormat f16{.type = ElemType::kF16, .pre_rope = kf.pre_rope};
  s.staged = MakeBlockKind(f16, KvFormat{.type = ElemType::kF16}, bt, hd);
  s.n_sealed = n_sealed;
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  const int n_blocks = (n_keys + bt - 1) / bt;
  std::vector<float> k(static_cast<size_t>(bt) * hd), v(static_cast<size_t>(bt) * hd);
  for (int b = 0; b < n_blocks; ++b) {
    for (int t = 0; t < bt; ++t) {
      const bool valid = b * bt + t < n_keys;
      for (int d = 0; d < hd; ++d) {
        float x = nd(rng) + (outliers && d % 13 == 5 ? 8.0f : 0.0f);  // channel offsets in K
        if (outliers && d % 13 == 5) x *= 4.0f;
        k[t * hd + d] = valid ? x : 1e30f;
        v[t * hd + d] = valid ? nd(rng) * (outliers && t % 7 == 0 ? 6.0f : 1.0f) : 1e30f;
        if (valid) {
          s.raw_k.push_back(k[t * hd + d]);
          s.raw_v.push_back(v[t * hd + d]);
        }
      }
    }
    const bool sealed = b < n_sealed;
    const BlockKind& kind = sealed ? s.sealed : s.staged;
    s.storage.emplace_back(kind.v_offset + kind.v_layout.total());
    uint8_t* p = s.storage.back().data();
    const int n_valid = std::min(bt, n_keys - b * bt);
    if (sealed) {
      EncodeKPart(kind.k, bt, hd, k.data(), bt, p);
      EncodeVPart(kind.v, bt, hd, v.data(), bt, p + kind.v_offset);
    } else {
      for (int t = 0; t < bt; ++t) {
        EncodeKToken(kind.k, bt, hd, t, &k[t * hd], p);
        EncodeVToken(kind.v, bt, hd, t, &v[t * hd], p + kind.v_offset);
      }
    }
    (void)n_valid;
  }
  for (auto& st : s.storage) s.ptrs.push_back(st.data());
  if (kf.pre_rope) {
    const int half = hd / 2, cap = n_blocks * bt;
    s.pos_cos.resize(static_cast<size_t>(half) * cap);
    s.pos_sin.resize(static_cast<size_t>(half) * cap);
    for (int i = 0; i < half; ++i)
      for (int p = 0; p < cap; ++p) {
        const double th = p * std::pow(10000.0, -2.0 * i / hd);
        s.pos_cos[i * cap + p] = static_cast<float>(std::cos(th));
        s.pos_sin[i * cap + p] = static_cast<float>(std::sin(th));
      }
    s.rope = RopeTables{s.pos_cos.data(), s.pos_sin.data(), cap, hd, ops::RopeStyle::kNeox};
  }
  return s;
}

struct Case {
  const char* k;
  const char* v;
  int hd, group, n_q, n_keys, window;
  bool outliers;
  int bt = 32;
};

// Largest |naive attention over the unquantized keys and values - want| of every row: the
// error the format itself makes (no rotation, RoPE or window: the raw data then is the
// truth).
float FormatError(const Stream& s, const Case& c, const std::vector<float>& q, int64_t ldq, float scale,
                  const std::vector<float>& want) {
  float err = 0;
  for (int r = 0; r < c.n_q * c.group; ++r) {
    const int i = r / c.group;
    const float* qr = q.data() + i * ldq + (r % c.group) * c.hd;
    const int n = c.n_keys - c.n_q + i + 1;
    std::vector<double> p(n);
    double m = -INFINITY, l = 0;
    for (int j = 0; j < n; ++j) {
      double dot = 0;
      for (int x = 0; x < c.hd; ++x) dot += static_cast<double>(qr[x]) * s.raw_k[j * c.hd + x];
      p[j] = dot * scale;
      m = std::max(m, p[j]);
    }
    for (int j = 0; j < n; ++j) l += (p[j] = std::exp(p[j] - m));
    for (int x = 0; x < c.hd; ++x) {
      double a = 0;
      for (int j = 0; j < n; ++j) a += p[j] * s.raw_v[j * c.hd + x];
      err = std::max(err, static_cast<float>(std::abs(a / l - want[r * c.hd + x])));
    }
  }
  return err;
}

class AttnTaskTest : public ::testing::TestWithParam<Case> {};

TEST_P(AttnTaskTest, KernelMatchesReferenceOnEveryTarget) {
  const Case c = GetParam();
  const int bt = c.bt;
  auto kf = ParseFormat(c.k, true);
  auto vf = ParseFormat(c.v, false);
  ASSERT_TRUE(kf.ok() && vf.ok());
  const int n_blocks = (c.n_keys + bt - 1) / bt;
  // Every block but the last two sealed (the staged ones play the residual window).
  Stream s = MakeStream(*kf, *vf, bt, c.hd, c.n_keys, std::max(0, n_blocks - 2), c.n_keys * 7 + c.hd, c.outliers);
  const Rotation rot = kf->rotate ? Rotation(c.hd, 99, 1, 2) : Rotation();
  const int64_t ldq = c.group * c.hd + 5;  // odd token stride
  std::vector<float> q(ldq * c.n_q);
  std::mt19937_64 rng(99);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (auto& v : q) v = nd(rng);
  const int rows = c.n_q * c.group;
  AttnTask t;
  t.blocks = s.ptrs.data();
  t.n_sealed = s.n_sealed;
  t.sealed = &s.sealed;
  t.staged = &s.staged;
  t.block_tokens = bt;
  t.head_dim = c.hd;
  t.rope = kf->pre_rope ? &s.rope : nullptr;
  t.k_rotation = kf->rotate ? &rot : nullptr;
  t.q = q.data();
  t.ldq = ldq;
  t.scale = 1.0f / std::sqrt(static_cast<float>(c.hd));
  t.n_q_tokens = c.n_q;
  t.group = c.group;
  t.first_q_slot = c.n_keys - c.n_q;  // the query tokens are the last keys (prefill/decode)
  t.window = c.window;
  // Whole range, and a split into two parts merged afterwards.
  for (int split : {0, 1}) {
    SCOPED_TRACE(split ? "split" : "whole");
    std::vector<float> want(rows * c.hd), got(rows * c.hd);
    std::vector<float> ra(rows * c.hd), rm(rows), rl(rows);
    t.key_begin = 0;
    t.key_end = c.n_keys;
    RunAttnTaskReference(t, {ra.data(), rm.data(), rl.data()});
    AttnPartial ref{ra.data(), rm.data(), rl.data()};
    MergePartials(&ref, 1, rows, c.group, c.hd, want.data(), c.group * c.hd);
    const bool has_truth = !kf->rotate && !kf->pre_rope && !vf->rotate && c.window == 0;
    const float format_error = has_truth ? FormatError(s, c, q, ldq, t.scale, want) : 0.0f;
    AttnScratch scratch;
    slimkv::testing::ForEachTarget([&](int64_t target) {
      const int mid = split ? (c.n_keys / 2) / bt * bt : c.n_keys;
      std::vector<float> a0(rows * c.hd), m0(rows), l0(rows), a1(rows * c.hd), m1(rows), l1(rows);
      AttnTask t0 = t, t1 = t;
      t0.key_end = mid;
      t1.key_begin = mid;
      RunAttnTask(t0, {a0.data(), m0.data(), l0.data()}, scratch);
      RunAttnTask(t1, {a1.data(), m1.data(), l1.data()}, scratch);
      AttnPartial parts[2] = {{a0.data(), m0.data(), l0.data()}, {a1.data(), m1.data(), l1.data()}};
      MergePartials(parts, 2, rows, c.group, c.hd, got.data(), c.group * c.hd);
      float vmax = 1e-6f;
      for (float v : want) vmax = std::max(vmax, std::abs(v));
      const bool int_path = target == HWY_AVX3_DL && (IsInt(*kf) || IsInt(*vf));
      const float tol = int_path ? kIntRelTol * vmax : kRelTol * vmax * (c.outliers ? 10 : 1);
      float err = 0;
      for (int i = 0; i < rows * c.hd; ++i) {
        ASSERT_TRUE(std::isfinite(got[i])) << i;
        ASSERT_NEAR(got[i], want[i], tol) << "element " << i;
        err = std::max(err, std::abs(got[i] - want[i]));
      }
      if (int_path && has_truth) {
        EXPECT_LE(err, kIntShareOfFormatError * format_error) << "integer rounding vs the format's own error";
      }
    });
  }
}

INSTANTIATE_TEST_SUITE_P(
    Formats, AttnTaskTest,
    ::testing::Values(
        // float formats, every shape of the original ladder
        Case{"f32", "f32", 64, 3, 1, 1, 0, false}, Case{"f16", "f16", 64, 3, 1, 17, 0, false},
        Case{"f16", "f16", 64, 3, 1, 97, 0, true}, Case{"f16", "f32", 64, 1, 5, 300, 0, false},
        Case{"f32", "f16", 256, 4, 16, 300, 0, true}, Case{"f16", "f16", 256, 4, 1, 700, 64, false},
        Case{"f16", "f16", 48, 8, 8, 33, 5, false}, Case{"f32", "f32", 16, 2, 32, 64, 0, true},
        Case{"bf16", "bf16", 64, 3, 2, 150, 0, false},
        // fp8 with per-block scales
        Case{"fp8e4m3", "fp8e4m3", 64, 3, 1, 200, 0, true}, Case{"fp8e5m2", "fp8e5m2", 64, 3, 4, 130, 0, false},
        // integer keys per channel, values per token (KIVI), all widths
        Case{"int8:channel", "int8:token", 64, 3, 1, 200, 0, true},
        Case{"int4:channel", "int4:token", 64, 3, 1, 300, 0, true},
        Case{"int4:channel", "int4:g32", 256, 4, 3, 260, 0, false},
        Case{"int3:channel", "int3:g32", 64, 3, 1, 200, 0, false},
        Case{"int2:channel", "int2:g32", 64, 3, 2, 300, 0, true},
        Case{"int2:channel:sym", "int2:g32:sym", 64, 1, 1, 100, 0, false},
        // per-token keys, per-channel values, symmetric variants
        Case{"int4:token", "int4:channel", 64, 3, 1, 200, 0, true},
        Case{"int8:g32:sym", "int8:channel:sym", 128, 2, 4, 170, 0, false},
        Case{"int3:g32", "int2:token", 64, 3, 1, 96, 0, false},
        // llama.cpp layouts, rotated, and keys stored before RoPE
        Case{"q8_0", "q8_0", 64, 3, 1, 200, 0, false}, Case{"q4_0", "q4_0", 64, 3, 5, 200, 0, true},
        Case{"q4_0:rot", "q4_0:rot", 64, 3, 1, 200, 0, true},
        Case{"int4:channel:rot", "int4:token", 256, 4, 1, 200, 64, true},
        Case{"int4:channel:pre", "int4:token", 64, 3, 1, 200, 0, true},
        Case{"f16:pre", "f16", 64, 3, 4, 100, 0, false},
        // integer kernels (AVX3_DL): 64-token blocks (the int4 preset), odd key counts, one
        // to five query tokens, windows, 1/2/4/8 value groups, every width
        Case{"int4:channel", "int4:token", 64, 3, 1, 1000, 0, true, 64},
        Case{"int4:channel", "int4:token", 64, 3, 1, 17, 0, false, 64},
        Case{"int4:channel", "int4:token", 64, 3, 3, 97, 0, false, 64},
        Case{"int4:channel", "int4:g32", 256, 4, 1, 333, 0, true, 64},
        Case{"int8:channel", "int8:token", 64, 3, 2, 513, 0, true, 64},
        Case{"int2:channel", "int2:g32", 64, 3, 1, 257, 0, false, 64},
        Case{"q8_0", "q8_0", 256, 4, 1, 300, 0, true, 64}, Case{"q4_0", "q4_0", 64, 3, 1, 201, 0, false, 64},
        Case{"int4:channel", "int4:g32", 128, 3, 1, 129, 0, false}, Case{"int8:token", "int2:g64", 128, 2, 1, 96, 0, true},
        Case{"int4:channel", "int4:token", 64, 3, 1, 500, 100, false}, Case{"q4_0", "q8_0", 128, 1, 5, 150, 40, true},
        Case{"int2:channel:sym", "int4:g32:sym", 64, 3, 1, 33, 0, false},
        Case{"int4:channel", "f16", 64, 3, 1, 300, 0, true}, Case{"f16", "int4:token", 64, 3, 1, 300, 0, true},
        // TurboQuant (turbo-inl.h): every width, fractional budgets, block-mean keys, odd key
        // counts, prefill tiles, windows, head dims 64/128/256, 64-token blocks
        Case{"tq4", "tq4", 64, 3, 1, 300, 0, true}, Case{"tq3", "tq3", 64, 3, 1, 97, 0, false},
        Case{"tq2", "tq2", 64, 3, 2, 200, 0, true}, Case{"tq1", "tq1", 64, 1, 1, 33, 0, false},
        Case{"tq2.5", "tq2.5", 64, 3, 1, 257, 0, true}, Case{"tq3.25", "tq2.75", 128, 2, 5, 150, 40, false},
        Case{"tq4", "tq3", 256, 4, 1, 333, 0, true}, Case{"tq3.5", "tq2.5", 256, 4, 16, 300, 64, false},
        Case{"tq4:mean", "tq3", 64, 3, 1, 200, 0, true}, Case{"tq3", "tq2", 128, 3, 3, 129, 0, false},
        Case{"tq4", "tq3", 64, 3, 1, 1000, 0, true, 64}, Case{"tq2.5", "tq2", 64, 3, 8, 17, 0, false, 64},
        Case{"tq4", "f16", 64, 3, 1, 100, 0, false}, Case{"int4:channel", "tq3", 64, 3, 1, 100, 0, true},
        Case{"tq2.5:mean", "tq2.5", 64, 3, 1, 300, 0, true}, Case{"tq3:mean", "tq2", 256, 4, 5, 200, 40, true},
        Case{"tq2:mean", "tq3", 64, 3, 2, 130, 0, true},
        // tq on the integer paths: 3-bit planes in 32- and 64-token blocks, both halves of
        // fractional budgets (hi 3-bit and lo 2-bit arrays), value rows of 32 and 128
        // channels, 3-bit integer formats
        Case{"tq3", "tq3", 64, 3, 1, 300, 0, true, 64}, Case{"tq3.5", "tq3.5", 64, 3, 1, 200, 0, true},
        Case{"tq2.5", "tq2.5", 256, 4, 1, 300, 0, true}, Case{"tq3", "tq2", 256, 4, 2, 190, 0, false, 64},
        Case{"tq2", "tq4", 128, 2, 3, 161, 0, true}, Case{"tq4", "tq2.5", 128, 3, 1, 100, 30, false},
        Case{"int3:channel", "int3:token", 64, 3, 2, 200, 0, true, 64},
        Case{"int3:channel", "int3:g32", 128, 3, 1, 300, 0, true}, Case{"int3:g32", "int3:g64", 128, 2, 1, 130, 0, false},
        // chunks of one block and blocks larger than the integer key paths take (values on
        // the integer path, keys on the float path), a window cutting into a chunk
        Case{"int4:channel", "int4:g32", 64, 3, 1, 600, 0, true, 128},
        Case{"q8_0", "int8:token", 128, 2, 2, 700, 300, false, 256},
        Case{"tq4", "tq3", 64, 3, 1, 500, 0, false, 128}, Case{"f16", "tq2.5", 256, 4, 1, 517, 0, true, 256}));

TEST(MergePartialsTest, RowsWithoutKeysAreZero) {
  float acc[4] = {1, 2, 3, 4}, m[1] = {-INFINITY}, l[1] = {0};
  AttnPartial p{acc, m, l};
  float out[4] = {9, 9, 9, 9};
  MergePartials(&p, 1, 1, 1, 4, out, 4);
  for (float v : out) EXPECT_EQ(v, 0.0f);
}

}  // namespace
}  // namespace slimkv::kv
