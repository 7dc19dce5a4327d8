#include "gguf/gguf_file.h"

#include <fmt/format.h>

#include <cstring>

#include "base/check.h"
#include "gguf/parser.h"

namespace slimkv::gguf {

uint64_t TensorInfo::rows() const {
  CHECK(!dims.empty() && dims[0] != 0, "tensor '{}' has no shape", name);
  return n_elements / dims[0];
}

uint64_t TensorInfo::row_bytes() const { return n_bytes / rows(); }

std::string TensorInfo::ShapeString() const {
  std::string s = "[";
  for (size_t i = 0; i < dims.size(); ++i) s += fmt::format("{}{}", i ? ", " : "", dims[i]);
  return s + "]";
}

Result<GgufFile> GgufFile::Open(const std::string& path) {
  ASSIGN_OR_RETURN(MappedFile mapped, MappedFile::Open(path));
  GgufFile f;
  f.name_ = path;
  f.file_ = std::make_shared<MappedFile>(std::move(mapped));
  Parser parser({f.file_->data(), f.file_->size()}, f);
  RETURN_IF_ERROR(parser.Parse());
  return Result<GgufFile>(std::move(f));
}

Result<GgufFile> GgufFile::FromBytes(std::span<const uint8_t> bytes, std::string name) {
  GgufFile f;
  f.name_ = std::move(name);
  f.owned_.Resize(bytes.size());
  if (!bytes.empty()) std::memcpy(f.owned_.data(), bytes.data(), bytes.size());
  Parser parser({f.owned_.data(), f.owned_.size()}, f);
  RETURN_IF_ERROR(parser.Parse());
  return Result<GgufFile>(std::move(f));
}

const MetaValue* GgufFile::Find(std::string_view key) const {
  const auto it = meta_index_.find(std::string(key));
  return it == meta_index_.end() ? nullptr : &metadata_[it->second].second;
}

namespace {

Status WrongType(const std::string& file, std::string_view key, const MetaValue& v,
                 std::string_view expected) {
  return DataLoss("{}: metadata '{}' has type {}, expected {}", file, key, ValueTypeName(v.type),
                  expected);
}

}  // namespace

Result<std::string> GgufFile::GetString(std::string_view key) const {
  const MetaValue* v = Find(key);
  if (!v) return NotFound("{}: metadata key '{}' not found", name_, key);
  const std::string* s = v->AsString();
  if (!s) return WrongType(name_, key, *v, "string");
  return *s;
}

Result<int64_t> GgufFile::GetInt(std::string_view key) const {
  const MetaValue* v = Find(key);
  if (!v) return NotFound("{}: metadata key '{}' not found", name_, key);
  if (!v->is_integer()) return WrongType(name_, key, *v, "an integer");
  const auto i = v->AsInt();
  if (!i)
    return DataLoss("{}: metadata '{}' = {} does not fit in int64", name_, key, v->ToString());
  return *i;
}

Result<double> GgufFile::GetFloat(std::string_view key) const {
  const MetaValue* v = Find(key);
  if (!v) return NotFound("{}: metadata key '{}' not found", name_, key);
  const auto d = v->AsFloat();
  if (!d) return WrongType(name_, key, *v, "a number");
  return *d;
}

Result<bool> GgufFile::GetBool(std::string_view key) const {
  const MetaValue* v = Find(key);
  if (!v) return NotFound("{}: metadata key '{}' not found", name_, key);
  const bool* b = std::get_if<bool>(&v->v);
  if (!b) return WrongType(name_, key, *v, "bool");
  return *b;
}

const MetaArray* GgufFile::GetArray(std::string_view key) const {
  const MetaValue* v = Find(key);
  return v ? v->AsArray() : nullptr;
}

const TensorInfo* GgufFile::FindTensor(std::string_view name) const {
  const auto it = tensor_index_.find(std::string(name));
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

}  // namespace slimkv::gguf
