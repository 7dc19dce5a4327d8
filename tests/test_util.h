// Helpers shared by tests: locating the model and data files, deterministic random data.
#pragma once

#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <vector>

namespace slimkv::testing {

// Path of a file under models/ (SLIMKV_MODEL_DIR), or nullopt if it is absent. Tests that
// need a model GTEST_SKIP() when it is absent *only* if SLIMKV_REQUIRE_MODELS is unset: CI
// sets it, so a missing model fails there instead of silently skipping.
std::optional<std::string> ModelPath(const std::string& file_name);
std::string DefaultModelFile();  // "SmolLM2-135M-Instruct.Q4_1.gguf"
bool ModelsRequired();
std::string SourceDir();
std::string VenvPython();

// Random floats: normal(0, 1) with a fraction of large "outlier channels".
std::vector<float> RandomNormal(size_t n, uint64_t seed, float stddev = 1.0f);

// Runs a shell command, returns its exit status and captures stdout.
int RunCommand(const std::string& cmd, std::string* stdout_text);

}  // namespace slimkv::testing

// Skips (or fails, when models are required) if the default model is not present.
#define SLIMKV_REQUIRE_MODEL(path_var, file)                                            \
  auto path_var##_opt = ::slimkv::testing::ModelPath(file);                             \
  if (!path_var##_opt) {                                                                \
    if (::slimkv::testing::ModelsRequired()) FAIL() << "model file missing: " << (file); \
    GTEST_SKIP() << "model file missing: " << (file);                                   \
  }                                                                                     \
  const std::string path_var = *path_var##_opt
