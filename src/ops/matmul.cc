#include "ops/matmul.h"

#include <algorithm>
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
// Exported entry point: one target's row-range kernel.
void MatMulRowsEntry(const WeightMatrix& w, int64_t r_begin, int64_t r_end, const float* x,
                     int64_t ldx, const float* xpack, int64_t n_tokens, float* y, int64_t ldy,
                     float* scratch) {
  if (w.format == WeightFormat::kGgml) {
    return blocks::MatMulRows(w, r_begin, r_end, x, ldx, xpack, n_tokens, y, ldy, scratch);
  }
  MatMulRows(w, r_begin, r_end, x, ldx, xpack, n_tokens, y, ldy, scratch);
}
size_t PackedXFloatsEntry(int64_t cols, int64_t n_tokens) { return PackedXFloats(cols, n_tokens); }
void PackXEntry(const float* x, int64_t ldx, int64_t n_tokens, int64_t cols, float* xpack) {
  PackX(x, ldx, n_tokens, cols, xpack);
}
}  // namespace slimkv::ops::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace slimkv::ops {
HWY_EXPORT(MatMulRowsEntry);
HWY_EXPORT(PackedXFloatsEntry);
HWY_EXPORT(PackXEntry);

namespace {
// Per-thread scratch (dequantized panel, or per-group sums of x); grows to the widest
// matrix seen. Thread-local because the pool's threads are long-lived.
float* Scratch(int64_t cols) {
  thread_local AlignedBuffer<float> buf;
  const size_t need = HWY_NAMESPACE::PanelScratchFloats(cols);
  if (buf.size() < need) buf.Resize(need);
  return buf.data();
}
}  // namespace

void MatMul(ThreadPool& pool, const float* x, int64_t ldx, int64_t n_tokens,
            std::span<const MatMulOutput> outs) {
  if (outs.empty() || n_tokens <= 0) return;
  const int64_t cols = outs[0].w->cols;
  int64_t total_rows = 0;
  for (const auto& o : outs) {
    CHECK(o.w->cols == cols, "outputs of one MatMul must share cols ({} vs {})", o.w->cols, cols);
    CHECK(cols % 16 == 0, "cols {} not a multiple of 16", cols);
    total_rows += o.w->rows;
  }
  auto* kernel = HWY_DYNAMIC_DISPATCH(MatMulRowsEntry);
  // The panel kernel reads x transposed; pack it once here rather than per thread and
  // output (it was a fifth of a 16-token step).
  const float* xpack = nullptr;
  if (n_tokens > kMatMulStreamMaxTokens) {
    thread_local AlignedBuffer<float> pack;
    const size_t need = HWY_DYNAMIC_DISPATCH(PackedXFloatsEntry)(cols, n_tokens);
    if (pack.size() < need) pack.Resize(need);
    HWY_DYNAMIC_DISPATCH(PackXEntry)(x, ldx, n_tokens, cols, pack.data());
    xpack = pack.data();
  }
  // Split the concatenated rows of all outputs into one range per thread, in units of 4 rows.
  pool.ParallelFor(0, total_rows, 4, [&](int64_t b, int64_t e, int) {
    float* scratch = Scratch(cols);
    int64_t base = 0;
    for (const auto& o : outs) {
      const int64_t lo = std::max(b, base), hi = std::min(e, base + o.w->rows);
      if (lo < hi) kernel(*o.w, lo - base, hi - base, x, ldx, xpack, n_tokens, o.y, o.ldy, scratch);
      base += o.w->rows;
    }
  });
}

void MatMulReference(const float* x, int64_t ldx, int64_t n_tokens,
                     std::span<const MatMulOutput> outs) {
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
