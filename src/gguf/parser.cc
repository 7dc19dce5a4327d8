#include "gguf/parser.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <numeric>

#include "gguf/checked_math.h"

namespace slimkv::gguf {
namespace {

constexpr uint64_t kInt64Max = std::numeric_limits<int64_t>::max();
// Smallest encodings, used to bound how much a claimed count may reserve.
constexpr uint64_t kMinMetadataEntryBytes = 8 + 4 + 1;       // empty key, type, uint8
constexpr uint64_t kMinTensorInfoBytes = 8 + 4 + 8 + 4 + 8;  // empty name, 1 dim, type, offset
constexpr uint32_t kLastValueType = static_cast<uint32_t>(ValueType::kFloat64);

uint64_t MinEncodedBytes(ValueType t) {
  switch (t) {
    case ValueType::kUint8:
    case ValueType::kInt8:
    case ValueType::kBool: return 1;
    case ValueType::kUint16:
    case ValueType::kInt16: return 2;
    case ValueType::kUint32:
    case ValueType::kInt32:
    case ValueType::kFloat32: return 4;
    case ValueType::kUint64:
    case ValueType::kInt64:
    case ValueType::kFloat64: return 8;
    case ValueType::kString: return 8;     // length
    case ValueType::kArray: return 4 + 8;  // element type, count
  }
  return 1;
}

// Names from a hostile file can hold anything; keep messages printable and short.
std::string QuoteName(std::string_view s) {
  constexpr size_t kMaxShown = 96;
  std::string out = "'";
  for (size_t i = 0; i < s.size() && i < kMaxShown; ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c >= 0x7F || c == '\'' || c == '\\') {
      out += fmt::format("\\x{:02x}", c);
    } else {
      out += static_cast<char>(c);
    }
  }
  if (s.size() > kMaxShown) out += "...";
  return out + "'";
}

}  // namespace

void Parser::Enter(Section s, uint64_t index) {
  section_ = s;
  index_ = index;
  name_.clear();
  array_path_.clear();
  field_ = nullptr;
}

std::string Parser::Where() const {
  std::string w;
  switch (section_) {
    case Section::kHeader: w = "header"; break;
    case Section::kMetadata: w = fmt::format("metadata #{}", index_); break;
    case Section::kTensor: w = fmt::format("tensor #{}", index_); break;
  }
  if (!name_.empty()) {
    w += ' ';
    w += QuoteName(name_);
  }
  for (uint64_t i : array_path_) w += fmt::format("[{}]", i);
  if (field_) w += fmt::format(": {}", field_);
  return w;
}

Status Parser::Need(uint64_t n) {
  if (n > remaining()) {
    return Error("needs {} bytes at offset {}, but the file ends at {}", n, pos_, bytes_.size());
  }
  return Status::Ok();
}

template <typename T>
Status Parser::Read(T* out) {
  RETURN_IF_ERROR(Need(sizeof(T)));
  std::memcpy(out, bytes_.data() + pos_, sizeof(T));
  pos_ += sizeof(T);
  return Status::Ok();
}

template <typename OnDisk, typename Stored>
Status Parser::ReadScalar(MetaValue* out) {
  OnDisk x{};
  RETURN_IF_ERROR(Read(&x));
  out->v = static_cast<Stored>(x);
  return Status::Ok();
}

Status Parser::ReadString(std::string* out, uint64_t max_bytes, const char* what) {
  const char* outer_field = field_;
  field_ = what;
  uint64_t len;
  RETURN_IF_ERROR(Read(&len));
  if (len > remaining()) {
    return Error("length {} runs past the end of the file (at offset {}, {} bytes left)", len, pos_,
                 remaining());
  }
  if (len > max_bytes) return Error("length {} exceeds the limit of {} bytes", len, max_bytes);
  out->assign(reinterpret_cast<const char*>(bytes_.data() + pos_), len);
  pos_ += len;
  field_ = outer_field;
  return Status::Ok();
}

Status Parser::Parse() {
  uint64_t n_tensors = 0, n_metadata = 0;
  RETURN_IF_ERROR(ParseHeader(&n_tensors, &n_metadata));
  RETURN_IF_ERROR(ParseMetadata(n_metadata));
  RETURN_IF_ERROR(ResolveAlignment());
  RETURN_IF_ERROR(ParseTensorInfos(n_tensors));
  return PlaceTensorData();
}

Status Parser::ParseHeader(uint64_t* n_tensors, uint64_t* n_metadata) {
  Enter(Section::kHeader, 0);
  field_ = "magic";
  RETURN_IF_ERROR(Need(4));
  const uint8_t* m = bytes_.data();
  if (std::memcmp(m, "GGUF", 4) != 0) {
    return Error("expected \"GGUF\", found bytes {:02x} {:02x} {:02x} {:02x}", m[0], m[1], m[2],
                 m[3]);
  }
  pos_ = 4;
  field_ = "version";
  uint32_t version;
  RETURN_IF_ERROR(Read(&version));
  if (version == 1) {
    return Error("GGUF v1 is not supported (it used 32-bit counts; slimkv reads v2 and v3)");
  }
  if (version != 2 && version != 3) {
    const uint32_t swapped = __builtin_bswap32(version);
    if (swapped >= 1 && swapped <= 3) {
      return Error("{:#010x} looks like v{} byte-swapped: big-endian GGUF files are not supported",
                   version, swapped);
    }
    return Error("GGUF v{} is not supported (slimkv reads v2 and v3)", version);
  }
  file_.version_ = version;
  field_ = "tensor count";
  RETURN_IF_ERROR(Read(n_tensors));
  if (*n_tensors > kMaxTensors) {
    return Error("{} tensors exceed the limit of {}", *n_tensors, kMaxTensors);
  }
  field_ = "metadata count";
  RETURN_IF_ERROR(Read(n_metadata));
  if (*n_metadata > kMaxMetadataValues) {
    return Error("{} entries exceed the limit of {} metadata values", *n_metadata,
                 kMaxMetadataValues);
  }
  return Status::Ok();
}

Status Parser::ParseMetadata(uint64_t n_metadata) {
  auto& metadata = file_.metadata_;
  metadata.reserve(std::min(n_metadata, remaining() / kMinMetadataEntryBytes));
  for (uint64_t i = 0; i < n_metadata; ++i) {
    Enter(Section::kMetadata, i);
    std::string key;
    RETURN_IF_ERROR(ReadString(&key, kMaxKeyBytes, "key"));
    if (key.empty()) return Error("key is empty");
    name_ = key;
    if (auto it = file_.meta_index_.find(key); it != file_.meta_index_.end()) {
      return Error("duplicate key (first at metadata #{})", it->second);
    }
    field_ = "value type";
    uint32_t type;
    RETURN_IF_ERROR(Read(&type));
    field_ = nullptr;
    if (type > kLastValueType) return Error("unknown value type {}", type);
    if (values_left_ == 0) {
      return Error("more than {} metadata values (keys and array items)", kMaxMetadataValues);
    }
    --values_left_;
    MetaValue value;
    RETURN_IF_ERROR(ParseValue(static_cast<ValueType>(type), 0, &value));
    file_.meta_index_.emplace(key, metadata.size());
    metadata.emplace_back(std::move(key), std::move(value));
  }
  return Status::Ok();
}

Status Parser::ParseValue(ValueType type, int depth, MetaValue* out) {
  out->type = type;
  switch (type) {
    case ValueType::kUint8: return ReadScalar<uint8_t, uint64_t>(out);
    case ValueType::kInt8: return ReadScalar<int8_t, int64_t>(out);
    case ValueType::kUint16: return ReadScalar<uint16_t, uint64_t>(out);
    case ValueType::kInt16: return ReadScalar<int16_t, int64_t>(out);
    case ValueType::kUint32: return ReadScalar<uint32_t, uint64_t>(out);
    case ValueType::kInt32: return ReadScalar<int32_t, int64_t>(out);
    case ValueType::kUint64: return ReadScalar<uint64_t, uint64_t>(out);
    case ValueType::kInt64: return ReadScalar<int64_t, int64_t>(out);
    case ValueType::kFloat32: return ReadScalar<float, double>(out);
    case ValueType::kFloat64: return ReadScalar<double, double>(out);
    case ValueType::kBool: {
      uint8_t x = 0;
      RETURN_IF_ERROR(Read(&x));
      if (x > 1) return Error("bool value {} is neither 0 nor 1", x);
      out->v = x == 1;
      break;
    }
    case ValueType::kString: {
      std::string s;
      RETURN_IF_ERROR(ReadString(&s, std::numeric_limits<uint64_t>::max(), "string"));
      out->v = std::move(s);
      break;
    }
    case ValueType::kArray: return ParseArray(depth, out);
    default: return Error("unknown value type {}", static_cast<uint32_t>(type));
  }
  return Status::Ok();
}

Status Parser::ParseArray(int depth, MetaValue* out) {
  if (depth >= kMaxArrayDepth) return Error("arrays nested more than {} deep", kMaxArrayDepth);
  field_ = "array element type";
  uint32_t elem_id;
  RETURN_IF_ERROR(Read(&elem_id));
  field_ = nullptr;
  if (elem_id > kLastValueType) return Error("unknown array element type {}", elem_id);
  const auto elem = static_cast<ValueType>(elem_id);
  field_ = "array length";
  uint64_t count;
  RETURN_IF_ERROR(Read(&count));
  field_ = nullptr;
  // Checked before anything is reserved: a count the remaining bytes cannot hold is a lie.
  const uint64_t min_bytes = MinEncodedBytes(elem);
  if (count > remaining() / min_bytes) {
    return Error("array of {} {} items cannot fit in the {} bytes left (each takes at least {})",
                 count, ValueTypeName(elem), remaining(), min_bytes);
  }
  if (count > values_left_) {
    return Error("array of {} items takes the metadata past {} values (keys and array items)",
                 count, kMaxMetadataValues);
  }
  values_left_ -= count;
  auto array = std::make_shared<MetaArray>();
  array->elem_type = elem;
  array->items.resize(count);
  array_path_.push_back(0);
  for (uint64_t i = 0; i < count; ++i) {
    array_path_.back() = i;
    RETURN_IF_ERROR(ParseValue(elem, depth + 1, &array->items[i]));
  }
  array_path_.pop_back();
  out->v = std::move(array);
  return Status::Ok();
}

Status Parser::ResolveAlignment() {
  const auto it = file_.meta_index_.find("general.alignment");
  if (it == file_.meta_index_.end()) return Status::Ok();
  Enter(Section::kMetadata, it->second);
  name_ = it->first;
  const MetaValue& v = file_.metadata_[it->second].second;
  if (!v.is_integer()) {
    return Error("alignment has type {}, expected an unsigned integer", ValueTypeName(v.type));
  }
  const auto a = v.AsInt();
  if (!a || *a <= 0 || !IsPowerOfTwo(static_cast<uint64_t>(*a))) {
    return Error("alignment {} is not a power of two", v.ToString());
  }
  if (static_cast<uint64_t>(*a) > kMaxAlignment) {
    return Error("alignment {} exceeds the limit of {}", *a, kMaxAlignment);
  }
  file_.alignment_ = static_cast<uint64_t>(*a);
  return Status::Ok();
}

Status Parser::ParseTensorInfos(uint64_t n_tensors) {
  auto& tensors = file_.tensors_;
  tensors.reserve(std::min(n_tensors, remaining() / kMinTensorInfoBytes));
  for (uint64_t i = 0; i < n_tensors; ++i) {
    Enter(Section::kTensor, i);
    TensorInfo t;
    RETURN_IF_ERROR(ParseTensorInfo(&t));
    file_.tensor_index_.emplace(t.name, tensors.size());
    tensors.push_back(std::move(t));
  }
  return Status::Ok();
}

Status Parser::ParseTensorInfo(TensorInfo* t) {
  RETURN_IF_ERROR(ReadString(&t->name, kMaxTensorNameBytes, "name"));
  if (t->name.empty()) return Error("name is empty");
  name_ = t->name;
  if (auto it = file_.tensor_index_.find(t->name); it != file_.tensor_index_.end()) {
    return Error("duplicate tensor name (first at tensor #{})", it->second);
  }
  field_ = "dimension count";
  uint32_t n_dims;
  RETURN_IF_ERROR(Read(&n_dims));
  field_ = nullptr;
  if (n_dims == 0) return Error("has no dimensions (n_dims is 0)");
  if (n_dims > kMaxDims) return Error("{} dimensions, at most {}", n_dims, kMaxDims);
  static constexpr const char* kDimFields[kMaxDims] = {"dims[0]", "dims[1]", "dims[2]", "dims[3]"};
  t->dims.resize(n_dims);
  uint64_t n_elements = 1;
  for (uint32_t d = 0; d < n_dims; ++d) {
    field_ = kDimFields[d];
    RETURN_IF_ERROR(Read(&t->dims[d]));
    field_ = nullptr;
    if (t->dims[d] == 0) return Error("dims[{}] is 0", d);
    const auto product = CheckedMul(n_elements, t->dims[d]);
    if (!product || *product > kInt64Max) {
      std::string shape;
      for (uint32_t k = 0; k <= d; ++k) shape += fmt::format("{}{}", k ? ", " : "", t->dims[k]);
      return Error("element count of shape [{}] overflows 63 bits", shape);
    }
    n_elements = *product;
  }
  t->n_elements = n_elements;
  field_ = "type";
  uint32_t type_id;
  RETURN_IF_ERROR(Read(&type_id));
  field_ = nullptr;
  const auto traits = GetTypeTraits(type_id);
  if (!traits) return Error("unknown tensor type id {}", type_id);
  t->type = static_cast<TensorType>(type_id);
  if (t->dims[0] % traits->block_elems != 0) {
    return Error("row of {} elements is not a multiple of the {} block size ({})", t->dims[0],
                 traits->name, traits->block_elems);
  }
  const auto n_bytes = CheckedMul(n_elements / traits->block_elems, traits->block_bytes);
  if (!n_bytes) {
    return Error("{} elements of {} overflow a 64-bit byte count", n_elements, traits->name);
  }
  t->n_bytes = *n_bytes;
  field_ = "offset";
  RETURN_IF_ERROR(Read(&t->offset));
  field_ = nullptr;
  return Status::Ok();
}

Status Parser::PlaceTensorData() {
  auto& tensors = file_.tensors_;
  const uint64_t size = bytes_.size();
  const uint64_t alignment = file_.alignment_;
  const auto aligned_start = CheckedAlignUp(pos_, alignment);
  if (!aligned_start) return Error("data section start overflows 64 bits");
  const uint64_t data_start = *aligned_start;
  file_.data_offset_ = data_start;
  for (uint64_t i = 0; i < tensors.size(); ++i) {
    TensorInfo& t = tensors[i];
    Enter(Section::kTensor, i);
    name_ = t.name;
    if (t.offset % alignment != 0) {
      return Error("data offset {} is not a multiple of the alignment ({})", t.offset, alignment);
    }
    const auto begin = CheckedAdd(data_start, t.offset);
    const auto end = begin ? CheckedAdd(*begin, t.n_bytes) : std::nullopt;
    if (!end || *end > size) {
      return Error(
          "data [offset {}, {} bytes] runs past the end of the file ({} bytes, data section at {})",
          t.offset, t.n_bytes, size, data_start);
    }
    t.data = bytes_.data() + *begin;
  }
  // Every range is inside the file now, so these sums cannot overflow.
  std::vector<uint64_t> order(tensors.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](uint64_t a, uint64_t b) { return tensors[a].offset < tensors[b].offset; });
  for (size_t k = 1; k < order.size(); ++k) {
    const TensorInfo& prev = tensors[order[k - 1]];
    const TensorInfo& cur = tensors[order[k]];
    if (prev.offset + prev.n_bytes > cur.offset) {
      Enter(Section::kTensor, order[k]);
      name_ = cur.name;
      return Error("data [offset {}, {} bytes] overlaps tensor #{} {} [offset {}, {} bytes]",
                   cur.offset, cur.n_bytes, order[k - 1], QuoteName(prev.name), prev.offset,
                   prev.n_bytes);
    }
  }
  return Status::Ok();
}

}  // namespace slimkv::gguf
