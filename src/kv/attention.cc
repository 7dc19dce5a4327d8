#include "kv/attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "base/check.h"
#include "kv/attention_scratch.h"
#include "kv/codec.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kv/attention.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "kv/attention-inl.h"

HWY_BEFORE_NAMESPACE();
namespace slimkv::kv::HWY_NAMESPACE {
SLIMKV_KV_ATTR void RunAttnTaskEntry(const AttnTask& task, AttnPartial out, BlockScratch& s) {
  AttnTaskImpl(task, out, s);
}
}  // namespace slimkv::kv::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace slimkv::kv {
HWY_EXPORT(RunAttnTaskEntry);

namespace {
void CheckTask(const AttnTask& t) {
  CHECK(t.n_q_tokens * t.group <= kMaxAttnTaskRows, "task rows {}", t.n_q_tokens * t.group);
  CHECK(t.block_tokens % 16 == 0 && t.block_tokens <= kMaxAttnBlockTokens, "block_tokens {}", t.block_tokens);
  CHECK(t.head_dim % 16 == 0 && t.head_dim <= kMaxAttnHeadDim, "head_dim {}", t.head_dim);
  CHECK(t.sealed && t.staged, "task without block kinds");
}
}  // namespace

BlockKind MakeBlockKind(const KvFormat& k, const KvFormat& v, int block_tokens, int head_dim) {
  BlockKind b;
  b.k = k;
  b.v = v;
  b.k_layout = KLayout(k, block_tokens, head_dim);
  b.v_layout = VLayout(v, block_tokens, head_dim);
  b.v_offset = b.k_layout.total();
  return b;
}

// Default-initialised, not zeroed: the kernels write before they read, and a page nobody
// uses (the pre-RoPE tile, the integer buffers of the float paths) is never touched.
AttnScratch::AttnScratch() : p_(new BlockScratch) {}
AttnScratch::~AttnScratch() = default;
AttnScratch::AttnScratch(AttnScratch&&) noexcept = default;
AttnScratch& AttnScratch::operator=(AttnScratch&&) noexcept = default;

void RunAttnTask(const AttnTask& task, AttnPartial out, AttnScratch& scratch) {
  CheckTask(task);
  HWY_DYNAMIC_DISPATCH(RunAttnTaskEntry)(task, out, scratch.get());
}

void RunAttnTaskReference(const AttnTask& t, AttnPartial out) {
  CheckTask(t);
  const int rows = t.n_q_tokens * t.group, hd = t.head_dim, bt = t.block_tokens;
  std::vector<float> k(hd), v(hd), q(hd);
  for (int r = 0; r < rows; ++r) {
    const int i = r / t.group;
    const float* src = t.q + i * t.ldq + (r % t.group) * hd;
    for (int x = 0; x < hd; ++x) q[x] = src[x] * t.scale;
    if (t.k_rotation) t.k_rotation->Apply(q.data());
    const int slot = t.first_q_slot + i;
    const int lo = std::max(t.key_begin, t.window > 0 ? slot - t.window + 1 : 0);
    const int hi = std::min(t.key_end, slot + 1);
    std::vector<double> s;
    double m = -std::numeric_limits<double>::infinity();
    for (int j = lo; j < hi; ++j) {
      const int b = j / bt;
      const BlockKind& kind = b < t.n_sealed ? *t.sealed : *t.staged;
      DecodeK(kind.k, bt, hd, j % bt, t.blocks[b], k.data());
      if (t.rope) {  // keys stored before RoPE: rotate by the key's position (its slot)
        const int half = t.rope->rope_dim / 2;
        for (int p = 0; p < half; ++p) {
          const int a = t.rope->style == ops::RopeStyle::kNormal ? 2 * p : p;
          const int c = t.rope->style == ops::RopeStyle::kNormal ? 2 * p + 1 : p + half;
          const float cs = t.rope->cos[p * t.rope->stride + j], sn = t.rope->sin[p * t.rope->stride + j];
          const float x0 = k[a], x1 = k[c];
          k[a] = x0 * cs - x1 * sn;
          k[c] = x0 * sn + x1 * cs;
        }
      }
      double dot = 0;
      for (int x = 0; x < hd; ++x) dot += static_cast<double>(q[x]) * k[x];
      s.push_back(dot);
      m = std::max(m, dot);
    }
    double l = 0;
    std::vector<double> acc(hd, 0.0);
    for (int j = lo; j < hi; ++j) {
      const double p = std::exp(s[j - lo] - m);
      l += p;
      const int b = j / bt;
      const BlockKind& kind = b < t.n_sealed ? *t.sealed : *t.staged;
      DecodeV(kind.v, bt, hd, j % bt, t.blocks[b] + kind.v_offset, v.data());
      for (int x = 0; x < hd; ++x) acc[x] += p * v[x];
    }
    out.m[r] = hi > lo ? static_cast<float>(m) : -std::numeric_limits<float>::infinity();
    out.l[r] = static_cast<float>(l);
    for (int x = 0; x < hd; ++x) out.acc[r * hd + x] = static_cast<float>(acc[x]);
  }
}

void MergePartials(const AttnPartial* parts, int n_parts, int rows, int group, int head_dim, float* out,
                   int64_t ldo, float* merged_m, float* merged_l) {
  for (int r = 0; r < rows; ++r) {
    float m = -std::numeric_limits<float>::infinity();
    for (int p = 0; p < n_parts; ++p) m = std::max(m, parts[p].m[r]);
    float* o = out + (r / group) * ldo + (r % group) * head_dim;
    std::fill(o, o + head_dim, 0.0f);
    if (merged_m) merged_m[r] = m;
    if (merged_l) merged_l[r] = 0.0f;
    if (m == -std::numeric_limits<float>::infinity()) continue;  // no visible key
    float l = 0;
    for (int p = 0; p < n_parts; ++p) {
      if (parts[p].l[r] == 0.0f) continue;
      const float w = std::exp(parts[p].m[r] - m);
      l += w * parts[p].l[r];
      const float* a = parts[p].acc + r * head_dim;
      for (int x = 0; x < head_dim; ++x) o[x] += w * a[x];
    }
    const float inv = 1.0f / l;
    for (int x = 0; x < head_dim; ++x) o[x] *= inv;
    if (merged_l) merged_l[r] = l;
  }
}

}  // namespace slimkv::kv
#endif  // HWY_ONCE
