#include "cli/llama_flags.h"

#include <cstdio>
#include <string_view>

#include "cli/common.h"
#include "kv/format.h"

namespace slimkv::cli {
namespace {

struct Rewrite {
  std::string_view llama_cpp;  // the single-dash word
  std::string_view slimkv;     // its slimkv long name
};
// llama.cpp options slimkv has (common/arg.cpp's names).
constexpr Rewrite kRewrites[] = {
    {"-ctk", "--cache-type-k"}, {"-ctv", "--cache-type-v"}, {"-fa", "--flash-attn"},
    {"-ngl", "--n-gpu-layers"}, {"-hf", "--hf-repo"},       {"-hfr", "--hf-repo"},
    {"-np", "--parallel"},      {"-sys", "--system"},
};

struct Unsupported {
  std::string_view llama_cpp;
  std::string_view long_name;  // llama.cpp's long name, for the message
};
// llama.cpp's other multi-letter single-dash options: without this table CLI11 would read
// them as one of slimkv's short flags with a value (-tb 4 -> "-t b", -mg 1 -> "-m g").
constexpr Unsupported kUnsupported[] = {
    {"-cb", "--cont-batching"},
    {"-nocb", "--no-cont-batching"},
    {"-cnv", "--conversation"},
    {"-no-cnv", "--no-conversation"},
    {"-co", "--color"},
    {"-cram", "--cache-ram"},
    {"-ctxcp", "--ctx-checkpoints"},
    {"-dev", "--device"},
    {"-dt", "--defrag-thold"},
    {"-gan", "--grp-attn-n"},
    {"-gaw", "--grp-attn-w"},
    {"-hff", "--hf-file"},
    {"-hft", "--hf-token"},
    {"-if", "--interactive-first"},
    {"-jf", "--json-schema-file"},
    {"-kvo", "--kv-offload"},
    {"-nkvo", "--no-kv-offload"},
    {"-kvu", "--kv-unified"},
    {"-no-kvu", "--no-kv-unified"},
    {"-lcd", "--lookup-cache-dynamic"},
    {"-lcs", "--lookup-cache-static"},
    {"-lv", "--verbosity"},
    {"-mg", "--main-gpu"},
    {"-mli", "--multiline-input"},
    {"-mm", "--mmproj"},
    {"-mmu", "--mmproj-url"},
    {"-mu", "--model-url"},
    {"-cmoe", "--cpu-moe"},
    {"-ncmoe", "--n-cpu-moe"},
    {"-nr", "--no-repack"},
    {"-ns", "--sequences"},
    {"-ot", "--override-tensor"},
    {"-ptc", "--print-token-count"},
    {"-sm", "--split-mode"},
    {"-sp", "--special"},
    {"-sps", "--slot-prompt-similarity"},
    {"-st", "--single-turn"},
    {"-sysf", "--system-prompt-file"},
    {"-tb", "--threads-batch"},
    {"-to", "--timeout"},
    {"-ts", "--tensor-split"},
    {"-ub", "--ubatch-size"},
    {"-Cb", "--cpu-mask-batch"},
    {"-Cr", "--cpu-range"},
    {"-Crb", "--cpu-range-batch"},
    {"-rea", "--reasoning"},
    {"-bs", "--backend-sampling"},
};

struct CacheType {
  std::string_view llama_cpp;
  std::string_view slimkv;  // empty: no equivalent
};
// llama.cpp's KV cache types (common/arg.cpp kv_cache_types). q4_1 is per token, 32
// channels per group, an fp16 scale and minimum each: slimkv's int4:g32:asym is that layout.
constexpr CacheType kCacheTypes[] = {
    {"f32", "f32"},   {"f16", "f16"},   {"bf16", "bf16"},
    {"q8_0", "q8_0"}, {"q4_0", "q4_0"}, {"q4_1", "int4:g32:asym"},
    {"iq4_nl", ""},   {"q5_0", ""},     {"q5_1", ""},
};

std::string SupportedCacheTypes() {
  std::string s;
  for (const CacheType& t : kCacheTypes) {
    if (!t.slimkv.empty()) s += fmt::format("{}{}", s.empty() ? "" : ", ", t.llama_cpp);
  }
  return s;
}

bool IsTruthy(std::string_view v) {
  return v.empty() || v == "on" || v == "enabled" || v == "true" || v == "1";
}
bool IsFalsey(std::string_view v) { return v == "off" || v == "disabled" || v == "false" || v == "0"; }

}  // namespace

Result<std::vector<std::string>> RewriteLlamaCppFlags(int argc, char** argv) {
  std::vector<std::string> out;
  bool options_done = false;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a == "--") options_done = true;
    if (!options_done) {
      for (const Rewrite& r : kRewrites) {
        if (a == r.llama_cpp) a = r.slimkv;
      }
      for (const Unsupported& u : kUnsupported) {
        if (a == u.llama_cpp) {
          return InvalidArgument(
              "{} is llama.cpp's {}, which slimkv does not have (`slimkv <command> --help` lists "
              "its flags)",
              u.llama_cpp, u.long_name);
        }
      }
    }
    out.emplace_back(a);
  }
  return out;
}

Result<std::string> KvSpecFromCacheType(const std::string& flag, const std::string& type) {
  for (const CacheType& t : kCacheTypes) {
    if (type != t.llama_cpp) continue;
    if (t.slimkv.empty()) {
      return InvalidArgument(
          "llama.cpp's {} has no slimkv equivalent; {} takes {} (llama.cpp's names) or a slimkv "
          "format such as int4 or tq3 (see --kv-k)",
          type, flag, SupportedCacheTypes());
    }
    return std::string(t.slimkv);
  }
  auto f = kv::ParseFormat(type, /*is_key=*/flag == "--cache-type-k");
  if (!f.ok()) {
    return InvalidArgument("'{}' is neither a llama.cpp cache type slimkv maps ({}) nor a slimkv format: {}",
                           type, SupportedCacheTypes(), f.status().message());
  }
  return type;
}

void LlamaCppFlags::Add(CLI::App* app, bool with_model_flags) {
  auto cache_type = [app](const std::string& flag, std::string* out, const char* side) {
    app->add_option(
           flag, *out,
           fmt::format("(-{}) llama.cpp's KV cache type for {}: {}, mapped to slimkv's formats (q4_1 is "
                       "int4:g32:asym), or any --kv-{} format; overrides --kv for that side (default: "
                       "--kv's)",
                       flag == "--cache-type-k" ? "ctk" : "ctv", side, SupportedCacheTypes(),
                       flag == "--cache-type-k" ? "k" : "v"))
        ->check([flag](const std::string& v) {
          auto r = KvSpecFromCacheType(flag, v);
          return r.ok() ? std::string() : r.status().message();
        });
  };
  cache_type("--cache-type-k", &cache_type_k, "K");
  cache_type("--cache-type-v", &cache_type_v, "V");
  app->add_option("--flash-attn", flash_attn,
                  "(-fa) [on|off|auto], for llama.cpp habits: slimkv's attention always runs fused over the "
                  "cached blocks (default on; off has no effect)")
      ->expected(0, 1)
      ->check([](const std::string& v) {
        if (IsTruthy(v) || IsFalsey(v) || v == "auto") return std::string();
        return fmt::format("'{}' is not on, off or auto", v);
      })
      ->each([](const std::string& v) {
        if (IsFalsey(v)) {
          std::fprintf(stderr,
                       "warning: --flash-attn %s: slimkv has no unfused attention; attention runs fused\n",
                       v.c_str());
        }
      });
  app->add_option(
         "--n-gpu-layers,--gpu-layers", n_gpu_layers,
         "(-ngl) for llama.cpp habits: slimkv runs on the CPU (no GPU offload in this build); a value "
         "other than 0 is ignored with a warning (default 0)")
      ->each([](const std::string& v) {
        if (v != "0") {
          std::fprintf(
              stderr,
              "warning: --n-gpu-layers %s ignored: slimkv runs on the CPU (no GPU offload in this build)\n",
              v.c_str());
        }
      });
  if (with_model_flags) {
    app->add_option(
           "--hf-repo", hf_repo,
           "(-hf) for llama.cpp habits: slimkv does not download models; use -m with a GGUF file or a "
           "short name")
        ->check([](const std::string& v) {
          return fmt::format(
              "slimkv does not download models from Hugging Face ('{}'): give -m a GGUF file path "
              "or a short name ({}); `make models` fetches those",
              v, KnownModelList());
        });
  }
}

}  // namespace slimkv::cli
