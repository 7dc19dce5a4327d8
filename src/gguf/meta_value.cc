// MetaValue accessors and printing.
#include <fmt/format.h>

#include <limits>

#include "gguf/gguf_file.h"

namespace slimkv::gguf {

std::string_view ValueTypeName(ValueType t) {
  switch (t) {
    case ValueType::kUint8: return "uint8";
    case ValueType::kInt8: return "int8";
    case ValueType::kUint16: return "uint16";
    case ValueType::kInt16: return "int16";
    case ValueType::kUint32: return "uint32";
    case ValueType::kInt32: return "int32";
    case ValueType::kFloat32: return "float32";
    case ValueType::kBool: return "bool";
    case ValueType::kString: return "string";
    case ValueType::kArray: return "array";
    case ValueType::kUint64: return "uint64";
    case ValueType::kInt64: return "int64";
    case ValueType::kFloat64: return "float64";
  }
  return "unknown";
}

bool MetaValue::is_integer() const {
  return std::holds_alternative<uint64_t>(v) || std::holds_alternative<int64_t>(v);
}

bool MetaValue::is_float() const { return std::holds_alternative<double>(v); }

std::optional<int64_t> MetaValue::AsInt() const {
  if (const auto* u = std::get_if<uint64_t>(&v)) {
    if (*u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return std::nullopt;
    return static_cast<int64_t>(*u);
  }
  if (const auto* i = std::get_if<int64_t>(&v)) return *i;
  return std::nullopt;
}

std::optional<double> MetaValue::AsFloat() const {
  if (const auto* d = std::get_if<double>(&v)) return *d;
  if (const auto* u = std::get_if<uint64_t>(&v)) return static_cast<double>(*u);
  if (const auto* i = std::get_if<int64_t>(&v)) return static_cast<double>(*i);
  return std::nullopt;
}

const std::string* MetaValue::AsString() const { return std::get_if<std::string>(&v); }

const MetaArray* MetaValue::AsArray() const {
  const auto* a = std::get_if<std::shared_ptr<MetaArray>>(&v);
  return a ? a->get() : nullptr;
}

namespace {

// Quotes a string for display: escapes control and non-ASCII bytes, shortens long strings
// (chat templates run to kilobytes).
std::string QuoteForDisplay(const std::string& s) {
  constexpr size_t kMaxShown = 80;
  std::string out = "\"";
  for (size_t i = 0; i < s.size() && i < kMaxShown; ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c < 0x20 || c >= 0x7F) {
      out += fmt::format("\\x{:02x}", c);
    } else {
      out += static_cast<char>(c);
    }
  }
  out += '"';
  if (s.size() > kMaxShown) out += fmt::format("... ({} bytes)", s.size());
  return out;
}

}  // namespace

std::string MetaValue::ToString(size_t max_items) const {
  if (const auto* u = std::get_if<uint64_t>(&v)) return fmt::format("{}", *u);
  if (const auto* i = std::get_if<int64_t>(&v)) return fmt::format("{}", *i);
  if (const auto* d = std::get_if<double>(&v)) {
    // A float32 widened to double prints as 9.999999747378752e-06; print what was stored.
    if (type == ValueType::kFloat32) return fmt::format("{}", static_cast<float>(*d));
    return fmt::format("{}", *d);
  }
  if (const auto* b = std::get_if<bool>(&v)) return *b ? "true" : "false";
  if (const auto* s = std::get_if<std::string>(&v)) return QuoteForDisplay(*s);
  const MetaArray* a = AsArray();
  if (!a) return "null";
  std::string out = "[";
  for (size_t i = 0; i < a->items.size() && i < max_items; ++i) {
    if (i) out += ", ";
    out += a->items[i].ToString(max_items);
  }
  if (a->items.size() > max_items) {
    out += fmt::format(", ... ({} {} items)", a->items.size(), ValueTypeName(a->elem_type));
  }
  out += "]";
  return out;
}

}  // namespace slimkv::gguf
