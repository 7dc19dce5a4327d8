#include "test_util.h"

#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <filesystem>

namespace slimkv::testing {

static std::string Env(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return v && *v ? v : fallback;
}

std::string SourceDir() { return Env("SLIMKV_SOURCE_DIR", SLIMKV_SOURCE_DIR_DEFAULT); }
std::string VenvPython() { return Env("SLIMKV_VENV_PYTHON", (SourceDir() + "/.venv/bin/python").c_str()); }
std::string DefaultModelFile() { return "SmolLM2-135M-Instruct.Q4_1.gguf"; }
bool ModelsRequired() { return std::getenv("SLIMKV_REQUIRE_MODELS") != nullptr; }

std::optional<std::string> ModelPath(const std::string& file_name) {
  const std::string p = Env("SLIMKV_MODEL_DIR", (SourceDir() + "/models").c_str()) + "/" + file_name;
  if (std::filesystem::exists(p)) return p;
  return std::nullopt;
}

std::vector<float> RandomNormal(size_t n, uint64_t seed, float stddev) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(0.0f, stddev);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

int RunCommand(const std::string& cmd, std::string* stdout_text) {
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return -1;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) {
    if (stdout_text) stdout_text->append(buf.data(), n);
  }
  const int st = pclose(p);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

}  // namespace slimkv::testing
