// An Engine on a model file for tests: the options the tests vary, failures reported through
// gtest (nullptr back).
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "engine/engine.h"
#include "kv/format.h"

namespace slimkv::testing {

struct TestEngineOptions {
  const char* kv = "fp32";   // a preset name
  int n_ctx = 256;
  int n_seq = 4;
  size_t kv_budget_bytes = 0;  // 0: what n_ctx x n_seq needs
  int prefill_chunk = 0;       // 0: the engine's default
};

inline std::unique_ptr<engine::Engine> MakeTestEngine(const std::string& path, const TestEngineOptions& t = {}) {
  engine::EngineOptions o;
  o.model_path = path;
  o.kv = *kv::ParsePreset(t.kv);
  o.n_ctx = t.n_ctx;
  o.n_seq = t.n_seq;
  o.kv_budget_bytes = t.kv_budget_bytes;
  if (t.prefill_chunk > 0) o.prefill_chunk = t.prefill_chunk;
  auto e = engine::Engine::Create(o);
  EXPECT_TRUE(e.ok()) << e.status().ToString();
  return e.ok() ? std::move(e).value() : nullptr;
}

}  // namespace slimkv::testing
