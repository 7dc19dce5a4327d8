// Small integer helpers shared by the parts.
#pragma once

#include <cstdint>

namespace slimkv {

// ceil(a / b) for a >= 0, b > 0, as an int (block and task counts).
inline int CeilDiv(int64_t a, int64_t b) { return static_cast<int>((a + b - 1) / b); }

}  // namespace slimkv
