#include "model/config.h"

#include <cmath>

namespace slimkv::model {
namespace {

Result<int> GetPositive(const gguf::GgufFile& f, const std::string& key, int64_t max) {
  auto v = f.GetInt(key);
  if (!v.ok()) return v.status();  // already names the file and the key
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
    if (c.rope_dim % 2) {
      return DataLoss("{}: '{}.rope.dimension_count' is {}, expected an even number", f.name(), a,
                      c.rope_dim);
    }
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

// Gemma-3: MQA/GQA with per-head q/k norms, norms after attention and MLP, GeGLU, embeddings
// scaled by sqrt(n_embd), and sliding-window ("local") layers with their own RoPE base.
// The layer pattern follows llama.cpp: a per-layer bool array
// gemma3.attention.sliding_window_pattern if the file has one, else every 6th layer global.
Status ReadGemma3(const gguf::GgufFile& f, ModelConfig& c) {
  RETURN_IF_ERROR(ReadCommon(f, c.arch, c));
  const std::string a = c.arch;
  c.rope_style = ops::RopeStyle::kNeox;
  c.activation = Activation::kGeluTanh;
  c.qk_norm = true;
  c.post_norms = true;
  c.embed_scale = std::sqrt(static_cast<float>(c.n_embd));
  c.final_logit_softcap = GetFloatOr(f, a + ".final_logit_softcapping", 0.0f);
  if (!(c.final_logit_softcap >= 0 && std::isfinite(c.final_logit_softcap))) {
    return DataLoss("{}: '{}.final_logit_softcapping' is {}", f.name(), a, c.final_logit_softcap);
  }
  // llama.cpp's one exception to 1/sqrt(head_dim): the 62-layer 27B model.
  if (c.n_layers == 62) c.attn_scale = 1.0f / std::sqrt(static_cast<float>(c.n_embd / c.n_heads));
  ASSIGN_OR_RETURN(const int window, GetPositive(f, a + ".attention.sliding_window", 1 << 24));
  if (window > c.context_length) {
    return DataLoss("{}: sliding window {} is larger than the context {}", f.name(), window, c.context_length);
  }
  const float local_base = GetFloatOr(f, a + ".rope.freq_base_swa", 10000.0f);
  if (!(local_base > 1.0f && std::isfinite(local_base))) {
    return DataLoss("{}: '{}.rope.freq_base_swa' is {}", f.name(), a, local_base);
  }
  std::vector<bool> local(c.n_layers);
  if (const gguf::MetaArray* pat = f.GetArray(a + ".attention.sliding_window_pattern")) {
    if (static_cast<int>(pat->items.size()) != c.n_layers) {
      return DataLoss("{}: '{}.attention.sliding_window_pattern' has {} entries for {} layers", f.name(), a,
                      pat->items.size(), c.n_layers);
    }
    for (int l = 0; l < c.n_layers; ++l) {
      const auto* b = std::get_if<bool>(&pat->items[l].v);
      if (!b) return DataLoss("{}: '{}.attention.sliding_window_pattern' holds a non-bool", f.name(), a);
      local[l] = *b;
    }
  } else {
    for (int l = 0; l < c.n_layers; ++l) local[l] = l % 6 < 5;
  }
  for (int l = 0; l < c.n_layers; ++l) {
    if (local[l]) {
      c.layer_window[l] = window;
      c.layer_rope_base[l] = local_base;
    }
  }
  // Rope scaling (linear) applies to the global layers only, as in llama.cpp.
  c.layer_rope_freq_scale.assign(c.n_layers, c.rope_freq_scale);
  for (int l = 0; l < c.n_layers; ++l)
    if (local[l]) c.layer_rope_freq_scale[l] = 1.0f;
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
    {"gemma3", ReadGemma3},
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
      if (c.layer_rope_freq_scale.empty()) c.layer_rope_freq_scale.assign(c.n_layers, c.rope_freq_scale);
      if (c.n_vocab <= 0) return DataLoss("{}: vocabulary size unknown", f.name());
      return c;
    }
  }
  return Unimplemented("{}: unknown architecture '{}'; supported: {}", f.name(), c.arch,
                       SupportedArchitectures());
}

}  // namespace slimkv::model
