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

// RoPE scaling as llama.cpp reads it (llama_model::load_hparams): the type defaults to
// linear, the factor to none; yarn adds its correction dims from the original context;
// the attention factor applies to every type. Llama-3's scheme needs no key: the converter
// writes its per-pair factors as the rope_freqs tensor.
Status ReadRopeScaling(const gguf::GgufFile& f, const std::string& a, ModelConfig& c) {
  RopeScaling& s = c.rope_scaling;
  auto type = f.GetString(a + ".rope.scaling.type");
  const std::string kind = type.ok() ? *type : "linear";
  float factor = GetFloatOr(f, a + ".rope.scaling.factor", GetFloatOr(f, a + ".rope.scale_linear", 0.0f));
  if (factor == 0.0f) factor = 1.0f;
  if (!(factor >= 1.0f && factor < 1024)) return DataLoss("{}: rope scaling factor {}", f.name(), factor);
  if (kind == "none") {
    s.kind = RopeScalingKind::kNone;
  } else if (kind == "linear") {
    s.kind = factor == 1.0f ? RopeScalingKind::kNone : RopeScalingKind::kLinear;
    s.freq_scale = 1.0f / factor;
  } else if (kind == "yarn") {
    s.kind = RopeScalingKind::kYarn;
    s.freq_scale = 1.0f / factor;
    s.ext_factor = 1.0f;
  } else if (kind == "longrope") {
    s.kind = RopeScalingKind::kLongRope;
  } else {
    return Unimplemented(
        "{}: rope scaling '{}' is not supported (none, linear, yarn, longrope; llama3 needs no key)",
        f.name(), kind);
  }
  s.orig_context = c.context_length;
  if (f.Find(a + ".rope.scaling.original_context_length")) {
    ASSIGN_OR_RETURN(s.orig_context, GetPositive(f, a + ".rope.scaling.original_context_length", 1 << 24));
  }
  s.attn_factor = GetFloatOr(f, a + ".rope.scaling.attn_factor", 1.0f);
  if (!(s.attn_factor > 0 && s.attn_factor < 100)) {
    return DataLoss("{}: '{}.rope.scaling.attn_factor' is {}", f.name(), a, s.attn_factor);
  }
  return Status::Ok();
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
  RETURN_IF_ERROR(ReadRopeScaling(f, a, c));
  c.attn_scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  if (f.Find(a + ".attention.scale")) {
    c.attn_scale = GetFloatOr(f, a + ".attention.scale", 0.0f);
    if (!(c.attn_scale > 0 && std::isfinite(c.attn_scale))) {
      return DataLoss("{}: '{}.attention.scale' is {}", f.name(), a, c.attn_scale);
    }
  }
  const gguf::MetaArray* tokens = f.GetArray("tokenizer.ggml.tokens");
  if (f.Find(a + ".vocab_size")) {
    ASSIGN_OR_RETURN(c.n_vocab, GetPositive(f, a + ".vocab_size", 1 << 22));
  } else if (tokens) {
    c.n_vocab = static_cast<int>(tokens->items.size());
  }
  return Status::Ok();
}

// Llama (1-3.x) and Mistral, which llama.cpp's converter writes as "llama". A sliding window
// ({arch}.attention.sliding_window, Mistral-7B-v0.1's 4096) applies to every layer, as in
// HF's Mistral; llama.cpp's converter does not write the key and llama.cpp ignores it.
Status ReadLlama(const gguf::GgufFile& f, ModelConfig& c) {
  RETURN_IF_ERROR(ReadCommon(f, c.arch, c));
  c.rope_style = ops::RopeStyle::kNormal;
  c.activation = Activation::kSilu;
  if (f.Find(c.arch + ".attention.sliding_window")) {
    ASSIGN_OR_RETURN(const int window, GetPositive(f, c.arch + ".attention.sliding_window", 1 << 24));
    if (window < c.context_length) c.layer_window.assign(c.n_layers, window);
  }
  return Status::Ok();
}

Status ReadQwen2(const gguf::GgufFile& f, ModelConfig& c) {
  RETURN_IF_ERROR(ReadCommon(f, c.arch, c));
  c.rope_style = ops::RopeStyle::kNeox;
  c.qkv_bias = true;
  return Status::Ok();
}

// Qwen3: Qwen2 without the Q/K/V biases, with a per-head RMSNorm of q and k before RoPE.
Status ReadQwen3(const gguf::GgufFile& f, ModelConfig& c) {
  RETURN_IF_ERROR(ReadCommon(f, c.arch, c));
  c.rope_style = ops::RopeStyle::kNeox;
  c.qk_norm = true;
  return Status::Ok();
}

// Phi-3 (and Phi-3.5, Phi-4-mini): NEOX RoPE, fused QKV and gate-up tensors (split at load),
// LongRoPE when the file has rope_factors_long/short. Its sliding_window key is ignored, as
// llama.cpp does: converters write values that do not match the models (llama.cpp #13676).
Status ReadPhi3(const gguf::GgufFile& f, ModelConfig& c) {
  RETURN_IF_ERROR(ReadCommon(f, c.arch, c));
  c.rope_style = ops::RopeStyle::kNeox;
  const bool has_long = f.FindTensor("rope_factors_long.weight") != nullptr;
  const bool has_short = f.FindTensor("rope_factors_short.weight") != nullptr;
  if (has_long != has_short) {
    return DataLoss("{}: has rope_factors_{} but not rope_factors_{}", f.name(), has_long ? "long" : "short",
                    has_long ? "short" : "long");
  }
  c.longrope_factors = has_long;
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
  c.layer_rope_scaling.assign(c.n_layers, c.rope_scaling);
  for (int l = 0; l < c.n_layers; ++l)
    if (local[l]) c.layer_rope_scaling[l] = RopeScaling{};
  return Status::Ok();
}

struct Family {
  const char* arch;
  Status (*read)(const gguf::GgufFile&, ModelConfig&);
};
constexpr Family kFamilies[] = {
    {"llama", ReadLlama}, {"mistral", ReadLlama}, {"qwen2", ReadQwen2},
    {"qwen3", ReadQwen3}, {"phi3", ReadPhi3},     {"gemma3", ReadGemma3},
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
      if (c.layer_rope_scaling.empty()) c.layer_rope_scaling.assign(c.n_layers, c.rope_scaling);
      if (c.n_vocab <= 0) return DataLoss("{}: vocabulary size unknown", f.name());
      return c;
    }
  }
  return Unimplemented("{}: unknown architecture '{}'; supported: {}", f.name(), c.arch,
                       SupportedArchitectures());
}

}  // namespace slimkv::model
