#include "engine/request.h"

#include <string>

#include "base/hash.h"

namespace slimkv::engine {

const char* FinishReasonName(FinishReason r) {
  switch (r) {
    case FinishReason::kNone: return "";
    case FinishReason::kStop: return "stop";
    case FinishReason::kLength: return "length";
    case FinishReason::kCancelled: return "cancelled";
    case FinishReason::kError: return "error";
  }
  return "";
}

namespace {
// A key of its own, so a salt's hash is not a block key of the prefix index.
constexpr SipKey kSaltKey{0x736c696d6b762d73ull, 0x616c742d74656e61ull};  // "slimkv-s", "alt-tena"
}  // namespace

uint64_t HashCacheSalt(std::string_view salt) {
  if (salt.empty()) return 0;
  return SipHash24(salt.data(), salt.size(), kSaltKey);
}

uint64_t TenantSalt(std::string_view tenant, std::string_view salt) {
  if (tenant.empty()) return HashCacheSalt(salt);
  // "tenant" NUL "salt": the tenant's length is fixed by the NUL, so no (tenant, salt) pair
  // spells another's.
  std::string text;
  text.reserve(tenant.size() + 1 + salt.size());
  text.append(tenant).push_back('\0');
  text.append(salt);
  const uint64_t h = SipHash24(text.data(), text.size(), kSaltKey);
  return h == 0 ? 1 : h;
}

}  // namespace slimkv::engine
