#include "engine/request.h"

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

uint64_t HashCacheSalt(std::string_view salt) {
  if (salt.empty()) return 0;
  // A key of its own, so a salt's hash is not a block key of the prefix index.
  constexpr SipKey kSaltKey{0x736c696d6b762d73ull, 0x616c742d74656e61ull};  // "slimkv-s", "alt-tena"
  return SipHash24(salt.data(), salt.size(), kSaltKey);
}

}  // namespace slimkv::engine
