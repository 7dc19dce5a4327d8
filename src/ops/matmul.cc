#include "ops/matmul.h"

#include <algorithm>
#include <array>
#include <vector>

#include "base/aligned_buffer.h"
#include "base/check.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "ops/matmul.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "ops/matmul-inl.h"
#include "ops/matmul_blocks-inl.h"

HWY_BEFORE_NAMESPACE();
namespace slimkv::ops::HWY_NAMESPACE {
// Exported entry points: one target's tile-range kernel and x preparation.
void MatMulTilesEntry(const WeightMatrix& w, int64_t tile_begin, int64_t tile_end, const float* x,
                      int64_t ldx, const QuantizedX* q, int64_t n_tokens, float* y, int64_t ldy,
                      float* scratch) {
  if (w.format == WeightFormat::kGgml) {
    return blocks::MatMulTiles(w, tile_begin, tile_end, x, ldx, n_tokens, y, ldy, scratch);
  }
  MatMulTiles(w, tile_begin, tile_end, x, ldx, q, n_tokens, y, ldy, scratch);
}
size_t PanelScratchFloatsEntry(int64_t cols) { return PanelScratchFloats(cols); }
void QuantizeXEntry(const float* x, int64_t ldx, int64_t n_tokens, const QuantizedX& q) {
  QuantizeX(x, ldx, n_tokens, q);
}
}  // namespace slimkv::ops::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace slimkv::ops {
HWY_EXPORT(MatMulTilesEntry);
HWY_EXPORT(PanelScratchFloatsEntry);
HWY_EXPORT(QuantizeXEntry);

namespace {
constexpr size_t kMaxOutputs = 8;

// Per-thread scratch (dequantized tiles for the prefill kernel); grows to the
// widest matrix seen. Thread-local because the pool's threads are long-lived.
float* Scratch(int64_t cols) {
  thread_local AlignedBuffer<float> buf;
  const size_t need = HWY_DYNAMIC_DISPATCH(PanelScratchFloatsEntry)(cols);
  if (buf.size() < need) buf.Resize(need);
  return buf.data();
}

// x prepared for the decode kernels of quantized weights with `group`-column
// groups, in buffers of the calling thread (read by all threads of the call's parallel region).
struct XBuffers {
  AlignedBuffer<int8_t> parts;
  AlignedBuffer<float> scale, sum;
  AlignedBuffer<int32_t> part_sum;

  QuantizedX Prepare(const float* x, int64_t ldx, int64_t n_tokens, int64_t cols, int group) {
    auto grow = [](auto& b, size_t n) {
      if (b.size() < n) b.Resize(n);
    };
    const int64_t groups = cols / group;
    grow(parts, n_tokens * kXParts * cols);
    grow(scale, n_tokens * groups);
    grow(sum, n_tokens * groups);
    grow(part_sum, n_tokens * groups * kXParts);
    const QuantizedX q{.group = group,
                       .cols = cols,
                       .groups = groups,
                       .parts = parts.data(),
                       .scale = scale.data(),
                       .sum = sum.data(),
                       .part_sum = part_sum.data()};
    HWY_DYNAMIC_DISPATCH(QuantizeXEntry)(x, ldx, n_tokens, q);
    return q;
  }
};
}  // namespace

void MatMul(ThreadPool& pool, const float* x, int64_t ldx, int64_t n_tokens,
            std::span<const MatMulOutput> outs) {
  if (outs.empty() || n_tokens <= 0) return;
  const int64_t cols = outs[0].w->cols;
  int64_t total_tiles = 0;
  for (const auto& o : outs) {
    CHECK(o.w->cols == cols, "outputs of one MatMul must share cols ({} vs {})", o.w->cols, cols);
    CHECK(cols % 16 == 0, "cols {} not a multiple of 16", cols);
    total_tiles += o.w->tiles();
  }
  auto* kernel = HWY_DYNAMIC_DISPATCH(MatMulTilesEntry);
  // Decode kernels of quantized weights read x prepared once per call and group size.
  thread_local XBuffers buffers[2];  // groups of 32 and of 16 columns
  QuantizedX prepared[2];
  CHECK(outs.size() <= kMaxOutputs, "{} outputs in one MatMul", outs.size());
  std::array<const QuantizedX*, kMaxOutputs> q{};
  if (n_tokens <= std::max(kMatMulIntegerMaxTokens, kMatMulStreamMaxTokens)) {
    for (size_t i = 0; i < outs.size(); ++i) {
      const WeightMatrix& w = *outs[i].w;
      if (!w.quantized()) continue;
      const int slot = w.group == 16 ? 1 : 0;
      CHECK(w.group == 16 || w.group == 32, "group {}", w.group);
      if (prepared[slot].group == 0) prepared[slot] = buffers[slot].Prepare(x, ldx, n_tokens, cols, w.group);
      q[i] = &prepared[slot];
    }
  }
  // Split the concatenated tiles of all outputs into a few ranges per thread.
  pool.ParallelFor(0, total_tiles, 1, [&](int64_t b, int64_t e, int) {
    float* scratch = Scratch(cols);  // the fp32 panels; kGgml's decode kernel keeps sums of x there
    int64_t base = 0;
    for (size_t i = 0; i < outs.size(); ++i) {
      const auto& o = outs[i];
      const int64_t lo = std::max(b, base), hi = std::min(e, base + o.w->tiles());
      if (lo < hi) kernel(*o.w, lo - base, hi - base, x, ldx, q[i], n_tokens, o.y, o.ldy, scratch);
      base += o.w->tiles();
    }
  });
}

void MatMulReference(const float* x, int64_t ldx, int64_t n_tokens, std::span<const MatMulOutput> outs) {
  for (const auto& o : outs) {
    std::vector<float> row(o.w->cols);
    for (int64_t r = 0; r < o.w->rows; ++r) {
      o.w->DequantizeRow(r, row.data());
      for (int64_t t = 0; t < n_tokens; ++t) {
        double acc = 0;
        for (int64_t c = 0; c < o.w->cols; ++c) acc += static_cast<double>(row[c]) * x[t * ldx + c];
        o.y[t * o.ldy + r] = static_cast<float>(acc);
      }
    }
  }
}

}  // namespace slimkv::ops
#endif  // HWY_ONCE
