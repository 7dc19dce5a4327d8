# Compiler flags in one place. No -march: SIMD targets are chosen at run time by Highway.
add_compile_options(-Wall -Wextra -Wno-unused-parameter -Wno-sign-compare -Wno-missing-field-initializers -fno-math-errno)
# The SIMD targets slimkv compiles for, capped in one place (see docs/DECISIONS.md):
# AVX3_DL (AVX-512 with VNNI), AVX3 (AVX-512), AVX2 and the portable scalar fallback.
add_compile_definitions(
  HWY_WANT_AVX3_DL=1
  "HWY_DISABLED_TARGETS=(HWY_SSSE3|HWY_SSE4)"
  SPDLOG_FMT_EXTERNAL=1)
if(SLIMKV_SANITIZE)
  add_compile_options(-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
  add_link_options(-fsanitize=address,undefined)
endif()
set(CMAKE_CXX_FLAGS_RELEASE "-O3 -DNDEBUG")
set(CMAKE_CXX_FLAGS_RELWITHDEBINFO "-O3 -g")
if(SLIMKV_SANITIZE)
  # -O1 with line tables: clang needs 20 minutes for attention.cc's every-target kernels under
  # ASan+UBSan at -O3 -g, 5 at -O1 (docs/DECISIONS.md "Build time"); -O1 is what the
  # sanitizers' own documentation recommends, and line tables are enough for their reports.
  set(CMAKE_CXX_FLAGS_RELWITHDEBINFO "-O1 -gline-tables-only")
endif()
