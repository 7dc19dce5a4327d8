#include "ops/block_decode.h"

#include "base/check.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "ops/block_decode.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "ops/block_decode-inl.h"

HWY_BEFORE_NAMESPACE();
namespace slimkv::ops::HWY_NAMESPACE {
template <class B>
struct DequantRowOp {
  static void Run(const WeightMatrix& w, int64_t r, float* out) {
    blocks::DequantRow<B>(w.codes.data() + r * w.code_bytes_per_row(), w.cols, out);
  }
};

void DequantizeGgmlRowEntry(const WeightMatrix& w, int64_t r, float* out) {
  blocks::ForBlockType<DequantRowOp>(w.ggml_type, w, r, out);
}
}  // namespace slimkv::ops::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace slimkv::ops {
HWY_EXPORT(DequantizeGgmlRowEntry);

void DequantizeGgmlRow(const WeightMatrix& w, int64_t r, float* out) {
  CHECK(w.format == WeightFormat::kGgml && r >= 0 && r < w.rows, "row {} of a {} matrix", r,
        WeightFormatName(w.format));
  HWY_DYNAMIC_DISPATCH(DequantizeGgmlRowEntry)(w, r, out);
}
}  // namespace slimkv::ops
#endif  // HWY_ONCE
