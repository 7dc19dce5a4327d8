// GGUF v2/v3 reader: header, metadata (all value types, nested arrays), tensor infos,
// alignment; tensor data is used in place through mmap.
//
// Every count, offset, size and string length is validated with overflow-safe arithmetic
// before it is used; a bad file gives a DataLoss status naming the file and the field, never a
// crash. Messages read "<file>: <where>: <problem>", where <where> is "header",
// "metadata #<i> '<key>'[<item>]..." or "tensor #<i> '<name>'", followed by the field when
// there is one, e.g.
//   model.gguf: tensor #3 'blk.0.attn_q.weight': data [offset 123, 4096 bytes] runs past the
//   end of the file (2000 bytes)
// A valid file using a tensor type slimkv cannot dequantize opens; Dequantize (dequant.h)
// then returns Unimplemented for it.
//
// File layout (GGUF v2 and v3 are identical; v1 used 32-bit counts and is rejected):
//   "GGUF" u32 version, u64 tensor_count, u64 metadata_count
//   metadata_count x { string key, u32 value_type, value }
//     string = u64 length, bytes (no terminator); array = u32 elem_type, u64 count, items
//   tensor_count x { string name, u32 n_dims, u64 dims[n_dims], u32 type, u64 offset }
//   padding to general.alignment (default 32), then the data section; tensor offsets are
//   relative to its start and multiples of the alignment.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <variant>
#include <vector>

#include "base/aligned_buffer.h"
#include "base/mapped_file.h"
#include "base/status.h"
#include "gguf/types.h"

namespace slimkv::gguf {

// Bounds on what a file may claim, so a hostile file cannot make the reader recurse or
// allocate without limit. All are far above any real model (the largest vocabularies give
// about 1M metadata values; models have thousands of tensors).
inline constexpr uint32_t kMaxDims = 4;  // GGML_MAX_DIMS
inline constexpr uint64_t kMaxTensors = 1 << 20;
inline constexpr uint64_t kMaxMetadataValues = 1 << 22;  // keys plus array items, all levels
inline constexpr int kMaxArrayDepth = 8;                 // arrays of arrays of ...
inline constexpr uint64_t kMaxKeyBytes = 65535;          // GGUF spec
inline constexpr uint64_t kMaxTensorNameBytes = 64;      // GGUF spec (GGML_MAX_NAME)
inline constexpr uint64_t kMaxAlignment = 1 << 20;
inline constexpr uint64_t kDefaultAlignment = 32;

// GGUF metadata value types (on-disk ids).
enum class ValueType : uint32_t {
  kUint8 = 0,
  kInt8 = 1,
  kUint16 = 2,
  kInt16 = 3,
  kUint32 = 4,
  kInt32 = 5,
  kFloat32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kUint64 = 10,
  kInt64 = 11,
  kFloat64 = 12,
};
std::string_view ValueTypeName(ValueType t);

struct MetaValue;
struct MetaArray {
  ValueType elem_type;
  std::vector<MetaValue> items;
};

// One metadata value. Integers keep their declared type in `type`; the variant holds them
// widened (uint64_t for unsigned, int64_t for signed, double for floats). Arrays are shared,
// immutable once parsed, so copying a MetaValue is cheap.
struct MetaValue {
  ValueType type = ValueType::kUint8;
  std::variant<uint64_t, int64_t, double, bool, std::string, std::shared_ptr<MetaArray>> v;

  bool is_integer() const;
  bool is_float() const;
  // The value if it is of an integer type and fits in int64_t (a uint64 above INT64_MAX
  // does not).
  std::optional<int64_t> AsInt() const;
  std::optional<double> AsFloat() const;  // floats and integers
  const std::string* AsString() const;
  const MetaArray* AsArray() const;
  std::string ToString(size_t max_items = 8) const;  // for `slimkv info`
};

struct TensorInfo {
  std::string name;
  std::vector<uint64_t> dims;  // ggml order: dims[0] is the contiguous (row) dimension
  TensorType type = TensorType::kF32;
  uint64_t offset = 0;            // relative to the start of the data section
  uint64_t n_elements = 0;        // product of dims
  uint64_t n_bytes = 0;           // BytesFor(type, n_elements)
  const uint8_t* data = nullptr;  // points into the mapping

  uint64_t rows() const;            // n_elements / dims[0]
  uint64_t row_bytes() const;       // n_bytes / rows(): a row is a whole number of blocks
  std::string ShapeString() const;  // "[576, 49152]"
};

// Move-only: tensor data pointers refer to the bytes this object owns or maps.
class GgufFile {
 public:
  GgufFile(GgufFile&&) noexcept = default;
  GgufFile& operator=(GgufFile&&) noexcept = default;
  GgufFile(const GgufFile&) = delete;
  GgufFile& operator=(const GgufFile&) = delete;

  // Opens, maps and validates the whole file: header, metadata, tensor infos, tensor data
  // ranges (inside the file, aligned, not overlapping), tensor types known.
  static Result<GgufFile> Open(const std::string& path);
  // Parses a copy of an in-memory image (used by the fuzzer and tests); `name` appears in
  // errors. The copy is 64-byte aligned, so tensor data is as aligned as in a mapped file.
  static Result<GgufFile> FromBytes(std::span<const uint8_t> bytes, std::string name);

  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  // File offset of the data section (tensor offsets are relative to it).
  uint64_t data_offset() const { return data_offset_; }
  const std::string& name() const { return name_; }  // path or given name, used in messages

  // Metadata in file order.
  const std::vector<std::pair<std::string, MetaValue>>& metadata() const { return metadata_; }
  const MetaValue* Find(std::string_view key) const;
  // Typed getters: NotFound if absent, DataLoss naming the file and key if the type is wrong.
  // GetInt takes any integer type that fits in int64_t; GetFloat takes floats and integers.
  Result<std::string> GetString(std::string_view key) const;
  Result<int64_t> GetInt(std::string_view key) const;
  Result<double> GetFloat(std::string_view key) const;
  Result<bool> GetBool(std::string_view key) const;
  const MetaArray* GetArray(std::string_view key) const;  // nullptr if absent or not an array

  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* FindTensor(std::string_view name) const;

 private:
  GgufFile() = default;

  std::string name_;
  uint32_t version_ = 0;
  uint64_t alignment_ = kDefaultAlignment;
  uint64_t data_offset_ = 0;
  std::shared_ptr<MappedFile> file_;  // owner of the bytes when opened from a path
  AlignedBuffer<uint8_t> owned_;      // owner of the bytes when built FromBytes
  std::vector<std::pair<std::string, MetaValue>> metadata_;
  std::unordered_map<std::string, size_t> meta_index_;
  std::vector<TensorInfo> tensors_;
  std::unordered_map<std::string, size_t> tensor_index_;
  friend class Parser;
};

}  // namespace slimkv::gguf
