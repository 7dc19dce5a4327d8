// Runs a test body once per SIMD target that this binary was compiled for and the CPU
// supports, so every kernel is compared with its scalar reference on every target.
#pragma once

#include <gtest/gtest.h>

#include <string>

#include "hwy/targets.h"

namespace slimkv::testing {

template <typename Fn>
void ForEachTarget(Fn&& fn) {
  for (int64_t target : hwy::SupportedAndGeneratedTargets()) {
    hwy::SetSupportedTargetsForTest(target);
    SCOPED_TRACE(std::string("target ") + hwy::TargetName(target));
    fn(target);
  }
  hwy::SetSupportedTargetsForTest(0);
}

}  // namespace slimkv::testing
