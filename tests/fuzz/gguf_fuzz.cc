// libFuzzer target for the GGUF reader and the dequantizers: any byte string must give
// either a Status naming the file, or a file whose tensors lie inside it and dequantize.
// Run with tools/run_fuzz.sh.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "base/check.h"
#include "gguf/dequant.h"
#include "gguf/gguf_file.h"

namespace {

// Rows dequantized per tensor, and a cap on elements so one input stays fast.
constexpr uint64_t kMaxRows = 2;
constexpr uint64_t kMaxElements = uint64_t{1} << 18;

void CheckOpenedFile(const slimkv::gguf::GgufFile& f, size_t size) {
  using slimkv::gguf::Dequantize;
  for (const auto& [key, value] : f.metadata()) {
    CHECK(f.Find(key) == &value, "key '{}' does not find itself", key);
    (void)value.ToString();
  }
  for (const slimkv::gguf::TensorInfo& t : f.tensors()) {
    CHECK(f.FindTensor(t.name) == &t, "tensor '{}' does not find itself", t.name);
    // FromBytes' buffer is rounded up to 64 bytes, so ASan alone would miss a small overrun.
    CHECK(f.data_offset() + t.offset + t.n_bytes <= size, "tensor '{}' ends past the file", t.name);
    CHECK(t.n_bytes == *slimkv::gguf::BytesFor(t.type, t.n_elements), "size of '{}'", t.name);
    const uint64_t rows = std::min(t.rows(), kMaxRows);
    const uint64_t n = std::min(rows * t.dims[0], kMaxElements / t.dims[0] * t.dims[0]);
    if (n == 0) continue;
    std::vector<float> out(n);
    const slimkv::Status st = Dequantize(t.type, t.data, out.data(), n);
    CHECK(st.ok() || st.code() == slimkv::StatusCode::kUnimplemented, "{}", st.ToString());
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto f = slimkv::gguf::GgufFile::FromBytes({data, size}, "fuzz.gguf");
  if (!f.ok()) {
    const std::string& m = f.status().message();
    CHECK(m.rfind("fuzz.gguf: ", 0) == 0, "message does not name the file: {}", m);
    return 0;
  }
  CheckOpenedFile(*f, size);
  return 0;
}
