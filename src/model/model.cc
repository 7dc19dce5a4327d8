#include "model/model.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "base/check.h"
#include "gguf/dequant.h"
#include "model/repack.h"
#include "ops/block_decode.h"
#include "ops/elementwise.h"
#include "ops/matmul.h"

namespace slimkv::model {
namespace {

std::string Shape(std::initializer_list<int64_t> dims) {
  std::string s = "[";
  for (int64_t d : dims) s += (s.size() > 1 ? ", " : "") + std::to_string(d);
  return s + "]";
}

// Rows per parallel task for the per-row vector work (norms, rope, activations).
constexpr int64_t kRowGrain = 8;

}  // namespace

Result<std::unique_ptr<Model>> Model::Load(const std::string& path, int n_ctx) {
  std::unique_ptr<Model> m(new Model());
  ASSIGN_OR_RETURN(gguf::GgufFile f, gguf::GgufFile::Open(path));
  m->file_ = std::make_unique<gguf::GgufFile>(std::move(f));
  ASSIGN_OR_RETURN(m->config_, ReadConfig(*m->file_));
  RETURN_IF_ERROR(m->LoadWeights(n_ctx > 0 ? n_ctx : m->config_.context_length));
  const ModelConfig& c = m->config_;
  for (int l = 0; l < c.n_layers; ++l) {
    m->inv_freq_.push_back(
        LayerInvFreq(c.rope_dim, c.layer_rope_base[l], c.layer_rope_scaling[l], m->w_.rope_factors));
    m->rope_mscale_.push_back(RopeMscale(c.layer_rope_scaling[l]));
  }
  m->cache_layer_ = m->share_.CacheLayers(c.n_layers);
  return m;
}

Status Model::LoadWeights(int n_ctx) {
  const gguf::GgufFile& f = *file_;
  const ModelConfig& c = config_;
  auto find = [&](const std::string& name, std::initializer_list<int64_t> shape,
                  bool required = true) -> Result<const gguf::TensorInfo*> {
    const gguf::TensorInfo* t = f.FindTensor(name);
    if (!t) {
      if (!required) return static_cast<const gguf::TensorInfo*>(nullptr);
      return DataLoss("{}: missing tensor '{}' (expected shape {}) for architecture '{}'", f.name(),
                      name, Shape(shape), c.arch);
    }
    bool same = t->dims.size() == shape.size();
    if (same) {
      size_t i = 0;
      for (int64_t d : shape) same = same && static_cast<int64_t>(t->dims[i++]) == d;
    }
    if (!same) {
      return DataLoss("{}: tensor '{}' has shape {}, expected {}", f.name(), name, t->ShapeString(),
                      Shape(shape));
    }
    return t;
  };
  // Rows [row0, row0 + rows) of a matrix of `total_rows` (a fused tensor split at load: its
  // rows are contiguous in the file, so each part is a matrix of its own).
  auto matrix_rows = [&](const std::string& name, int64_t cols, int64_t total_rows, int64_t row0,
                         int64_t rows, ops::WeightMatrix* out) -> Status {
    ASSIGN_OR_RETURN(const gguf::TensorInfo* t, find(name, {cols, total_rows}));
    gguf::TensorInfo part = *t;
    const uint64_t row_bytes = t->n_bytes / total_rows;
    part.dims = {static_cast<uint64_t>(cols), static_cast<uint64_t>(rows)};
    part.n_elements = static_cast<uint64_t>(cols * rows);
    part.n_bytes = row_bytes * rows;
    part.data = t->data + row_bytes * row0;
    auto m = Repack(part);
    if (!m.ok()) return Status(m.status().code(), fmt::format("{}: {}", f.name(), m.status().message()));
    *out = std::move(m).value();
    return Status::Ok();
  };
  auto matrix = [&](const std::string& name, int64_t cols, int64_t rows, ops::WeightMatrix* out) -> Status {
    return matrix_rows(name, cols, rows, 0, rows, out);
  };
  auto vec = [&](const std::string& name, int64_t n, std::vector<float>* out,
                 bool required = true) -> Status {
    ASSIGN_OR_RETURN(const gguf::TensorInfo* t, find(name, {n}, required));
    if (!t) return Status::Ok();
    out->resize(n);
    Status st = gguf::Dequantize(t->type, t->data, out->data(), n);
    if (!st.ok()) return Status(st.code(), fmt::format("{}: tensor '{}': {}", f.name(), name, st.message()));
    for (float x : *out) {
      if (!std::isfinite(x)) return DataLoss("{}: tensor '{}' holds a non-finite value", f.name(), name);
    }
    return Status::Ok();
  };

  const int64_t E = c.n_embd, Q = c.q_dim(), KV = c.kv_dim(), FF = c.n_ff, V = c.n_vocab;
  RETURN_IF_ERROR(matrix("token_embd.weight", E, V, &w_.token_embd));
  RETURN_IF_ERROR(vec("output_norm.weight", E, &w_.output_norm));
  if (f.FindTensor("output.weight")) {
    RETURN_IF_ERROR(matrix("output.weight", E, V, &w_.output));
  } else {
    config_.tied_output = true;
  }
  RETURN_IF_ERROR(vec("rope_freqs.weight", c.rope_dim / 2, &w_.rope_factors, /*required=*/false));
  if (c.longrope_factors) {  // as llama_model::get_rope_factors: long beyond the original context
    const bool long_ctx = n_ctx > c.rope_scaling.orig_context;
    RETURN_IF_ERROR(vec(long_ctx ? "rope_factors_long.weight" : "rope_factors_short.weight", c.rope_dim / 2,
                        &w_.rope_factors));
  }
  w_.layers.resize(c.n_layers);
  for (int l = 0; l < c.n_layers; ++l) {
    LayerWeights& L = w_.layers[l];
    const std::string p = fmt::format("blk.{}.", l);
    RETURN_IF_ERROR(vec(p + "attn_norm.weight", E, &L.attn_norm));
    RETURN_IF_ERROR(vec(p + "ffn_norm.weight", E, &L.ffn_norm));
    if (f.FindTensor(p + "attn_qkv.weight")) {  // fused (Phi-3): rows [Q; K; V]
      const std::string qkv = p + "attn_qkv.weight";
      RETURN_IF_ERROR(matrix_rows(qkv, E, Q + 2 * KV, 0, Q, &L.wq));
      RETURN_IF_ERROR(matrix_rows(qkv, E, Q + 2 * KV, Q, KV, &L.wk));
      RETURN_IF_ERROR(matrix_rows(qkv, E, Q + 2 * KV, Q + KV, KV, &L.wv));
    } else {
      RETURN_IF_ERROR(matrix(p + "attn_q.weight", E, Q, &L.wq));
      RETURN_IF_ERROR(matrix(p + "attn_k.weight", E, KV, &L.wk));
      RETURN_IF_ERROR(matrix(p + "attn_v.weight", E, KV, &L.wv));
    }
    RETURN_IF_ERROR(matrix(p + "attn_output.weight", Q, E, &L.wo));
    if (f.FindTensor(p + "ffn_gate.weight")) {
      RETURN_IF_ERROR(matrix(p + "ffn_gate.weight", E, FF, &L.w_gate));
      RETURN_IF_ERROR(matrix(p + "ffn_up.weight", E, FF, &L.w_up));
    } else {  // fused gate-up (Phi-3): rows [gate; up], ggml_swiglu's halves
      RETURN_IF_ERROR(matrix_rows(p + "ffn_up.weight", E, 2 * FF, 0, FF, &L.w_gate));
      RETURN_IF_ERROR(matrix_rows(p + "ffn_up.weight", E, 2 * FF, FF, FF, &L.w_up));
    }
    RETURN_IF_ERROR(matrix(p + "ffn_down.weight", FF, E, &L.w_down));
    if (c.qkv_bias) {
      RETURN_IF_ERROR(vec(p + "attn_q.bias", Q, &L.bq));
      RETURN_IF_ERROR(vec(p + "attn_k.bias", KV, &L.bk));
      RETURN_IF_ERROR(vec(p + "attn_v.bias", KV, &L.bv));
    }
    if (c.qk_norm) {
      RETURN_IF_ERROR(vec(p + "attn_q_norm.weight", c.head_dim, &L.q_norm));
      RETURN_IF_ERROR(vec(p + "attn_k_norm.weight", c.head_dim, &L.k_norm));
    }
    if (c.post_norms) {
      RETURN_IF_ERROR(vec(p + "post_attention_norm.weight", E, &L.post_attn_norm));
      RETURN_IF_ERROR(vec(p + "post_ffw_norm.weight", E, &L.post_ffn_norm));
    }
  }
  return Status::Ok();
}

kv::KvSpec Model::KvSpec() const {
  kv::KvSpec spec{.n_layers = 0,
                  .n_kv_heads = config_.n_kv_heads,
                  .n_q_heads = config_.n_heads,
                  .head_dim = config_.head_dim,
                  .max_context = config_.context_length,
                  .rope_dim = config_.rope_dim,
                  .rope_style = config_.rope_style};
  for (int l = 0; l < config_.n_layers; ++l) {
    if (!share_.Owns(l)) continue;  // attends over its source's cache layer
    ++spec.n_layers;
    spec.layer_window.push_back(config_.layer_window[l]);
    spec.layer_inv_freq.push_back(inv_freq_[l]);
  }
  return spec;
}

Status Model::SetKvShare(const KvShare& share) {
  RETURN_IF_ERROR(CheckKvShare(share, config_));
  share_ = share;
  cache_layer_ = share_.CacheLayers(config_.n_layers);
  return Status::Ok();
}

size_t Model::WeightBytesPerToken() const {
  size_t b = config_.tied_output ? w_.token_embd.bytes() : w_.output.bytes();
  for (const LayerWeights& L : w_.layers) {
    for (const ops::WeightMatrix* m : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down})
      b += m->bytes();
  }
  return b;
}

size_t Model::WeightTensorCount() const { return file_->tensors().size(); }

std::vector<kv::StepChunk> StepChunks(std::span<const BatchEntry> batch) {
  std::vector<kv::StepChunk> chunks;
  int64_t row = 0;
  for (const BatchEntry& e : batch) {
    chunks.push_back({e.seq, static_cast<int>(e.tokens.size()), row});
    row += static_cast<int64_t>(e.tokens.size());
  }
  return chunks;
}

Status Model::Forward(ThreadPool& pool, kv::KvCache& kv, std::span<const BatchEntry> batch,
                      std::vector<float>* logits) {
  const ModelConfig& c = config_;
  const int64_t E = c.n_embd;
  // Validate the batch before touching any state.
  int64_t rows = 0, logit_rows = 0;
  ws_.chunks.clear();
  for (const BatchEntry& e : batch) {
    if (e.tokens.empty()) return InvalidArgument("batch entry for sequence {} has no tokens", e.seq);
    for (TokenId t : e.tokens) {
      if (t < 0 || t >= c.n_vocab) {
        return InvalidArgument("token id {} is out of range (vocabulary of {})", t, c.n_vocab);
      }
    }
    if (e.first_logit() < 0 || e.first_logit() >= static_cast<int64_t>(e.tokens.size())) {
      return InvalidArgument("logits_from {} outside the entry's {} tokens", e.logits_from, e.tokens.size());
    }
    ws_.chunks.push_back({e.seq, static_cast<int>(e.tokens.size()), rows});
    rows += static_cast<int64_t>(e.tokens.size());
    logit_rows += static_cast<int64_t>(e.tokens.size()) - e.first_logit();
  }
  if (rows == 0) return InvalidArgument("empty batch");
  CHECK(kv.StepReserved(ws_.chunks), "the KV slots of the batch are not reserved (KvCache::BeginStep)");

  auto grow = [](AlignedBuffer<float>& b, size_t n) {
    if (b.size() < n) b.Resize(n);
  };
  grow(ws_.x, rows * E);
  grow(ws_.xn, rows * E);
  grow(ws_.tmp, rows * E);
  grow(ws_.q, rows * c.q_dim());
  grow(ws_.att, rows * c.q_dim());
  grow(ws_.k, rows * c.kv_dim());
  grow(ws_.v, rows * c.kv_dim());
  grow(ws_.gate, rows * c.n_ff);
  grow(ws_.up, rows * c.n_ff);

  // Positions and rope angles, one table per distinct rope base.
  ws_.pos.resize(rows);
  int64_t r = 0;
  for (const BatchEntry& e : batch) {
    // The cache says where the next token sits (re-indexing eviction policies count cache
    // slots, not the tokens seen).
    const int64_t next = kv.NextPosition(e.seq);
    for (size_t i = 0; i < e.tokens.size(); ++i) ws_.pos[r++] = next + static_cast<int64_t>(i);
  }
  const int half = c.rope_dim / 2;
  std::map<std::vector<float>, int> tables;  // one angle table per distinct frequency set
  ws_.layer_rope_table.resize(c.n_layers);
  for (int l = 0; l < c.n_layers; ++l) {
    auto [it, fresh] = tables.emplace(inv_freq_[l], static_cast<int>(tables.size()));
    ws_.layer_rope_table[l] = it->second;
  }
  ws_.rope_cos.resize(tables.size() * rows * half);
  ws_.rope_sin.resize(tables.size() * rows * half);
  for (int l = 0; l < c.n_layers; ++l) {
    const int t = ws_.layer_rope_table[l];
    if (l > 0 && std::find(ws_.layer_rope_table.begin(), ws_.layer_rope_table.begin() + l, t) !=
                     ws_.layer_rope_table.begin() + l)
      continue;  // table already filled by an earlier layer with the same base
    for (int64_t i = 0; i < rows; ++i) {
      ops::RopeAngles(ws_.pos[i], inv_freq_[l], &ws_.rope_cos[(t * rows + i) * half],
                      &ws_.rope_sin[(t * rows + i) * half]);
    }
  }

  // Embeddings.
  r = 0;
  for (const BatchEntry& e : batch) {
    for (TokenId t : e.tokens) {
      float* x = ws_.x.data() + r * E;
      if (w_.token_embd.format == ops::WeightFormat::kGgml) {
        ops::DequantizeGgmlRow(w_.token_embd, t, x);  // the kernels' decoder, bit-exact with the reference
      } else {
        w_.token_embd.DequantizeRow(t, x);
      }
      if (c.embed_scale != 1.0f) ops::ScaleInPlace(x, c.embed_scale, E);
      ++r;
    }
  }
  for (int l = 0; l < c.n_layers; ++l) Layer(pool, kv, l, rows);
  kv.EndStep(ws_.chunks, &pool);

  // Output norm and projection for the rows that want logits (gathered into xn).
  int64_t out_row = 0;
  r = 0;
  for (const BatchEntry& e : batch) {
    const int64_t n = static_cast<int64_t>(e.tokens.size());
    for (int64_t i = e.first_logit(); i < n; ++i) {
      ops::RmsNorm(ws_.x.data() + (r + i) * E, w_.output_norm.data(), E, c.rms_eps,
                   ws_.xn.data() + out_row * E);
      ++out_row;
    }
    r += n;
  }
  logits->resize(static_cast<size_t>(logit_rows) * c.n_vocab);
  const ops::WeightMatrix& out_w = c.tied_output ? w_.token_embd : w_.output;
  const ops::MatMulOutput o{&out_w, logits->data(), c.n_vocab};
  ops::MatMul(pool, ws_.xn.data(), E, logit_rows, {&o, 1});
  if (c.final_logit_softcap > 0) {
    const float cap = c.final_logit_softcap;
    for (float& v : *logits) v = cap * std::tanh(v / cap);
  }
  return Status::Ok();
}

void Model::Layer(ThreadPool& pool, kv::KvCache& kv, int l, int64_t rows) {
  const ModelConfig& c = config_;
  const LayerWeights& L = w_.layers[l];
  const int64_t E = c.n_embd, QD = c.q_dim(), KD = c.kv_dim(), FF = c.n_ff;
  const int hd = c.head_dim, half = c.rope_dim / 2;
  float *x = ws_.x.data(), *xn = ws_.xn.data(), *q = ws_.q.data(), *k = ws_.k.data(),
        *v = ws_.v.data(), *att = ws_.att.data(), *tmp = ws_.tmp.data(), *gate = ws_.gate.data(),
        *up = ws_.up.data();
  const float mscale = rope_mscale_[l];
  const float* cos = &ws_.rope_cos[ws_.layer_rope_table[l] * rows * half];
  const float* sin = &ws_.rope_sin[ws_.layer_rope_table[l] * rows * half];
  // Per-row work runs inline for a decode step and over the pool for a prompt.
  auto per_row = [&](auto&& fn) {
    if (rows < 2 * kRowGrain) {
      fn(0, rows);
    } else {
      pool.ParallelFor(0, rows, kRowGrain, [&](int64_t b, int64_t e, int) { fn(b, e); });
    }
  };

  // Attention block.
  per_row([&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) ops::RmsNorm(x + i * E, L.attn_norm.data(), E, c.rms_eps, xn + i * E);
  });
  // A layer that shares an earlier layer's cache needs only its queries.
  const bool owns_kv = share_.Owns(l);
  const ops::MatMulOutput qkv[] = {{&L.wq, q, QD}, {&L.wk, k, KD}, {&L.wv, v, KD}};
  ops::MatMul(pool, xn, E, rows, std::span(qkv, owns_kv ? 3 : 1));
  per_row([&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      float *qi = q + i * QD, *ki = k + i * KD, *vi = v + i * KD;
      if (c.qkv_bias) {
        ops::AddInPlace(qi, L.bq.data(), QD);
        if (owns_kv) {
          ops::AddInPlace(ki, L.bk.data(), KD);
          ops::AddInPlace(vi, L.bv.data(), KD);
        }
      }
      if (c.qk_norm) {
        for (int h = 0; h < c.n_heads; ++h) ops::RmsNorm(qi + h * hd, L.q_norm.data(), hd, c.rms_eps, qi + h * hd);
        if (owns_kv) {
          for (int h = 0; h < c.n_kv_heads; ++h)
            ops::RmsNorm(ki + h * hd, L.k_norm.data(), hd, c.rms_eps, ki + h * hd);
        }
      }
      // YaRN's and LongRoPE's factor on cos and sin scales the rotated channels of q and k;
      // RoPE is linear, so k can take it before the cache rotates it.
      if (mscale != 1.0f) {
        for (int h = 0; h < c.n_heads; ++h) ops::ScaleInPlace(qi + h * hd, mscale, c.rope_dim);
        for (int h = 0; h < c.n_kv_heads; ++h) ops::ScaleInPlace(ki + h * hd, mscale, c.rope_dim);
      }
      // Keys go to the cache before RoPE: it applies RoPE itself, or stores them raw for
      // formats that keep keys pre-RoPE.
      ops::RopeApply(qi, c.n_heads, hd, c.rope_dim, cos + i * half, sin + i * half, c.rope_style);
    }
  });
  if (owns_kv) kv.Append(cache_layer_[l], ws_.chunks, k, KD, v, KD);
  kv.Attend(pool, cache_layer_[l], ws_.chunks, q, QD, att, QD, c.attn_scale);
  const ops::MatMulOutput o[] = {{&L.wo, tmp, E}};
  ops::MatMul(pool, att, QD, rows, o);
  per_row([&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      if (c.post_norms) ops::RmsNorm(tmp + i * E, L.post_attn_norm.data(), E, c.rms_eps, tmp + i * E);
      ops::AddInPlace(x + i * E, tmp + i * E, E);
      ops::RmsNorm(x + i * E, L.ffn_norm.data(), E, c.rms_eps, xn + i * E);
    }
  });

  // MLP block.
  const ops::MatMulOutput gu[] = {{&L.w_gate, gate, FF}, {&L.w_up, up, FF}};
  ops::MatMul(pool, xn, E, rows, gu);
  per_row([&](int64_t b, int64_t e) {
    if (c.activation == Activation::kSilu) {
      ops::SiluMul(gate + b * FF, up + b * FF, (e - b) * FF);
    } else {
      ops::GeluTanhMul(gate + b * FF, up + b * FF, (e - b) * FF);
    }
  });
  const ops::MatMulOutput down[] = {{&L.w_down, tmp, E}};
  ops::MatMul(pool, gate, FF, rows, down);
  per_row([&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      if (c.post_norms) ops::RmsNorm(tmp + i * E, L.post_ffn_norm.data(), E, c.rms_eps, tmp + i * E);
      ops::AddInPlace(x + i * E, tmp + i * E, E);
    }
  });
}

}  // namespace slimkv::model
