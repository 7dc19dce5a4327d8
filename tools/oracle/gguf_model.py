"""Load a GGUF checkpoint into a plain config + float64 numpy weights.

Independent of slimkv's C++ GGUF code on purpose: the file is parsed by the
`gguf` PyPI package (gguf.GGUFReader) and every tensor is dequantized by
gguf.quants.dequantize.

Shape convention
----------------
GGUF stores dims in ggml order: ne[0] is the fastest-varying (contiguous) axis.
A ggml matrix with ne = [n_in, n_out] is n_out rows of n_in contiguous values,
which in numpy (C order) is an array of shape (n_out, n_in) = reversed(ne).
That is exactly PyTorch's nn.Linear layout, so a projection is  y = x @ W.T.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize

SUPPORTED_ARCHS = ("llama", "qwen2", "qwen3", "phi3", "gemma3")

# llama.cpp's llama_model_rope_type(): "normal" RoPE rotates pairs of consecutive
# values (2i, 2i+1); "neox" RoPE rotates (i, i + n_rot/2).  The llama converter
# permutes HF's Q/K rows so that GGUF llama uses the normal order; qwen2 and the
# gemma family are NEOX (src/llama-model.cpp, llama_model_rope_type).
ROPE_NEOX = {"llama": False, "qwen2": True, "qwen3": True, "phi3": True, "gemma3": True}


@dataclass
class Config:
    arch: str
    n_vocab: int
    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    n_ff: int
    head_dim: int            # key length
    head_dim_v: int          # value length
    n_rot: int               # rotated dims per head (rope.dimension_count)
    norm_eps: float
    rope_neox: bool
    # per layer
    rope_base: list = field(default_factory=list)
    rope_freq_scale: list = field(default_factory=list)  # 1/linear-scaling factor
    sliding_window: list = field(default_factory=list)   # 0 = full attention
    rope_yarn: list = field(default_factory=list)        # per layer: YaRN on (ext_factor 1) or off
    # YaRN (ggml's rope_yarn): correction dims from the original context, beta_fast/slow
    rope_orig_ctx: int = 0
    rope_attn_factor: float = 1.0   # {arch}.rope.scaling.attn_factor: scales cos and sin
    qk_norm: bool = False           # per-head RMSNorm of q and k before RoPE (gemma3, qwen3)
    longrope: bool = False          # phi3: rope_factors_long/short, chosen by the context size
    attn_scale: float = 0.0
    final_logit_softcap: float = 0.0
    embd_scale: float = 1.0
    bos_id: int = -1
    eos_id: int = -1
    add_bos: bool = False

    def describe(self) -> str:
        swa = [i for i, w in enumerate(self.sliding_window) if w == 0]
        lines = [
            f"arch={self.arch} vocab={self.n_vocab} embd={self.n_embd} layers={self.n_layer} "
            f"heads={self.n_head}/{self.n_head_kv} head_dim={self.head_dim} ff={self.n_ff}",
            f"rope={'neox' if self.rope_neox else 'normal'} n_rot={self.n_rot} "
            f"bases={sorted(set(self.rope_base))} freq_scales={sorted(set(self.rope_freq_scale))}",
            f"eps={self.norm_eps} attn_scale={self.attn_scale:.6g} embd_scale={self.embd_scale:.6g} "
            f"softcap={self.final_logit_softcap} add_bos={self.add_bos} bos={self.bos_id}",
        ]
        if any(self.sliding_window):
            lines.append(f"sliding window={max(self.sliding_window)}; full-attention layers={swa}")
        return "\n".join(lines)


def cfg_context(g, cfg) -> int:
    return int(g.get(f"{cfg.arch}.context_length", 0) or 0)


class GGUFFile:
    def __init__(self, path: str):
        self.path = path
        self.reader = GGUFReader(path, "r")
        self.tensors = {t.name: t for t in self.reader.tensors}

    def get(self, key: str, default=None):
        f = self.reader.fields.get(key)
        if f is None:
            return default
        return f.contents()

    def has_tensor(self, name: str) -> bool:
        return name in self.tensors

    def tensor(self, name: str) -> np.ndarray:
        """Dequantized tensor as float64, numpy shape = reversed(ggml ne)."""
        t = self.tensors[name]
        shape = tuple(int(d) for d in reversed(t.shape))
        a = np.asarray(dequantize(t.data, t.tensor_type))
        assert a.size == math.prod(shape), (name, a.shape, shape)
        return a.reshape(shape).astype(np.float64)


def read_config(g: GGUFFile) -> Config:
    arch = g.get("general.architecture")
    if arch not in SUPPORTED_ARCHS:
        raise NotImplementedError(f"architecture {arch!r} not supported (have {SUPPORTED_ARCHS})")

    def key(k, default=None):
        return g.get(f"{arch}.{k}", default)

    def scalar(k, default=None):
        v = key(k, default)
        if isinstance(v, list):  # per-layer arrays: only uniform ones are supported
            if len(set(v)) != 1:
                raise NotImplementedError(f"{arch}.{k} varies per layer: {v}")
            v = v[0]
        return v

    n_embd = int(scalar("embedding_length"))
    n_layer = int(scalar("block_count"))
    n_head = int(scalar("attention.head_count"))
    n_head_kv = int(scalar("attention.head_count_kv", n_head))
    head_dim = int(scalar("attention.key_length", n_embd // n_head))
    head_dim_v = int(scalar("attention.value_length", n_embd // n_head))
    n_rot = int(scalar("rope.dimension_count", head_dim))
    n_vocab = int(g.tensors["token_embd.weight"].shape[1])

    # --- RoPE scaling (llama.cpp: llama_model::load_hparams, llama_context's yarn_*) ---
    # The type defaults to linear; yarn turns on ext_factor 1 with beta_fast 32 / beta_slow 1
    # (llama.cpp reads no yarn_* keys for these architectures); longrope (phi3) is the
    # rope_factors_long/short tensors; llama3 is the rope_freqs tensor.
    scaling_type = key("rope.scaling.type", "linear")
    factor = key("rope.scaling.factor") or key("rope.scale_linear") or 0.0
    if scaling_type not in ("none", "linear", "yarn", "longrope"):
        raise NotImplementedError(f"rope scaling type {scaling_type!r} (none/linear/yarn/longrope)")
    freq_scale = 1.0 if (scaling_type in ("none", "longrope") or not factor) else 1.0 / float(factor)
    yarn = scaling_type == "yarn"
    rope_base = float(key("rope.freq_base", 10000.0))

    cfg = Config(
        arch=arch, n_vocab=n_vocab, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
        n_head_kv=n_head_kv, n_ff=int(scalar("feed_forward_length")), head_dim=head_dim,
        head_dim_v=head_dim_v, n_rot=n_rot,
        norm_eps=float(key("attention.layer_norm_rms_epsilon")),
        rope_neox=ROPE_NEOX[arch],
        rope_base=[rope_base] * n_layer,
        rope_freq_scale=[freq_scale] * n_layer,
        sliding_window=[0] * n_layer,
        rope_yarn=[yarn] * n_layer,
        attn_scale=1.0 / math.sqrt(head_dim),
    )
    n_ctx_train = int(key("context_length", 0) or 0)
    cfg.rope_orig_ctx = int(key("rope.scaling.original_context_length", n_ctx_train) or 0)
    cfg.rope_attn_factor = float(key("rope.scaling.attn_factor", 1.0))
    cfg.qk_norm = arch in ("gemma3", "qwen3")

    if arch == "llama":
        # Mistral's sliding window (HF MistralAttention: every layer), when the file has the
        # key; llama.cpp's converter does not write it and llama.cpp ignores it.
        window = int(key("attention.sliding_window", 0) or 0)
        if 0 < window and (not n_ctx_train or window < n_ctx_train):
            cfg.sliding_window = [window] * n_layer
    if arch == "phi3":
        # phi3.attention.sliding_window is ignored, as llama.cpp does (llama.cpp #13676).
        cfg.longrope = g.has_tensor("rope_factors_long.weight")

    if arch == "gemma3":
        # llama.cpp src/models/gemma3.cpp (load_arch_hparams + graph)
        cfg.embd_scale = math.sqrt(n_embd)            # inpL = scale(inpL, sqrtf(n_embd))
        cfg.final_logit_softcap = float(key("final_logit_softcapping", 0.0) or 0.0)
        # query_pre_attn_scalar: head_dim for every size except 27B (62 layers),
        # where it is n_embd / n_head.  GGUF has no key for it.
        if n_layer == 62:
            cfg.attn_scale = 1.0 / math.sqrt(n_embd / n_head)
        window = int(key("attention.sliding_window", 0) or 0)
        if window > 0:
            # load_swa_pattern(ml, 6): an explicit per-layer bool array wins,
            # else layer il is SWA iff il % n_pattern < n_pattern - 1
            # (pattern 6: layers 5, 11, 17, ... are global).
            pattern = key("attention.sliding_window_pattern", 6)
            if isinstance(pattern, list):
                is_swa = [bool(p) for p in pattern]
            else:
                n_pat = int(pattern)
                is_swa = [n_pat == 0 or (il % n_pat) < (n_pat - 1) for il in range(n_layer)]
            # SWA layers: rope base from rope.freq_base_swa (default 10000),
            # freq scale 1 (rope_freq_scale_train_swa); global layers keep the
            # file's rope.freq_base and scaling.
            base_swa = float(key("rope.freq_base_swa", 10000.0))
            for il in range(n_layer):
                if is_swa[il]:
                    cfg.sliding_window[il] = window
                    cfg.rope_base[il] = base_swa
                    cfg.rope_freq_scale[il] = 1.0
                    cfg.rope_yarn[il] = False

    if key("attention.scale") is not None:
        cfg.attn_scale = float(key("attention.scale"))

    cfg.bos_id = int(g.get("tokenizer.ggml.bos_token_id", -1))
    cfg.eos_id = int(g.get("tokenizer.ggml.eos_token_id", -1))
    add_bos = g.get("tokenizer.ggml.add_bos_token")
    if add_bos is None:  # llama.cpp default: SentencePiece vocabularies add BOS
        add_bos = g.get("tokenizer.ggml.model") == "llama"
    cfg.add_bos = bool(add_bos)
    return cfg


def load_weights(g: GGUFFile, cfg: Config, n_ctx: int = 0) -> dict:
    """All tensors, float64, with fused attn_qkv and gate-up split, output tied if absent,
    and phi3's LongRoPE factors chosen as llama_model::get_rope_factors does (long when the
    context, n_ctx or else the training context, exceeds the original one)."""
    w = {name: g.tensor(name) for name in g.tensors}
    if cfg.longrope:
        long_ctx = (n_ctx or cfg_context(g, cfg)) > cfg.rope_orig_ctx
        w["rope_freqs.weight"] = w["rope_factors_long.weight" if long_ctx else "rope_factors_short.weight"]
    for il in range(cfg.n_layer):
        up, gate = f"blk.{il}.ffn_up.weight", f"blk.{il}.ffn_gate.weight"
        if gate not in w and w[up].shape[0] == 2 * cfg.n_ff:  # phi3: rows [gate; up] (ggml_swiglu)
            w[gate], w[up] = w[up][:cfg.n_ff], w[up][cfg.n_ff:]
    for il in range(cfg.n_layer):
        fused = f"blk.{il}.attn_qkv"
        for suffix in ("weight", "bias"):
            if f"{fused}.{suffix}" in w:
                qkv = w.pop(f"{fused}.{suffix}")
                nq = cfg.n_head * cfg.head_dim
                nk = cfg.n_head_kv * cfg.head_dim
                w[f"blk.{il}.attn_q.{suffix}"] = qkv[:nq]
                w[f"blk.{il}.attn_k.{suffix}"] = qkv[nq:nq + nk]
                w[f"blk.{il}.attn_v.{suffix}"] = qkv[nq + nk:]
    if "output.weight" not in w:
        w["output.weight"] = w["token_embd.weight"]  # tied embeddings
    return w
