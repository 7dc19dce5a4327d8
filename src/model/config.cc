#include "model/config.h"

#include <cmath>

namespace slimkv::model {
namespace {

Result<int> GetPositive(const gguf::GgufFile& f, const std::string& key, int64_t max) {
  auto v = f.GetInt(key);
  if (!v.ok()) return Status(v.status().code(), fmt::format("{}: {}", f.name(), v.status().message()));
  if (*v <= 0 || *v > max) {
    return DataLoss("{}: '{}' is {}, expected 1..{}", f.name(), key, *v, max);
  }
  return static_cast<int>(*v);
}

float GetFloatOr(const gguf::GgufFile& f, const std::string& key, float fallback) {
  auto v = f.GetFloat(key);
  return v.ok() ? static_cast<float>(*v) : fallback;
}

// Fields every family shares, under "<arch>.".
Status ReadCommon(const gguf::GgufFile& f, const std::string& a, ModelConfig& c) {
  ASSIGN_OR_RETURN(c.n_layers, GetPositive(f, a + ".block_count", 1024));
  ASSIGN_OR_RETURN(c.n_embd, GetPositive(f, a + ".embedding_length", 1 << 16));
  ASSIGN_OR_RETURN(c.n_ff, GetPositive(f, a + ".feed_forward_length", 1 << 18));
  ASSIGN_OR_RETURN(c.n_heads, GetPositive(f, a + ".attention.head_count", 1024));
  if (f.Find(a + ".attention.head_count_kv")) {
    ASSIGN_OR_RETURN(c.n_kv_heads, GetPositive(f, a + ".attention.head_count_kv", 1024));
  } else {
    c.n_kv_heads = c.n_heads;
  }
  ASSIGN_OR_RETURN(c.context_length, GetPositive(f, a + ".context_length", 1 << 24));
  if (f.Find(a + ".attention.key_length")) {
    ASSIGN_OR_RETURN(c.head_dim, GetPositive(f, a + ".attention.key_length", 4096));
  } else {
    if (c.n_embd % c.n_heads != 0) {
      return DataLoss("{}: embedding length {} is not a multiple of {} heads", f.name(), c.n_embd, c.n_heads);
    }
    c.head_dim = c.n_embd / c.n_heads;
  }
  if (f.Find(a + ".attention.value_length")) {
    ASSIGN_OR_RETURN(int vlen, GetPositive(f, a + ".attention.value_length", 4096));
    if (vlen != c.head_dim) {
      return Unimplemented("{}: value length {} differs from key length {}", f.name(), vlen, c.head_dim);
    }
  }
  if (c.n_heads % c.n_kv_heads != 0) {
    return DataLoss("{}: {} query heads are not a multiple of {} KV heads", f.name(), c.n_heads, c.n_kv_heads);
  }
  c.rms_eps = GetFloatOr(f, a + ".attention.layer_norm_rms_epsilon", 1e-5f);
  if (!(c.rms_eps > 0 && c.rms_eps < 1)) {
    return DataLoss("{}: '{}.attention.layer_norm_rms_epsilon' is {}", f.name(), a, c.rms_eps);
  }
  c.rope_dim = c.head_dim;
  if (f.Find(a + ".rope.dimension_count")) {
    ASSIGN_OR_RETURN(c.rope_dim, GetPositive(f, a + ".rope.dimension_count", c.head_dim));
    if (c.rope_dim % 2) return DataLoss("{}: odd rope dimension {}", f.name(), c.rope_dim);
  }
  const float base = GetFloatOr(f, a + ".rope.freq_base", 10000.0f);
  if (!(base > 1.0f && std::isfinite(base))) {
    return DataLoss("{}: '{}.rope.freq_base' is {}", f.name(), a, base);
  }
  c.layer_rope_base.assign(c.n_layers, base);
  c.layer_window.assign(c.n_layers, 0);
  auto scaling = f.GetString(a + ".rope.scaling.type");
  if (scaling.ok() && *scaling != "none") {
    if (*scaling != "linear") {
      return Unimplemented("{}: rope scaling '{}' is not supported (only linear)", f.name(), *scaling);
    }
    const float factor = GetFloatOr(f, a + ".rope.scaling.factor", 1.0f);
    if (!(factor >= 1.0f && factor < 1024)) return DataLoss("{}: rope scaling factor {}", f.name(), factor);
    c.rope_freq_scale = 1.0f / factor;
  }
  c.attn_scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  const gguf::MetaArray* tokens = f.GetArray("tokenizer.ggml.tokens");
  if (f.Find(a + ".vocab_size")) {
    ASSIGN_OR_RETURN(c.n_vocab, GetPositive(f, a + ".vocab_size", 1 << 22));
  } else if (tokens) {
    c.n_vocab = static_cast<int>(tokens->items.size());
  }
  return Status::Ok();
}

Status ReadLlama(const gguf::GgufFile& f, ModelConfig& c) {
  RETURN_IF_ERROR(ReadCommon(f, c.arch, c));
  c.rope_style = ops::RopeStyle::kNormal;
  c.activation = Activation::kSilu;
  return Status::Ok();
}

Status ReadQwen2(const gguf::GgufFile& f, ModelConfig& c) {
  RETURN_IF_ERROR(ReadCommon(f, c.arch, c));
  c.rope_style = ops::RopeStyle::kNeox;
  c.qkv_bias = true;
  return Status::Ok();
}

struct Family {
  const char* arch;
  Status (*read)(const gguf::GgufFile&, ModelConfig&);
};
constexpr Family kFamilies[] = {
    {"llama", ReadLlama},
    {"mistral", ReadLlama},
    {"qwen2", ReadQwen2},
};

}  // namespace

std::string SupportedArchitectures() {
  std::string s;
  for (const auto& fam : kFamilies) s += (s.empty() ? "" : ", ") + std::string(fam.arch);
  return s;
}

Result<ModelConfig> ReadConfig(const gguf::GgufFile& f) {
  ModelConfig c;
  ASSIGN_OR_RETURN(c.arch, f.GetString("general.architecture"));
  auto name = f.GetString("general.name");
  c.name = name.ok() ? *name : c.arch;
  for (const auto& fam : kFamilies) {
    if (c.arch == fam.arch) {
      RETURN_IF_ERROR(fam.read(f, c));
      if (c.n_vocab <= 0) return DataLoss("{}: vocabulary size unknown", f.name());
      return c;
    }
  }
  return Unimplemented("{}: unknown architecture '{}'; supported: {}", f.name(), c.arch,
                       SupportedArchitectures());
}

}  // namespace slimkv::model
