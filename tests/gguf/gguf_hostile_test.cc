// Hostile GGUF files: every field of a valid file made to lie, truncation at every byte, and
// byte mutations. Each must give a non-ok Status whose message names the file and the field
// (never a crash, never a huge allocation).
#include <gtest/gtest.h>

#include <chrono>
#include <functional>

#include "gguf/dequant.h"
#include "gguf/gguf_file.h"
#include "gguf/gguf_writer.h"

namespace slimkv::gguf {
namespace {

using testing::GgufWriter;
using testing::Region;
using testing::Value;

constexpr uint32_t kF32 = 0, kQ4_0 = 2, kQ8_0 = 8;

// A valid file: three kinds of metadata and three tensors of different types.
GgufWriter BaseFile() {
  GgufWriter w;
  w.Kv("general.architecture", Value::String("llama"))
      .Kv("test.u32", Value::U32(7))
      .Kv("test.tokens", Value::Array(8, {Value::String("a"), Value::String("bc")}));
  w.Tensor("a", {8, 2}, kF32, std::vector<uint8_t>(64, 0))
      .Tensor("b", {32, 2}, kQ8_0, std::vector<uint8_t>(68, 0))
      .Tensor("c", {64}, kQ4_0, std::vector<uint8_t>(36, 0));
  return w;
}

// True if `message` is "<file>: <label>..." with the label ending at a field boundary
// ("metadata #1" must not match "metadata #12").
bool NamesField(const std::string& message, const std::string& file, const std::string& label) {
  const std::string prefix = file + ": " + label;
  if (message.compare(0, prefix.size(), prefix) != 0) return false;
  return message.size() == prefix.size() ||
         !std::isdigit(static_cast<unsigned char>(message[prefix.size()]));
}

struct HostileCase {
  std::string name;
  std::function<void(GgufWriter&)> mutate;
  std::string where;   // expected start of the message after "hostile.gguf: "
  std::string detail;  // expected somewhere in the message
  StatusCode code = StatusCode::kDataLoss;
};

void PrintTo(const HostileCase& c, std::ostream* os) { *os << c.name; }

class HostileFileTest : public ::testing::TestWithParam<HostileCase> {};

TEST_P(HostileFileTest, IsRejectedNamingTheField) {
  const HostileCase& c = GetParam();
  GgufWriter w = BaseFile();
  c.mutate(w);
  const auto bytes = w.Build();
  auto f = GgufFile::FromBytes(bytes, "hostile.gguf");
  ASSERT_FALSE(f.ok()) << c.name << " was accepted";
  const Status& st = f.status();
  EXPECT_EQ(st.code(), c.code) << st.ToString();
  EXPECT_TRUE(NamesField(st.message(), "hostile.gguf", c.where))
      << "message: " << st.message() << "\nexpected it to start with: hostile.gguf: " << c.where;
  EXPECT_NE(st.message().find(c.detail), std::string::npos)
      << "message: " << st.message() << "\nexpected it to contain: " << c.detail;
}

constexpr uint64_t kHuge = uint64_t{1} << 60;
constexpr uint64_t kMax64 = ~uint64_t{0};

Value Nested(int depth) {
  Value v = Value::Array(4, {Value::U32(1)});
  for (int d = 1; d < depth; ++d) v = Value::Array(9, {v});
  return v;
}

std::vector<HostileCase> Cases() {
  using W = GgufWriter&;
  return {
      // Header.
      {"bad_magic", [](W w) { w.magic = "GGML"; }, "header: magic", "expected \"GGUF\""},
      {"short_magic",
       [](W w) {
         w.magic = "GG";
         w.version = 0x5547;
       },
       "header: magic", "found bytes 47 47 47 55"},
      {"version_1", [](W w) { w.version = 1; }, "header: version", "GGUF v1 is not supported"},
      {"version_0", [](W w) { w.version = 0; }, "header: version", "GGUF v0 is not supported"},
      {"version_4", [](W w) { w.version = 4; }, "header: version", "GGUF v4 is not supported"},
      {"big_endian", [](W w) { w.version = 0x03000000; }, "header: version", "big-endian"},
      {"tensor_count_huge", [](W w) { w.tensor_count = kHuge; }, "header: tensor count",
       "exceed the limit"},
      {"metadata_count_huge", [](W w) { w.kv_count = kMax64; }, "header: metadata count",
       "exceed the limit"},
      {"metadata_count_one_more",
       [](W w) {
         w.tensors.clear();
         w.kv_count = 4;
       },
       "metadata #3: key", "needs 8 bytes at offset"},
      {"tensor_count_one_more", [](W w) { w.tensor_count = 4; }, "tensor #3", "name is empty"},
      // Metadata keys.
      {"key_length_huge", [](W w) { w.kvs[1].key_len = kMax64; }, "metadata #1: key",
       "runs past the end of the file"},
      {"key_length_past_end", [](W w) { w.kvs[1].key_len = 100000; }, "metadata #1: key",
       "length 100000 runs past"},
      {"key_too_long", [](W w) { w.kvs[1].key = std::string(70000, 'k'); }, "metadata #1: key",
       "exceeds the limit of 65535"},
      {"key_empty", [](W w) { w.kvs[1].key = ""; }, "metadata #1", "key is empty"},
      {"key_duplicate", [](W w) { w.kvs[2].key = "general.architecture"; },
       "metadata #2 'general.architecture'", "duplicate key (first at metadata #0)"},
      // Metadata values.
      {"value_type_13", [](W w) { w.kvs[1].value.type = 13; }, "metadata #1 'test.u32'",
       "unknown value type 13"},
      {"value_type_max", [](W w) { w.kvs[1].value.type = 0xFFFFFFFF; }, "metadata #1 'test.u32'",
       "unknown value type 4294967295"},
      {"string_length_huge", [](W w) { w.kvs[0].value = Value::String("llama", kMax64); },
       "metadata #0 'general.architecture': string", "runs past the end of the file"},
      {"string_length_past_end", [](W w) { w.kvs[0].value = Value::String("llama", 100000); },
       "metadata #0 'general.architecture': string", "length 100000"},
      {"string_length_off_by_one",
       [](W w) {
         w.tensors.clear();
         w.kvs[2].value = Value::String("abc", 4);  // the last bytes of the file
       },
       "metadata #2 'test.tokens': string", "length 4 runs past the end of the file"},
      {"bool_2", [](W w) { w.kvs[1].value = Value::Raw(7, {2}); }, "metadata #1 'test.u32'",
       "bool value 2"},
      {"array_elem_type_unknown", [](W w) { w.kvs[2].value = Value::Array(13, {}); },
       "metadata #2 'test.tokens'", "unknown array element type 13"},
      {"array_count_huge", [](W w) { w.kvs[2].value = Value::Array(0, {Value::U8(1)}, kHuge); },
       "metadata #2 'test.tokens'", "cannot fit in the"},
      {"array_count_max", [](W w) { w.kvs[2].value = Value::Array(8, {}, kMax64); },
       "metadata #2 'test.tokens'", "18446744073709551615 string items cannot fit"},
      {"array_of_arrays_count_huge", [](W w) { w.kvs[2].value = Value::Array(9, {}, kHuge); },
       "metadata #2 'test.tokens'", "array items cannot fit"},
      {"array_item_string_past_end",
       [](W w) {
         w.kvs[2].value = Value::Array(8, {Value::String("a"), Value::String("bc", 1000)});
       },
       "metadata #2 'test.tokens'[1]: string", "length 1000 runs past"},
      {"array_nested_too_deep", [](W w) { w.kvs[2].value = Nested(kMaxArrayDepth + 1); },
       "metadata #2 'test.tokens'[0][0][0][0][0][0][0][0]", "nested more than 8 deep"},
      {"too_many_values",
       [](W w) {
         w.kvs[2].value = Value::Array(0, {}, kMaxMetadataValues);
         w.kvs[2].value.bytes.resize(w.kvs[2].value.bytes.size() + kMaxMetadataValues);
       },
       "metadata #2 'test.tokens'", "past 4194304 values"},
      // general.alignment.
      {"alignment_0", [](W w) { w.Kv("general.alignment", Value::U32(0)); },
       "metadata #3 'general.alignment'", "alignment 0 is not a power of two"},
      {"alignment_3", [](W w) { w.Kv("general.alignment", Value::U32(3)); },
       "metadata #3 'general.alignment'", "alignment 3 is not a power of two"},
      {"alignment_negative", [](W w) { w.Kv("general.alignment", Value::I32(-32)); },
       "metadata #3 'general.alignment'", "alignment -32 is not a power of two"},
      {"alignment_huge", [](W w) { w.Kv("general.alignment", Value::U64(uint64_t{1} << 40)); },
       "metadata #3 'general.alignment'", "exceeds the limit"},
      {"alignment_u64_max", [](W w) { w.Kv("general.alignment", Value::U64(kMax64)); },
       "metadata #3 'general.alignment'", "not a power of two"},
      {"alignment_string", [](W w) { w.Kv("general.alignment", Value::String("32")); },
       "metadata #3 'general.alignment'", "has type string"},
      // Tensor infos.
      {"name_length_huge", [](W w) { w.tensors[1].name_len = kMax64; }, "tensor #1: name",
       "runs past the end"},
      {"name_too_long", [](W w) { w.tensors[1].name = std::string(65, 'n'); }, "tensor #1: name",
       "exceeds the limit of 64"},
      {"name_empty", [](W w) { w.tensors[1].name = ""; }, "tensor #1", "name is empty"},
      {"name_duplicate", [](W w) { w.tensors[2].name = "a"; }, "tensor #2 'a'",
       "duplicate tensor name (first at tensor #0)"},
      {"name_unprintable",
       [](W w) {
         w.tensors[2].name = std::string("x\n\x01", 3);
         w.tensors[2].dims = {3};
       },
       "tensor #2 'x\\x0a\\x01'", "row of 3"},
      {"n_dims_0",
       [](W w) {
         w.tensors[0].n_dims = 0;
         w.tensors[0].dims = {};
       },
       "tensor #0 'a'", "no dimensions"},
      {"n_dims_5",
       [](W w) {
         w.tensors[0].dims = {1, 1, 1, 8, 2};
       },
       "tensor #0 'a'", "5 dimensions, at most 4"},
      {"n_dims_huge", [](W w) { w.tensors[0].n_dims = 0xFFFFFFFF; }, "tensor #0 'a'",
       "4294967295 dimensions"},
      {"dim_zero",
       [](W w) {
         w.tensors[0].dims = {8, 0};
       },
       "tensor #0 'a'", "dims[1] is 0"},
      {"elements_overflow",
       [](W w) {
         w.tensors[0].dims = {uint64_t{1} << 32, uint64_t{1} << 32};
       },
       "tensor #0 'a'", "element count of shape [4294967296, 4294967296] overflows"},
      {"dim_above_int64", [](W w) { w.tensors[0].dims = {kMax64}; }, "tensor #0 'a'",
       "overflows 63 bits"},
      {"bytes_overflow",
       [](W w) {
         w.tensors[0].dims = {uint64_t{1} << 31, uint64_t{1} << 31};
       },
       "tensor #0 'a'", "overflow a 64-bit byte count"},
      {"type_unknown", [](W w) { w.tensors[1].type = 99; }, "tensor #1 'b'",
       "unknown tensor type id 99"},
      {"type_retired", [](W w) { w.tensors[1].type = 4; }, "tensor #1 'b'",
       "unknown tensor type id 4"},
      {"type_max", [](W w) { w.tensors[1].type = 0xFFFFFFFF; }, "tensor #1 'b'",
       "unknown tensor type id 4294967295"},
      {"row_not_whole_blocks",
       [](W w) {
         w.tensors[1].dims = {48, 2};
       },
       "tensor #1 'b'", "row of 48 elements is not a multiple of the Q8_0 block size (32)"},
      {"row_smaller_than_block",
       [](W w) {
         w.tensors[2].dims = {16, 4};
       },
       "tensor #2 'c'", "row of 16 elements is not a multiple of the Q4_0 block size (32)"},
      // Tensor data.
      {"offset_unaligned", [](W w) { w.tensors[1].offset = 68; }, "tensor #1 'b'",
       "data offset 68 is not a multiple of the alignment (32)"},
      {"offset_past_end",
       [](W w) {
         w.tensors[2].offset = 1 << 20;
         w.tensors[2].data.clear();
       },
       "tensor #2 'c'", "data [offset 1048576, 36 bytes] runs past the end of the file"},
      {"offset_wraps", [](W w) { w.tensors[2].offset = kMax64 - 31; }, "tensor #2 'c'",
       "runs past the end"},
      {"size_past_end",
       [](W w) {
         w.tensors[2].dims = {64, 1 << 20};
       },
       "tensor #2 'c'", "data [offset 160, 37748736 bytes] runs past the end of the file"},
      {"overlap_same_offset", [](W w) { w.tensors[1].offset = 0; }, "tensor #1 'b'",
       "overlaps tensor #0 'a' [offset 0, 64 bytes]"},
      {"overlap_partial",
       [](W w) {
         w.tensors[0].dims = {8, 6};
         w.tensors[0].data.resize(192);
         w.tensors[1].offset = 160;
         w.tensors[2].offset = 256;
       },
       "tensor #1 'b'", "[offset 160, 68 bytes] overlaps tensor #0 'a' [offset 0, 192 bytes]"},
      {"overlap_unordered",
       [](W w) {
         w.tensors[0].offset = 128;
         w.tensors[1].offset = 0;
         w.tensors[2].offset = 64;
       },
       "tensor #2 'c'", "[offset 64, 36 bytes] overlaps tensor #1 'b' [offset 0, 68 bytes]"},
      {"data_section_missing", [](W w) { w.tensors.back().data.clear(); }, "tensor #2 'c'",
       "runs past the end"},
  };
}

INSTANTIATE_TEST_SUITE_P(AllFields, HostileFileTest, ::testing::ValuesIn(Cases()),
                         [](const auto& info) { return info.param.name; });

TEST(HostileFileTest, ArrayClaimingTwoToTheSixtyItemsFailsFast) {
  GgufWriter w;
  w.Kv("big", Value::Array(0, {Value::U8(1)}, kHuge));
  w.trailing.resize(1000);
  const auto bytes = w.Build();
  const auto start = std::chrono::steady_clock::now();
  auto f = GgufFile::FromBytes(bytes, "big.gguf");
  const auto elapsed = std::chrono::steady_clock::now() - start;
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().message(),
            "big.gguf: metadata #0 'big': array of 1152921504606846976 uint8 items cannot fit in "
            "the 1001 bytes left (each takes at least 1)");
  EXPECT_LT(elapsed, std::chrono::milliseconds(100));
}

// A valid file using every metadata type, a non-default alignment and three tensors whose
// data ends exactly at the end of the file.
GgufWriter SmallFile() {
  GgufWriter w;
  w.alignment = 64;
  w.Kv("general.architecture", Value::String("llama"))
      .Kv("general.alignment", Value::U32(64))
      .Kv("u8", Value::U8(1))
      .Kv("i8", Value::I8(-1))
      .Kv("u16", Value::U16(2))
      .Kv("i16", Value::I16(-2))
      .Kv("i32", Value::I32(-3))
      .Kv("f32", Value::F32(0.5f))
      .Kv("bool", Value::Bool(true))
      .Kv("u64", Value::U64(4))
      .Kv("i64", Value::I64(-4))
      .Kv("f64", Value::F64(0.25))
      .Kv("tokens", Value::Array(8, {Value::String("<s>"), Value::String("hi")}))
      .Kv("nested", Value::Array(9, {Value::Array(4, {Value::U32(1), Value::U32(2)})}));
  std::vector<uint8_t> q8(34 * 2, 1);
  w.Tensor("token_embd.weight", {32, 2}, kQ8_0, q8)
      .Tensor("norm", {5}, kF32, std::vector<uint8_t>(20, 0))
      .Tensor("q", {32}, kQ4_0, std::vector<uint8_t>(18, 0));
  return w;
}

TEST(HostileFileTest, TruncationAtEveryByteNamesTheField) {
  std::vector<Region> regions;
  const auto bytes = SmallFile().Build(&regions);
  ASSERT_TRUE(GgufFile::FromBytes(bytes, "small.gguf").ok());
  for (size_t len = 0; len < bytes.size(); ++len) {
    auto f = GgufFile::FromBytes(std::span(bytes.data(), len), "small.gguf");
    ASSERT_FALSE(f.ok()) << "a file cut to " << len << " of " << bytes.size() << " bytes opened";
    EXPECT_EQ(f.status().code(), StatusCode::kDataLoss);
    const std::string& label = testing::LabelAt(regions, len);
    EXPECT_TRUE(NamesField(f.status().message(), "small.gguf", label))
        << "cut at " << len << ": " << f.status().message() << "\nexpected the field: " << label;
  }
}

// Every byte of the small file set to a few interesting values: whatever opens must have
// tensors that dequantize without touching memory outside the file (ASan checks).
TEST(HostileFileTest, ByteMutationsNeverCrash) {
  const auto original = SmallFile().Build();
  int opened = 0;
  for (size_t i = 0; i < original.size(); ++i) {
    for (uint8_t v :
         {uint8_t{0}, uint8_t{0xFF}, uint8_t{0x80}, static_cast<uint8_t>(original[i] + 1)}) {
      auto bytes = original;
      bytes[i] = v;
      auto f = GgufFile::FromBytes(bytes, "mutant.gguf");
      if (!f.ok()) {
        EXPECT_EQ(f.status().message().rfind("mutant.gguf: ", 0), 0u) << f.status().message();
        continue;
      }
      ++opened;
      for (const TensorInfo& t : f->tensors()) {
        std::vector<float> out(t.n_elements);
        const Status st = Dequantize(t.type, t.data, out.data(), t.n_elements);
        EXPECT_TRUE(st.ok() || st.code() == StatusCode::kUnimplemented) << st.ToString();
      }
    }
  }
  EXPECT_GT(opened, 0);  // mutations of tensor data and metadata values keep the file valid
}

}  // namespace
}  // namespace slimkv::gguf
