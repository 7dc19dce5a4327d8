// Helpers for the tokenizer tests: loading a model's tokenizer once per test binary, and
// reading the golden files written by tools/gen_tokenizer_golden.py.
#pragma once

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "gguf/gguf_file.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"

namespace slimkv::tokenizer::testing {

inline constexpr char kSmolLm2File[] = "SmolLM2-135M-Instruct.Q4_1.gguf";
inline constexpr char kGemma3File[] = "gemma-3-270m-q4_k_m.gguf";

// A model of the parameterized tokenizer tests.
struct ModelCase {
  const char* key;   // golden file stem
  const char* file;  // model file under models/
};

// The tokenizer of a model file, loaded on first use and kept for the whole binary.
inline const Tokenizer& CachedTokenizer(const std::string& path) {
  static std::map<std::string, std::unique_ptr<Tokenizer>> cache;
  auto& slot = cache[path];
  if (!slot) {
    auto file = gguf::GgufFile::Open(path);
    if (!file.ok()) {
      std::fprintf(stderr, "cannot open %s: %s\n", path.c_str(), file.status().ToString().c_str());
      std::abort();
    }
    auto tok = Tokenizer::FromGguf(*file);
    if (!tok.ok()) {
      std::fprintf(stderr, "cannot load the tokenizer of %s: %s\n", path.c_str(),
                   tok.status().ToString().c_str());
      std::abort();
    }
    slot = std::move(tok).value();
  }
  return *slot;
}

inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline nlohmann::json LoadGolden(const std::string& name) {
  const std::string path = ::slimkv::testing::SourceDir() + "/tests/data/tokenizer/" + name;
  const std::string text = ReadFile(path);
  EXPECT_FALSE(text.empty()) << "missing golden file " << path;
  return nlohmann::json::parse(text);
}

inline std::string Base64Decode(const std::string& in) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    const int v = value(c);
    if (v < 0) continue;  // padding
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xFF));
    }
  }
  return out;
}

// FNV-1a 64, as tools/gen_tokenizer_golden.py computes it.
inline uint64_t Fnv1a(const void* data, size_t n, uint64_t h = 0xCBF29CE484222325ull) {
  const auto* p = static_cast<const uint8_t*>(data);
  for (size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= 0x100000001B3ull;
  }
  return h;
}
inline std::string Hex64(uint64_t v) { return fmt::format("{:016x}", v); }

struct GoldenCase {
  std::string name;
  std::string input;
  bool add_bos = false;
  bool parse_special = false;
  bool llama_cpp_failed = false;
  std::vector<TokenId> ids;
};

inline std::vector<GoldenCase> GoldenCases(const nlohmann::json& golden) {
  std::vector<GoldenCase> out;
  for (const auto& c : golden.at("cases")) {
    GoldenCase g;
    g.name = c.at("name").get<std::string>();
    g.input = Base64Decode(c.at("input_b64").get<std::string>());
    g.add_bos = c.at("add_bos").get<bool>();
    g.parse_special = c.at("parse_special").get<bool>();
    g.llama_cpp_failed = c.contains("llama_cpp_error");
    if (!g.llama_cpp_failed) g.ids = c.at("ids").get<std::vector<TokenId>>();
    out.push_back(std::move(g));
  }
  return out;
}

inline std::string IdsToString(const std::vector<TokenId>& ids, size_t max = 40) {
  std::string s = "[";
  for (size_t i = 0; i < ids.size() && i < max; ++i) s += (i ? ", " : "") + std::to_string(ids[i]);
  if (ids.size() > max) s += fmt::format(", ... ({} ids)", ids.size());
  return s + "]";
}

}  // namespace slimkv::tokenizer::testing
