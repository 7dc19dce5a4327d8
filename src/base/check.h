// CHECK: always-on invariant for bugs (prints file:line and a message, aborts).
// DCHECK: hot-path invariant, compiled only into debug builds.
// Bad input is never CHECKed: it is a Status (status.h).
#pragma once

#include <fmt/format.h>

#include <cstdio>
#include <cstdlib>

namespace slimkv::internal {
[[noreturn]] void CheckFailed(const char* file, int line, const char* cond, const std::string& msg);
}  // namespace slimkv::internal

#define CHECK(cond, ...)                                                              \
  do {                                                                                \
    if (__builtin_expect(!(cond), 0))                                                 \
      ::slimkv::internal::CheckFailed(__FILE__, __LINE__, #cond,                      \
                                      ::fmt::format("" __VA_ARGS__));                 \
  } while (0)

#ifdef NDEBUG
#define DCHECK(cond, ...) \
  do {                    \
  } while (0)
#else
#define DCHECK(cond, ...) CHECK(cond, __VA_ARGS__)
#endif
