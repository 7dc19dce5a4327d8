// GGUF v2/v3 reader: header, metadata (all value types, nested arrays), tensor infos,
// alignment; tensor data is used in place through mmap.
//
// Every count, offset, size and string length is validated with overflow-safe arithmetic
// before it is used; a bad file gives a DataLoss status naming the file and the field
// (e.g. "model.gguf: tensor 'blk.0.attn_q.weight': data [offset 123, 4096 bytes] runs past the
// end of the file (2000 bytes)"), never a crash.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <variant>
#include <vector>

#include "base/mapped_file.h"
#include "base/status.h"
#include "gguf/types.h"

namespace slimkv::gguf {

// GGUF metadata value types (on-disk ids).
enum class ValueType : uint32_t {
  kUint8 = 0, kInt8 = 1, kUint16 = 2, kInt16 = 3, kUint32 = 4, kInt32 = 5, kFloat32 = 6,
  kBool = 7, kString = 8, kArray = 9, kUint64 = 10, kInt64 = 11, kFloat64 = 12,
};
std::string_view ValueTypeName(ValueType t);

struct MetaValue;
struct MetaArray {
  ValueType elem_type;
  std::vector<MetaValue> items;
};

// One metadata value. Integers keep their declared type in `type`; the variant holds them
// widened (uint64_t for unsigned, int64_t for signed, double for floats).
struct MetaValue {
  ValueType type;
  std::variant<uint64_t, int64_t, double, bool, std::string, std::shared_ptr<MetaArray>> v;

  bool is_integer() const;
  bool is_float() const;
  // Integer value if it is an integer type and fits in the requested range.
  std::optional<int64_t> AsInt() const;
  std::optional<double> AsFloat() const;  // floats and integers
  const std::string* AsString() const;
  const MetaArray* AsArray() const;
  std::string ToString(size_t max_items = 8) const;  // for `slimkv info`
};

struct TensorInfo {
  std::string name;
  std::vector<uint64_t> dims;  // ggml order: dims[0] is the contiguous (row) dimension
  TensorType type;
  uint64_t offset = 0;      // relative to the start of the data section
  uint64_t n_elements = 0;  // product of dims
  uint64_t n_bytes = 0;     // BytesFor(type, n_elements)
  const uint8_t* data = nullptr;  // points into the mapping

  uint64_t rows() const;  // n_elements / dims[0]
  std::string ShapeString() const;  // "[576, 49152]"
};

class GgufFile {
 public:
  // Opens, maps and validates the whole file: header, metadata, tensor infos, tensor data
  // ranges (inside the file, aligned, not overlapping), tensor types known.
  static Result<GgufFile> Open(const std::string& path);
  // Parses an in-memory image (used by the fuzzer and tests); `name` appears in errors.
  static Result<GgufFile> FromBytes(std::span<const uint8_t> bytes, std::string name);

  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  const std::string& name() const { return name_; }  // path or given name, used in messages

  // Metadata in file order.
  const std::vector<std::pair<std::string, MetaValue>>& metadata() const { return metadata_; }
  const MetaValue* Find(std::string_view key) const;
  // Typed getters: NotFound if absent, DataLoss naming the key if the type is wrong.
  Result<std::string> GetString(std::string_view key) const;
  Result<int64_t> GetInt(std::string_view key) const;
  Result<double> GetFloat(std::string_view key) const;
  Result<bool> GetBool(std::string_view key) const;
  const MetaArray* GetArray(std::string_view key) const;  // nullptr if absent or not an array

  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* FindTensor(std::string_view name) const;

 private:
  std::string name_;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  std::shared_ptr<MappedFile> file_;  // owner of the bytes when opened from a path
  std::vector<uint8_t> owned_;        // owner of the bytes when built FromBytes
  std::vector<std::pair<std::string, MetaValue>> metadata_;
  std::unordered_map<std::string, size_t> meta_index_;
  std::vector<TensorInfo> tensors_;
  std::unordered_map<std::string, size_t> tensor_index_;
  friend class Parser;
};

}  // namespace slimkv::gguf
