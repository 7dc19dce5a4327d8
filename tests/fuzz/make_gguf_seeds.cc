// Writes the GGUF fuzzer's seed corpus: small valid files covering every metadata type,
// nested arrays, versions 2 and 3, alignments, and a tensor of every dequantizable type.
// Usage: make_gguf_seeds OUT_DIR
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "gguf/gguf_writer.h"
#include "gguf/types.h"

namespace {

using slimkv::gguf::testing::GgufWriter;
using slimkv::gguf::testing::Value;

void Write(const std::filesystem::path& dir, const std::string& name, const GgufWriter& w) {
  const auto bytes = w.Build();
  std::ofstream out(dir / (name + ".gguf"), std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
}

// Deterministic filler; fp16 scales that happen to be inf/NaN only make values non-finite.
std::vector<uint8_t> Bytes(size_t n, uint32_t seed) {
  std::vector<uint8_t> b(n);
  for (size_t i = 0; i < n; ++i) {
    seed = seed * 1664525u + 1013904223u;
    b[i] = static_cast<uint8_t>(seed >> 24) & 0x3F;  // small fp16 exponents: finite scales
  }
  return b;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUT_DIR\n", argv[0]);
    return 2;
  }
  const std::filesystem::path dir = argv[1];
  std::filesystem::create_directories(dir);

  GgufWriter meta;
  meta.Kv("general.architecture", Value::String("llama"))
      .Kv("u8", Value::U8(1))
      .Kv("i8", Value::I8(-1))
      .Kv("u16", Value::U16(2))
      .Kv("i16", Value::I16(-2))
      .Kv("u32", Value::U32(3))
      .Kv("i32", Value::I32(-3))
      .Kv("f32", Value::F32(0.5f))
      .Kv("bool", Value::Bool(true))
      .Kv("u64", Value::U64(4))
      .Kv("i64", Value::I64(-4))
      .Kv("f64", Value::F64(0.25))
      .Kv("tokens", Value::Array(8, {Value::String("<s>"), Value::String("hi")}))
      .Kv("scores", Value::Array(6, {Value::F32(0.f), Value::F32(-1.f)}))
      .Kv("nested", Value::Array(9, {Value::Array(4, {Value::U32(1)}), Value::Array(8, {})}));
  Write(dir, "metadata", meta);

  GgufWriter v2 = meta;
  v2.version = 2;
  v2.Tensor("w", {4, 2}, 0, Bytes(32, 1));
  Write(dir, "v2", v2);

  for (uint64_t alignment : {1, 64}) {
    GgufWriter w;
    w.alignment = alignment;
    w.Kv("general.alignment", Value::U32(static_cast<uint32_t>(alignment)));
    w.Tensor("a", {3}, 0, Bytes(12, 2)).Tensor("b", {32}, 8, Bytes(34, 3));
    Write(dir, "alignment" + std::to_string(alignment), w);
  }

  // One tensor of every type slimkv can dequantize, two rows each, and one it cannot.
  GgufWriter all;
  all.Kv("general.architecture", Value::String("llama"));
  for (uint32_t id = 0; id < 64; ++id) {
    const auto traits = slimkv::gguf::GetTypeTraits(id);
    if (!traits || !traits->can_dequantize) continue;
    all.Tensor(std::string(traits->name), {traits->block_elems, 2}, id,
               Bytes(2 * traits->block_bytes, id));
  }
  all.Tensor("iq4_nl", {32}, 20, Bytes(18, 99));
  Write(dir, "all_types", all);
  return 0;
}
