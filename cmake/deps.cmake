# Every third-party library comes from Debian packages (tools/setup.sh installs them).
find_package(PkgConfig REQUIRED)
find_package(Threads REQUIRED)
find_package(fmt REQUIRED)
find_package(spdlog REQUIRED)
find_package(nlohmann_json REQUIRED)
find_package(CLI11 REQUIRED)
find_package(GTest REQUIRED)
find_package(benchmark REQUIRED)
pkg_check_modules(HWY REQUIRED IMPORTED_TARGET libhwy libhwy-contrib)
pkg_check_modules(HWY_TEST REQUIRED IMPORTED_TARGET libhwy-test)
pkg_check_modules(PCRE2 REQUIRED IMPORTED_TARGET libpcre2-8)
# Boost.Beast and Asio (header-only) for the HTTP server (docs/DECISIONS.md, "The HTTP edge").
find_package(Boost 1.81 REQUIRED CONFIG)
