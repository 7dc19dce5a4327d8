// The GGUF parser behind GgufFile::Open/FromBytes (internal to the gguf part).
//
// It reads the byte image front to back with a bounds-checked cursor and keeps track of
// where it is (section, entry number, key or tensor name, array item path, field), so that
// every failure names the file and the field without building those names on the happy path.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "base/status.h"
#include "gguf/gguf_file.h"

namespace slimkv::gguf {

class Parser {
 public:
  // `file` receives the parsed contents; its name_ must already be set (it prefixes every
  // message). `bytes` must outlive `file`.
  Parser(std::span<const uint8_t> bytes, GgufFile& file) : bytes_(bytes), file_(file) {}

  Status Parse();

 private:
  enum class Section { kHeader, kMetadata, kTensor };

  Status ParseHeader(uint64_t* n_tensors, uint64_t* n_metadata);
  Status ParseMetadata(uint64_t n_metadata);
  Status ParseValue(ValueType type, int depth, MetaValue* out);
  Status ParseArray(int depth, MetaValue* out);
  Status ResolveAlignment();
  Status ParseTensorInfos(uint64_t n_tensors);
  Status ParseTensorInfo(TensorInfo* t);
  Status PlaceTensorData();

  // Bounds-checked reads at pos_; on failure they report the current location.
  uint64_t remaining() const { return bytes_.size() - pos_; }
  Status Need(uint64_t n);
  template <typename T>
  Status Read(T* out);
  // Reads an OnDisk scalar into out->v widened to Stored.
  template <typename OnDisk, typename Stored>
  Status ReadScalar(MetaValue* out);
  // `what` names the string in messages ("key", "name", "string"); a length above
  // `max_bytes` is an error.
  Status ReadString(std::string* out, uint64_t max_bytes, const char* what);

  // Location, for messages.
  void Enter(Section s, uint64_t index);
  std::string Where() const;
  template <typename... Args>
  Status Error(fmt::format_string<Args...> f, Args&&... args) const {
    return DataLoss("{}: {}: {}", file_.name_, Where(),
                    fmt::format(f, std::forward<Args>(args)...));
  }

  std::span<const uint8_t> bytes_;
  uint64_t pos_ = 0;
  GgufFile& file_;
  uint64_t values_left_ = kMaxMetadataValues;

  Section section_ = Section::kHeader;
  uint64_t index_ = 0;                // metadata or tensor number
  std::string name_;                  // its key or tensor name once read
  std::vector<uint64_t> array_path_;  // item indices inside (nested) arrays
  const char* field_ = nullptr;       // the field being read, if any
};

}  // namespace slimkv::gguf
