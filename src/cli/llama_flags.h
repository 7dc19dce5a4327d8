// llama.cpp's flags, as users type them out of habit.
//
// llama.cpp spells many options with one dash and several letters (-ctk, -fa, -ngl, -hf, -np).
// CLI11 reads such a word as a short flag and its value (-ctk q8_0 -> "-c tk", -ngl 99 ->
// "-n gl", -hf -> "-h" and "-f"), giving errors about the wrong flag or, for -hf, the help
// text and exit 0. So the words are rewritten before parsing: those slimkv has an equivalent
// for become its long name, the others are answered with an error naming the llama.cpp option.
#pragma once

#include <CLI/CLI.hpp>
#include <string>
#include <vector>

#include "base/status.h"

namespace slimkv::cli {

// argv[1..] with llama.cpp's multi-letter single-dash options rewritten to long names
// (everything after "--" is left alone). InvalidArgument for one slimkv has no equivalent of.
Result<std::vector<std::string>> RewriteLlamaCppFlags(int argc, char** argv);

// The llama.cpp options slimkv accepts on every command that loads a model.
struct LlamaCppFlags {
  std::string cache_type_k, cache_type_v;  // -ctk / -ctv: llama.cpp's KV cache types
  std::string flash_attn;                  // -fa [on|off|auto]: attention is always fused
  std::string n_gpu_layers;                // -ngl N: nothing to offload to
  std::string hf_repo;                     // -hf USER/MODEL[:QUANT]: never downloads

  void Add(CLI::App* app, bool with_model_flags);
};

// The slimkv KV format (a --kv-k / --kv-v spec) for llama.cpp's cache type `type` (f16, q8_0,
// q4_1, ...); a slimkv format spec passes through unchanged. InvalidArgument naming the flag
// and the supported types for q5_0, q5_1 and iq4_nl, which have no slimkv equivalent.
Result<std::string> KvSpecFromCacheType(const std::string& flag, const std::string& type);

}  // namespace slimkv::cli
