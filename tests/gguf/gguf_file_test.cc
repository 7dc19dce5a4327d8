// GgufFile on valid files built by the test writer: every metadata type, getters, tensor
// placement, alignment, Open from disk.
#include "gguf/gguf_file.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "gguf/dequant.h"
#include "gguf/gguf_writer.h"

namespace slimkv::gguf {
namespace {

using testing::GgufWriter;
using testing::Value;

std::vector<uint8_t> Floats(std::initializer_list<float> v) {
  std::vector<uint8_t> out(v.size() * 4);
  std::memcpy(out.data(), std::data(v), out.size());
  return out;
}

Result<GgufFile> Parse(const std::vector<uint8_t>& bytes) {
  return GgufFile::FromBytes(bytes, "test.gguf");
}

TEST(GgufFileTest, EmptyFileWithOnlyAHeaderOpens) {
  GgufWriter w;
  auto f = Parse(w.Build());
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_EQ(f->version(), 3u);
  EXPECT_EQ(f->alignment(), 32u);
  EXPECT_TRUE(f->metadata().empty());
  EXPECT_TRUE(f->tensors().empty());
  EXPECT_EQ(f->name(), "test.gguf");
}

TEST(GgufFileTest, Version2Opens) {
  GgufWriter w;
  w.version = 2;
  w.Kv("a", Value::U32(1));
  auto f = Parse(w.Build());
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_EQ(f->version(), 2u);
}

TEST(GgufFileTest, EveryValueTypeRoundTrips) {
  GgufWriter w;
  w.Kv("u8", Value::U8(250))
      .Kv("i8", Value::I8(-7))
      .Kv("u16", Value::U16(65535))
      .Kv("i16", Value::I16(-32768))
      .Kv("u32", Value::U32(4000000000u))
      .Kv("i32", Value::I32(-2000000000))
      .Kv("f32", Value::F32(1e-5f))
      .Kv("bool", Value::Bool(true))
      .Kv("str", Value::String("hello\nworld"))
      .Kv("u64", Value::U64(~uint64_t{0}))
      .Kv("i64", Value::I64(-(int64_t{1} << 62)))
      .Kv("f64", Value::F64(0.1))
      .Kv("empty_str", Value::String(""))
      .Kv("arr", Value::Array(5, {Value::I32(1), Value::I32(-2), Value::I32(3)}))
      .Kv("strs", Value::Array(8, {Value::String("a"), Value::String("")}))
      .Kv("empty_arr", Value::Array(10, {}))
      .Kv("nested", Value::Array(9, {Value::Array(0, {Value::U8(1)}), Value::Array(8, {})}));
  auto f = Parse(w.Build());
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  ASSERT_EQ(f->metadata().size(), 17u);
  EXPECT_EQ(f->metadata()[0].first, "u8");  // file order kept
  EXPECT_EQ(*f->GetInt("u8"), 250);
  EXPECT_EQ(*f->GetInt("i8"), -7);
  EXPECT_EQ(*f->GetInt("u16"), 65535);
  EXPECT_EQ(*f->GetInt("i16"), -32768);
  EXPECT_EQ(*f->GetInt("u32"), 4000000000);
  EXPECT_EQ(*f->GetInt("i32"), -2000000000);
  EXPECT_EQ(*f->GetFloat("f32"), static_cast<double>(1e-5f));
  EXPECT_EQ(*f->GetBool("bool"), true);
  EXPECT_EQ(*f->GetString("str"), "hello\nworld");
  EXPECT_EQ(*f->GetInt("i64"), -(int64_t{1} << 62));
  EXPECT_EQ(*f->GetFloat("f64"), 0.1);
  EXPECT_EQ(*f->GetFloat("u32"), 4000000000.0);  // integers read as floats
  EXPECT_EQ(*f->GetString("empty_str"), "");
  EXPECT_EQ(f->Find("u16")->type, ValueType::kUint16);
  EXPECT_TRUE(f->Find("u16")->is_integer());
  EXPECT_TRUE(f->Find("f64")->is_float());

  // uint64 above INT64_MAX is an integer that does not fit GetInt.
  EXPECT_EQ(std::get<uint64_t>(f->Find("u64")->v), ~uint64_t{0});
  auto too_big = f->GetInt("u64");
  ASSERT_FALSE(too_big.ok());
  EXPECT_EQ(too_big.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(too_big.status().message().find("'u64'"), std::string::npos);

  const MetaArray* arr = f->GetArray("arr");
  ASSERT_NE(arr, nullptr);
  EXPECT_EQ(arr->elem_type, ValueType::kInt32);
  ASSERT_EQ(arr->items.size(), 3u);
  EXPECT_EQ(*arr->items[1].AsInt(), -2);
  EXPECT_EQ(*f->GetArray("strs")->items[0].AsString(), "a");
  EXPECT_TRUE(f->GetArray("empty_arr")->items.empty());
  const MetaArray* nested = f->GetArray("nested");
  ASSERT_EQ(nested->items.size(), 2u);
  EXPECT_EQ(nested->items[0].AsArray()->items[0].AsInt(), 1);
  EXPECT_EQ(nested->items[1].AsArray()->elem_type, ValueType::kString);
  EXPECT_EQ(f->GetArray("str"), nullptr);
  EXPECT_EQ(f->GetArray("missing"), nullptr);

  EXPECT_EQ(f->Find("f32")->ToString(), "1e-05");
  EXPECT_EQ(f->Find("str")->ToString(), "\"hello\\nworld\"");
  EXPECT_EQ(f->Find("arr")->ToString(2), "[1, -2, ... (3 int32 items)]");
  EXPECT_EQ(f->Find("nested")->ToString(), "[[1], []]");
  EXPECT_EQ(f->Find("bool")->ToString(), "true");
}

TEST(GgufFileTest, GettersReportMissingAndWrongTypes) {
  GgufWriter w;
  w.Kv("general.name", Value::String("x")).Kv("n", Value::U32(3));
  auto f = Parse(w.Build());
  ASSERT_TRUE(f.ok());
  auto missing = f->GetInt("nope");
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("'nope'"), std::string::npos);
  auto wrong = f->GetInt("general.name");
  EXPECT_EQ(wrong.status().code(), StatusCode::kDataLoss);
  EXPECT_EQ(wrong.status().message(),
            "test.gguf: metadata 'general.name' has type string, expected an integer");
  EXPECT_EQ(f->GetString("n").status().code(), StatusCode::kDataLoss);
  EXPECT_EQ(f->GetBool("n").status().code(), StatusCode::kDataLoss);
  EXPECT_EQ(f->GetFloat("general.name").status().code(), StatusCode::kDataLoss);
}

TEST(GgufFileTest, TensorsArePlacedAtAlignedOffsets) {
  GgufWriter w;
  w.Kv("general.alignment", Value::U32(64));
  w.alignment = 64;
  std::vector<uint8_t> q8(34 * 2, 0);
  q8[0] = 0x00;
  q8[1] = 0x3C;  // d = 1.0
  q8[2] = 5;     // first quant
  w.Tensor("a", {3}, 0, Floats({1.f, 2.f, 3.f}))
      .Tensor("b.weight", {32, 2}, 8, q8)
      .Tensor("c", {2, 1, 1, 2}, 1, std::vector<uint8_t>(8, 0));
  const auto bytes = w.Build();
  auto f = Parse(bytes);
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_EQ(f->alignment(), 64u);
  EXPECT_EQ(f->data_offset() % 64, 0u);
  ASSERT_EQ(f->tensors().size(), 3u);
  const TensorInfo& a = f->tensors()[0];
  EXPECT_EQ(a.name, "a");
  EXPECT_EQ(a.type, TensorType::kF32);
  EXPECT_EQ(a.offset, 0u);
  EXPECT_EQ(a.n_elements, 3u);
  EXPECT_EQ(a.n_bytes, 12u);
  EXPECT_EQ(a.rows(), 1u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(a.data) % 64, 0u);
  float first;
  std::memcpy(&first, a.data + 4, 4);
  EXPECT_EQ(first, 2.f);

  const TensorInfo* b = f->FindTensor("b.weight");
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->offset, 64u);
  EXPECT_EQ(b->ShapeString(), "[32, 2]");
  EXPECT_EQ(b->rows(), 2u);
  EXPECT_EQ(b->row_bytes(), 34u);
  std::vector<float> row(32);
  ASSERT_TRUE(Dequantize(b->type, b->data, row.data(), 32).ok());
  EXPECT_EQ(row[0], 5.f);

  const TensorInfo* c = f->FindTensor("c");
  EXPECT_EQ(c->offset, 192u);
  EXPECT_EQ(c->ShapeString(), "[2, 1, 1, 2]");
  EXPECT_EQ(c->rows(), 2u);
  EXPECT_EQ(f->FindTensor("d"), nullptr);
}

TEST(GgufFileTest, AlignmentOfOneAndAnyIntegerTypeIsAccepted) {
  for (const Value& v : {Value::U8(1), Value::U64(16), Value::I32(8)}) {
    GgufWriter w;
    w.Kv("general.alignment", v);
    w.alignment = v.bytes[0];
    w.Tensor("a", {1}, 0, Floats({1.f})).Tensor("b", {1}, 0, Floats({2.f}));
    auto f = Parse(w.Build());
    ASSERT_TRUE(f.ok()) << f.status().ToString();
    EXPECT_EQ(f->alignment(), v.bytes[0]);
  }
}

TEST(GgufFileTest, TrailingBytesAndGapsAreAllowed) {
  GgufWriter w;
  w.Tensor("a", {1}, 0, Floats({1.f}));
  w.tensors[0].offset = 96;  // a gap before the only tensor
  w.trailing = {1, 2, 3};
  auto f = Parse(w.Build());
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_EQ(f->tensors()[0].offset, 96u);
}

TEST(GgufFileTest, TensorsInAnyOffsetOrderAreAccepted) {
  GgufWriter w;
  w.Tensor("late", {8}, 0, std::vector<uint8_t>(32, 1))
      .Tensor("early", {8}, 0, std::vector<uint8_t>(32, 2));
  w.tensors[0].offset = 32;
  w.tensors[1].offset = 0;
  auto f = Parse(w.Build());
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_EQ(f->FindTensor("early")->data[0], 2);
}

TEST(GgufFileTest, KnownTypeWithoutDequantizerOpensButDoesNotDequantize) {
  GgufWriter w;
  w.Tensor("iq", {256}, static_cast<uint32_t>(TensorType::kIQ2_XXS), std::vector<uint8_t>(66, 0));
  auto f = Parse(w.Build());
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  const TensorInfo& t = f->tensors()[0];
  EXPECT_EQ(t.n_bytes, 66u);
  std::vector<float> out(256);
  const Status st = Dequantize(t.type, t.data, out.data(), 256);
  EXPECT_EQ(st.code(), StatusCode::kUnimplemented);
  EXPECT_NE(st.message().find("IQ2_XXS"), std::string::npos);
}

TEST(GgufFileTest, ArraysNestedToTheLimitOpen) {
  Value v = Value::Array(4, {Value::U32(7)});
  for (int depth = 1; depth < kMaxArrayDepth; ++depth) v = Value::Array(9, {v});
  GgufWriter w;
  w.Kv("deep", v);
  auto f = Parse(w.Build());
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  const MetaValue* m = f->Find("deep");
  for (int depth = 1; depth < kMaxArrayDepth; ++depth) m = &m->AsArray()->items[0];
  EXPECT_EQ(*m->AsArray()->items[0].AsInt(), 7);
}

TEST(GgufFileTest, OpenMapsAFileFromDisk) {
  GgufWriter w;
  w.Kv("general.architecture", Value::String("llama"));
  w.Tensor("a", {4}, 0, Floats({1.f, 2.f, 3.f, 4.f}));
  const auto bytes = w.Build();
  const auto path =
      std::filesystem::temp_directory_path() / fmt::format("slimkv_gguf_open_{}.gguf", ::getpid());
  {
    std::ofstream out(path, std::ios::binary);
    out.write(reinterpret_cast<const char*>(bytes.data()),
              static_cast<std::streamsize>(bytes.size()));
  }
  auto f = GgufFile::Open(path.string());
  std::filesystem::remove(path);  // the mapping keeps the data alive
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_EQ(f->name(), path.string());
  EXPECT_EQ(*f->GetString("general.architecture"), "llama");
  GgufFile moved = std::move(*f);
  float v;
  std::memcpy(&v, moved.tensors()[0].data + 12, 4);
  EXPECT_EQ(v, 4.f);
}

TEST(GgufFileTest, OpenReportsMissingFilesAndDirectories) {
  auto missing = GgufFile::Open("/nonexistent/x.gguf");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("/nonexistent/x.gguf"), std::string::npos);
  auto dir = GgufFile::Open(std::filesystem::temp_directory_path().string());
  EXPECT_FALSE(dir.ok());
}

}  // namespace
}  // namespace slimkv::gguf
