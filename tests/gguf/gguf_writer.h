// A small GGUF writer for tests and fuzz seeds (header-only: tests/CMakeLists.txt builds only
// *_test.cc files). It writes whatever it is told, including lies: claimed counts, lengths,
// dimension counts and offsets can be overridden to build hostile files field by field.
// Build() can also report which field each byte belongs to, in the reader's vocabulary
// ("header", "metadata #3 'key'", "tensor #1 'name'"), so truncation tests can check that an
// error names the field where the file was cut.
#pragma once

#include <fmt/format.h>

#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace slimkv::gguf::testing {

// An encoded metadata value: its on-disk type id and payload bytes.
struct Value {
  uint32_t type = 0;
  std::vector<uint8_t> bytes;

  template <typename T>
  static Value Scalar(uint32_t type, T v) {
    Value out{type, std::vector<uint8_t>(sizeof(T))};
    std::memcpy(out.bytes.data(), &v, sizeof(T));
    return out;
  }
  static Value U8(uint8_t v) { return Scalar(0, v); }
  static Value I8(int8_t v) { return Scalar(1, v); }
  static Value U16(uint16_t v) { return Scalar(2, v); }
  static Value I16(int16_t v) { return Scalar(3, v); }
  static Value U32(uint32_t v) { return Scalar(4, v); }
  static Value I32(int32_t v) { return Scalar(5, v); }
  static Value F32(float v) { return Scalar(6, v); }
  static Value Bool(bool v) { return Scalar(7, static_cast<uint8_t>(v)); }
  static Value U64(uint64_t v) { return Scalar(10, v); }
  static Value I64(int64_t v) { return Scalar(11, v); }
  static Value F64(double v) { return Scalar(12, v); }
  // A string whose length field claims `claimed_len` (default: its real length).
  static Value String(std::string_view s, std::optional<uint64_t> claimed_len = std::nullopt) {
    const uint64_t len = claimed_len.value_or(s.size());
    Value out{8, std::vector<uint8_t>(8 + s.size())};
    std::memcpy(out.bytes.data(), &len, 8);
    if (!s.empty()) std::memcpy(out.bytes.data() + 8, s.data(), s.size());
    return out;
  }
  // An array of `items` (all of type `elem_type`); `claimed_count` overrides the count.
  static Value Array(uint32_t elem_type, const std::vector<Value>& items,
                     std::optional<uint64_t> claimed_count = std::nullopt) {
    Value out = Scalar(9, elem_type);
    const Value count = Scalar(0, claimed_count.value_or(items.size()));
    out.bytes.insert(out.bytes.end(), count.bytes.begin(), count.bytes.end());
    for (const Value& item : items)
      out.bytes.insert(out.bytes.end(), item.bytes.begin(), item.bytes.end());
    return out;
  }
  // Any type id with any payload.
  static Value Raw(uint32_t type, std::vector<uint8_t> bytes) {
    return Value{type, std::move(bytes)};
  }
};

struct KvSpec {
  std::string key;
  Value value;
  std::optional<uint64_t> key_len;  // claimed key length
};

struct TensorSpec {
  std::string name;
  std::vector<uint64_t> dims;
  uint32_t type = 0;
  std::vector<uint8_t> data;         // written at the tensor's offset in the data section
  std::optional<uint64_t> offset;    // default: after the previous tensor, aligned
  std::optional<uint32_t> n_dims;    // claimed dimension count
  std::optional<uint64_t> name_len;  // claimed name length
};

// Bytes from `begin` up to the next region's begin belong to the field `label`.
struct Region {
  uint64_t begin;
  std::string label;
};

class GgufWriter {
 public:
  std::string magic = "GGUF";
  uint32_t version = 3;
  std::optional<uint64_t> tensor_count;  // claimed counts
  std::optional<uint64_t> kv_count;
  uint64_t alignment = 32;  // padding the writer uses; add general.alignment yourself
  std::vector<KvSpec> kvs;
  std::vector<TensorSpec> tensors;
  std::vector<uint8_t> trailing;  // appended after the data section

  GgufWriter& Kv(std::string key, Value v) {
    kvs.push_back({std::move(key), std::move(v), std::nullopt});
    return *this;
  }
  GgufWriter& Tensor(std::string name, std::vector<uint64_t> dims, uint32_t type,
                     std::vector<uint8_t> data) {
    TensorSpec t;
    t.name = std::move(name);
    t.dims = std::move(dims);
    t.type = type;
    t.data = std::move(data);
    tensors.push_back(std::move(t));
    return *this;
  }

  std::vector<uint8_t> Build(std::vector<Region>* regions = nullptr) const {
    std::vector<uint8_t> out;
    auto put = [&](const void* p, size_t n) {
      const auto* b = static_cast<const uint8_t*>(p);
      out.insert(out.end(), b, b + n);
    };
    auto put32 = [&](uint32_t v) { put(&v, 4); };
    auto put64 = [&](uint64_t v) { put(&v, 8); };
    auto mark = [&](std::string label) {
      if (regions) regions->push_back({out.size(), std::move(label)});
    };
    mark("header");
    put(magic.data(), magic.size());
    put32(version);
    put64(tensor_count.value_or(tensors.size()));
    put64(kv_count.value_or(kvs.size()));
    for (size_t i = 0; i < kvs.size(); ++i) {
      const KvSpec& kv = kvs[i];
      mark(fmt::format("metadata #{}", i));
      put64(kv.key_len.value_or(kv.key.size()));
      put(kv.key.data(), kv.key.size());
      mark(fmt::format("metadata #{} '{}'", i, kv.key));
      put32(kv.value.type);
      put(kv.value.bytes.data(), kv.value.bytes.size());
    }
    std::vector<uint64_t> offsets;
    uint64_t cursor = 0;
    for (const TensorSpec& t : tensors) {
      offsets.push_back(t.offset.value_or(AlignUp(cursor, alignment)));
      cursor = offsets.back() + t.data.size();
    }
    for (size_t i = 0; i < tensors.size(); ++i) {
      const TensorSpec& t = tensors[i];
      mark(fmt::format("tensor #{}", i));
      put64(t.name_len.value_or(t.name.size()));
      put(t.name.data(), t.name.size());
      mark(fmt::format("tensor #{} '{}'", i, t.name));
      put32(t.n_dims.value_or(static_cast<uint32_t>(t.dims.size())));
      for (uint64_t d : t.dims) put64(d);
      put32(t.type);
      put64(offsets[i]);
    }
    if (!tensors.empty()) {
      const uint64_t data_start = AlignUp(out.size(), alignment);
      for (size_t i = 0; i < tensors.size(); ++i) {
        // The padding before a tensor's data belongs to it: cutting the file there leaves
        // that tensor short.
        mark(fmt::format("tensor #{} '{}'", i, tensors[i].name));
        const std::vector<uint8_t>& data = tensors[i].data;
        if (offsets[i] > (uint64_t{1} << 28)) continue;  // a hostile offset: write nothing
        const uint64_t end = data_start + offsets[i] + data.size();
        if (out.size() < end) out.resize(end, 0);
        std::copy(data.begin(), data.end(),
                  out.begin() + static_cast<ptrdiff_t>(data_start + offsets[i]));
      }
    }
    out.insert(out.end(), trailing.begin(), trailing.end());
    return out;
  }

  static uint64_t AlignUp(uint64_t x, uint64_t a) { return a == 0 ? x : (x + a - 1) / a * a; }
};

// The label of the field that byte `offset` belongs to.
inline const std::string& LabelAt(const std::vector<Region>& regions, uint64_t offset) {
  const Region* found = &regions.front();
  for (const Region& r : regions) {
    if (r.begin <= offset) found = &r;
  }
  return found->label;
}

}  // namespace slimkv::gguf::testing
