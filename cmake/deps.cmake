# Every third-party library comes from Debian packages (tools/setup.sh installs them). The
# test and benchmark libraries are looked for only when those are built, so `make demo` (the
# slimkv binary alone) needs only tools/setup.sh's demo set.
find_package(PkgConfig REQUIRED)
find_package(Threads REQUIRED)
find_package(fmt REQUIRED)
find_package(spdlog REQUIRED)
find_package(nlohmann_json REQUIRED)
find_package(CLI11 REQUIRED)
if(SLIMKV_BUILD_TESTS)
  find_package(GTest REQUIRED)
  pkg_check_modules(HWY_TEST REQUIRED IMPORTED_TARGET libhwy-test)
endif()
if(SLIMKV_BUILD_BENCH)
  find_package(benchmark REQUIRED)
endif()
pkg_check_modules(HWY REQUIRED IMPORTED_TARGET libhwy libhwy-contrib)
pkg_check_modules(PCRE2 REQUIRED IMPORTED_TARGET libpcre2-8)
# Boost.Beast and Asio (header-only) for the HTTP server (docs/DECISIONS.md, "The HTTP edge").
find_package(Boost 1.81 REQUIRED CONFIG)
# The KV cache's lower tiers: record checksums (XXH3) and the Redis client.
pkg_check_modules(XXHASH REQUIRED IMPORTED_TARGET libxxhash)
pkg_check_modules(HIREDIS REQUIRED IMPORTED_TARGET hiredis)
