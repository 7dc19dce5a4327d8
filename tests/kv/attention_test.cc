// The attention ladder: naive fp32 attention over decoded vectors (the reference) ->
// fused kernel over stored blocks (RunAttnTask), on every SIMD target.
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

// The kernel and the reference see the same decoded values and differ only in the order
// of fp32 sums and in exp(): relative error of a few ulp of the largest term.
constexpr float kRelTol = 2e-5f;

struct Blocks {
  std::vector<AlignedBuffer<uint8_t>> storage;
  std::vector<const uint8_t*> ptrs;
  size_t v_offset;
};

Blocks MakeBlocks(const KvFormat& kf, const KvFormat& vf, int bt, int hd, int n_keys,
                  uint64_t seed, bool outliers) {
  Blocks b;
  const PartLayout kl = KLayout(kf, bt, hd), vl = VLayout(vf, bt, hd);
  b.v_offset = kl.total();
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  const int n_blocks = (n_keys + bt - 1) / bt;
  std::vector<float> x(hd);
  for (int i = 0; i < n_blocks; ++i) {
    b.storage.emplace_back(kl.total() + vl.total());
    uint8_t* p = b.storage.back().data();
    for (int s = 0; s < bt; ++s) {
      // Slots past n_keys hold garbage the kernel must never use.
      const bool valid = i * bt + s < n_keys;
      for (int d = 0; d < hd; ++d) {
        x[d] = valid ? nd(rng) : 1e30f;
        if (valid && outliers && d % 13 == 5) x[d] *= 20.0f;  // channel outliers in K
      }
      EncodeK(kf, bt, hd, s, x.data(), p);
      for (int d = 0; d < hd; ++d) x[d] = valid ? nd(rng) * (outliers && s % 7 == 0 ? 10.0f : 1.0f) : 1e30f;
      EncodeV(vf, bt, hd, s, x.data(), p + b.v_offset);
    }
  }
  for (auto& s : b.storage) b.ptrs.push_back(s.data());
  return b;
}

struct Case {
  ElemType kt, vt;
  int hd, group, n_q, n_keys, window;
  bool outliers;
};

class AttnTaskTest : public ::testing::TestWithParam<Case> {};

TEST_P(AttnTaskTest, KernelMatchesReferenceOnEveryTarget) {
  const Case c = GetParam();
  const int bt = 32;
  const KvFormat kf{c.kt}, vf{c.vt};
  Blocks b = MakeBlocks(kf, vf, bt, c.hd, c.n_keys, c.n_keys * 7 + c.hd, c.outliers);
  const int64_t ldq = c.group * c.hd + 5;  // odd token stride
  std::vector<float> q(ldq * c.n_q);
  std::mt19937_64 rng(99);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (auto& v : q) v = nd(rng);
  const int rows = c.n_q * c.group;
  AttnTask t;
  t.blocks = b.ptrs.data();
  t.block_tokens = bt;
  t.head_dim = c.hd;
  t.v_offset = b.v_offset;
  t.k_type = c.kt;
  t.v_type = c.vt;
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
    slimkv::testing::ForEachTarget([&](int64_t) {
      const int mid = split ? (c.n_keys / 2) / bt * bt : c.n_keys;
      std::vector<float> a0(rows * c.hd), m0(rows), l0(rows), a1(rows * c.hd), m1(rows), l1(rows);
      AttnTask t0 = t, t1 = t;
      t0.key_end = mid;
      t1.key_begin = mid;
      RunAttnTask(t0, {a0.data(), m0.data(), l0.data()});
      RunAttnTask(t1, {a1.data(), m1.data(), l1.data()});
      AttnPartial parts[2] = {{a0.data(), m0.data(), l0.data()}, {a1.data(), m1.data(), l1.data()}};
      MergePartials(parts, 2, rows, c.group, c.hd, got.data(), c.group * c.hd);
      float vmax = 1e-6f;
      for (float v : want) vmax = std::max(vmax, std::abs(v));
      for (int i = 0; i < rows * c.hd; ++i) {
        ASSERT_TRUE(std::isfinite(got[i])) << i;
        ASSERT_NEAR(got[i], want[i], kRelTol * vmax * (c.outliers ? 10 : 1)) << "element " << i;
      }
    });
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, AttnTaskTest,
    ::testing::Values(Case{ElemType::kF32, ElemType::kF32, 64, 3, 1, 1, 0, false},
                      Case{ElemType::kF16, ElemType::kF16, 64, 3, 1, 17, 0, false},
                      Case{ElemType::kF16, ElemType::kF16, 64, 3, 1, 97, 0, true},
                      Case{ElemType::kF16, ElemType::kF32, 64, 1, 5, 300, 0, false},
                      Case{ElemType::kF32, ElemType::kF16, 256, 4, 16, 300, 0, true},
                      Case{ElemType::kF16, ElemType::kF16, 256, 4, 1, 700, 64, false},
                      Case{ElemType::kF16, ElemType::kF16, 48, 8, 8, 33, 5, false},
                      Case{ElemType::kF32, ElemType::kF32, 16, 2, 32, 64, 0, true}));

TEST(MergePartialsTest, RowsWithoutKeysAreZero) {
  float acc[4] = {1, 2, 3, 4}, m[1] = {-INFINITY}, l[1] = {0};
  AttnPartial p{acc, m, l};
  float out[4] = {9, 9, 9, 9};
  MergePartials(&p, 1, 1, 1, 4, out, 4);
  for (float v : out) EXPECT_EQ(v, 0.0f);
}

}  // namespace
}  // namespace slimkv::kv
