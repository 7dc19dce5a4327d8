#!/usr/bin/env python3
"""Random-weight GGUF models of the architectures slimkv runs, written with the PyPI `gguf`
package the way llama.cpp's convert_hf_to_gguf.py (conversion/*.py) writes real ones:
the same metadata keys, tensor names, tokenizer keys and chat templates, with weights drawn
at random and stored in the quantized types people download.

    make_model.py ARCH OUT.gguf [--shape tiny|1b] [--seed N]

ARCH (what each exercises):
  llama3        Llama-3.2: byte-level BPE (llama-bpe), tied embeddings, rope_freqs (llama3
                scaling, factors computed as LlamaModel.generate_extra_tensors does); Q4_K +
                Q6_K (a Q4_K_M mix)
  llama-yarn    Llama with rope.scaling.type = yarn (factor 4, from a 64-token original
                context); Q5_K + Q8_0
  qwen2         Qwen2.5: NEOX RoPE, Q/K/V biases, ChatML; Q8_0 (quantized by gguf-py)
  qwen3         Qwen3: per-head q/k RMSNorm, key_length != n_embd / n_head, tied; Q5_0 + Q3_K
  mistral       Mistral-7B-v0.1 as llama: SentencePiece vocab, sliding window (every layer),
                [INST] template; Q2_K + IQ4_XS + Q4_1
  phi3          Phi-3-mini-128k: fused QKV and gate-up, LongRoPE factors and attention
                factor, SentencePiece vocab with <|user|>/<|end|>; IQ4_NL + Q5_1 + BF16

--shape tiny (default): 2 layers, embedding 256, a ~500-token vocabulary: the oracle test's
model (a second of numpy). --shape 1b: Llama-3.2-1B's shape (16 layers, 2048, 8192, 32/8
heads, vocabulary 128256) for speed measurements; never commit such files.

Weights: normal(0, 1/sqrt(fan_in)) for the types gguf-py can quantize; random blocks whose
scales are set so that the dequantized weights have that spread for the K-quants and IQ4
types (gguf-py cannot quantize those; any block is valid data for its dequantizer). Norm
weights are 1 + small noise, F32, as the converters keep them.
"""
from __future__ import annotations

import argparse
import math
import re
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize, quantize

TEMPLATES = Path(__file__).resolve().parent / "templates"

# Byte offsets of the fp16 scale fields of the block types written as random blocks, and
# whether they come in (d, dmin) pairs (gguf/dequant.h).
HALF_FIELDS = {T.Q2_K: [80, 82], T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208],
               T.IQ4_NL: [0], T.IQ4_XS: [0]}
QUANTIZABLE = {T.F32, T.F16, T.BF16, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0}


class Shape:
    def __init__(self, n_layer, n_embd, n_ff, n_head, n_head_kv, head_dim, n_vocab, n_ctx):
        self.n_layer, self.n_embd, self.n_ff = n_layer, n_embd, n_ff
        self.n_head, self.n_head_kv, self.head_dim = n_head, n_head_kv, head_dim
        self.n_vocab, self.n_ctx = n_vocab, n_ctx


def shape_for(arch: str, size: str) -> Shape:
    if size == "1b":  # Llama-3.2-1B; every architecture at the same size, so the runs compare
        return Shape(16, 2048, 8192, 32, 8, 64, 128256, 8192)
    if arch == "qwen3":  # head_dim 128 with 4 heads: q is wider than the embedding, as in Qwen3
        return Shape(2, 256, 512, 4, 2, 128, 0, 2048)
    return Shape(2, 256, 512, 4, 2, 64, 0, 2048)


# ---------------------------------------------------------------------------- vocabularies

def bytes_to_unicode():
    """GPT-2's byte -> printable character map (the byte-level BPE alphabet)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


SAMPLE_TEXT = (
    "The capital of France is Paris, and the capital of Italy is Rome. The quick brown fox jumps over "
    "the lazy dog. In the beginning there was the word, and the word was with the writer. What is 12 "
    "times 7? It is 84. def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) "
    "+ fibonacci(n - 2)\nOnce upon a time, in a land far away, there lived a king who had three "
    "daughters. The essays of Paul Graham talk about startups, programming and the way people think. "
) * 3


def train_merges(words: list[list[str]], n_merges: int) -> list[tuple[str, str]]:
    """Plain BPE training: repeatedly merge the most frequent adjacent pair."""
    counts = Counter(tuple(w) for w in words)
    merges = []
    for _ in range(n_merges):
        pairs = Counter()
        for w, c in counts.items():
            for a, b in zip(w, w[1:]):
                pairs[(a, b)] += c
        if not pairs:
            break
        (a, b), _ = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))
        merges.append((a, b))
        merged = Counter()
        for w, c in counts.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and w[i] == a and w[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            merged[tuple(out)] += c
        counts = merged
    return merges


class Vocab:
    """The tokenizer keys of a GGUF, as the converters write them."""

    def __init__(self, model: str, pre: str):
        self.model, self.pre = model, pre
        self.tokens: list[str] = []
        self.types: list[int] = []
        self.scores: list[float] | None = [] if model == "llama" else None
        self.merges: list[str] | None = [] if model == "gpt2" else None
        self.bos = self.eos = self.unk = -1
        self.add_bos = False
        self.seen: set[str] = set()

    def add(self, token: str, ttype: int, score: float = 0.0):
        if token in self.seen:
            return
        self.seen.add(token)
        self.tokens.append(token)
        self.types.append(ttype)
        if self.scores is not None:
            self.scores.append(score)

    def pad_to(self, n_vocab: int, ttype: int, make):
        """Reserved tokens up to n_vocab (Llama-3 has 250 of them, Mistral v0.3 several)."""
        i = 0
        while len(self.tokens) < n_vocab:
            self.add(make(i), ttype, -1e9)
            i += 1

    def write(self, w: gguf.GGUFWriter, chat_template: str):
        w.add_tokenizer_model(self.model)
        w.add_tokenizer_pre(self.pre)
        w.add_token_list(self.tokens)
        if self.scores is not None:
            w.add_token_scores(self.scores)
        w.add_token_types(self.types)
        if self.merges is not None:
            w.add_token_merges(self.merges)
        w.add_bos_token_id(self.bos)
        w.add_eos_token_id(self.eos)
        if self.unk >= 0:
            w.add_unk_token_id(self.unk)
        w.add_add_bos_token(self.add_bos)
        if self.model == "llama":
            w.add_add_eos_token(False)
        w.add_chat_template(chat_template)


def bpe_vocab(pre: str, specials: list[str], n_vocab: int, bos: str, eos: str, add_bos: bool, reserved) -> Vocab:
    """Byte-level BPE (tokenizer.ggml.model = gpt2), as _set_vocab_gpt2 writes it: the 256
    byte symbols, merged tokens, then the special tokens (CONTROL)."""
    v = Vocab("gpt2", pre)
    b2u = bytes_to_unicode()
    pieces = re.findall(r" ?[A-Za-z]+| ?[0-9]| ?[^\sA-Za-z0-9]+|\s+", SAMPLE_TEXT)
    merges = train_merges([[b2u[b] for b in p.encode()] for p in pieces], 200)
    for b in range(256):
        v.add(b2u[b], gguf.TokenType.NORMAL)
    for a, b in merges:
        v.add(a + b, gguf.TokenType.NORMAL)
    v.merges = [f"{a} {b}" for a, b in merges]
    for s in specials:
        v.add(s, gguf.TokenType.CONTROL)
    v.pad_to(n_vocab, gguf.TokenType.CONTROL, reserved)
    v.bos, v.eos, v.add_bos = v.tokens.index(bos), v.tokens.index(eos), add_bos
    return v


def spm_vocab(leading: list[tuple[str, int]], trailing: list[tuple[str, int]], n_vocab: int) -> Vocab:
    """SentencePiece-BPE (tokenizer.ggml.model = llama), as _set_vocab_sentencepiece writes it:
    <unk> <s> </s>, control tokens (Mistral v3's [INST]...), the 256 byte-fallback tokens,
    pieces scored by merge rank, unused padding, then added tokens (Phi-3's <|user|>...)."""
    v = Vocab("llama", "default")
    v.add("<unk>", gguf.TokenType.UNKNOWN)
    v.add("<s>", gguf.TokenType.CONTROL)
    v.add("</s>", gguf.TokenType.CONTROL)
    for s, t in leading:
        v.add(s, t)
    for b in range(256):
        v.add(f"<0x{b:02X}>", gguf.TokenType.BYTE)
    text = "▁" + SAMPLE_TEXT.replace(" ", "▁").replace("\n", "▁")
    merges = train_merges([list(p) for p in re.findall(r"▁?[^▁]+|▁", text)], 200)
    for i, c in enumerate(sorted(set(text))):
        v.add(c, gguf.TokenType.NORMAL, -1000.0 - i)
    for i, (a, b) in enumerate(merges):
        v.add(a + b, gguf.TokenType.NORMAL, -float(i))
    v.pad_to(n_vocab - len(trailing), gguf.TokenType.UNUSED, lambda i: f"<unused{i}>")
    for s, t in trailing:
        v.add(s, t, -1000.0)
    v.bos, v.eos, v.unk, v.add_bos = 1, 2, 0, True
    return v


# ---------------------------------------------------------------------------- weights

class Weights:
    def __init__(self, w: gguf.GGUFWriter, seed: int):
        self.w = w
        self.rng = np.random.default_rng(seed)

    def matrix(self, name: str, rows: int, cols: int, qtype: T, std: float | None = None):
        """A [rows, cols] matrix (ggml dims [cols, rows]) of type qtype, weights of spread std."""
        std = std if std is not None else 1.0 / math.sqrt(cols)
        if qtype in QUANTIZABLE:
            data = (self.rng.standard_normal((rows, cols)) * std).astype(np.float32)
            if qtype == T.F32:
                self.w.add_tensor(name, data)
            elif qtype == T.F16:
                self.w.add_tensor(name, data.astype(np.float16))
            else:
                self.w.add_tensor(name, quantize(data, qtype), raw_dtype=qtype)
            return
        block_elems, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
        n_blocks = rows * cols // block_elems
        raw = self.rng.integers(0, 256, size=(n_blocks, block_bytes), dtype=np.uint16).astype(np.uint8)
        fields = HALF_FIELDS[qtype]

        def set_half(off, values):
            raw[:, off:off + 2] = np.asarray(values, dtype=np.float16).reshape(-1, 1).view(np.uint8).reshape(-1, 2)

        d = np.ones(n_blocks)
        dmin = np.zeros(n_blocks)
        if len(fields) == 2:
            # (d, dmin) types: w = d * sc * q - dmin * m. Random codes have a large positive
            # d-part, so choose each block's dmin to cancel its mean, as a quantizer fitting
            # zero-centred weights would (else activations grow coherently layer by layer).
            set_half(fields[0], 1.0)
            set_half(fields[1], 0.0)
            a = dequantize(raw, qtype).reshape(n_blocks, -1).mean(axis=1)
            set_half(fields[0], 0.0)
            set_half(fields[1], 1.0)
            b = -dequantize(raw, qtype).reshape(n_blocks, -1).mean(axis=1)
            dmin = np.where(b > 0, a / np.maximum(b, 1e-6), 0.0)
        set_half(fields[0], d)
        if len(fields) == 2:
            set_half(fields[1], dmin)
        unit = dequantize(raw[:4096], qtype)  # the spread of the codes, from a sample of blocks
        scale = std / max(float(np.std(unit)), 1e-6)
        jitter = self.rng.uniform(0.5, 1.5, size=n_blocks)  # blocks of different magnitudes
        set_half(fields[0], d * scale * jitter)
        if len(fields) == 2:
            set_half(fields[1], dmin * scale * jitter)
        self.w.add_tensor(name, raw.reshape(rows, cols // block_elems * block_bytes), raw_dtype=qtype)

    def vector(self, name: str, n: int, around: float = 1.0, spread: float = 0.1):
        self.w.add_tensor(name, (around + spread * self.rng.standard_normal(n)).astype(np.float32))


# ---------------------------------------------------------------------------- architectures

def common_keys(w, s: Shape, rope_base: float, eps: float = 1e-5):
    """TextModel.set_gguf_parameters."""
    w.add_block_count(s.n_layer)
    w.add_context_length(s.n_ctx)
    w.add_embedding_length(s.n_embd)
    w.add_feed_forward_length(s.n_ff)
    w.add_head_count(s.n_head)
    w.add_head_count_kv(s.n_head_kv)
    w.add_rope_freq_base(rope_base)
    w.add_layer_norm_rms_eps(eps)


def layers(wt: Weights, s: Shape, types: dict, fused: bool = False, qkv_bias: bool = False, qk_norm: bool = False):
    q_dim, kv_dim = s.n_head * s.head_dim, s.n_head_kv * s.head_dim
    for il in range(s.n_layer):
        p = f"blk.{il}."
        wt.vector(p + "attn_norm.weight", s.n_embd)
        if fused:
            wt.matrix(p + "attn_qkv.weight", q_dim + 2 * kv_dim, s.n_embd, types["qkv"])
        else:
            wt.matrix(p + "attn_q.weight", q_dim, s.n_embd, types["qkv"])
            wt.matrix(p + "attn_k.weight", kv_dim, s.n_embd, types["qkv"])
            wt.matrix(p + "attn_v.weight", kv_dim, s.n_embd, types.get("v", types["qkv"]))
        if qkv_bias:
            wt.vector(p + "attn_q.bias", q_dim, 0.0, 0.5)
            wt.vector(p + "attn_k.bias", kv_dim, 0.0, 0.5)
            wt.vector(p + "attn_v.bias", kv_dim, 0.0, 0.5)
        if qk_norm:
            wt.vector(p + "attn_q_norm.weight", s.head_dim)
            wt.vector(p + "attn_k_norm.weight", s.head_dim)
        wt.matrix(p + "attn_output.weight", s.n_embd, q_dim, types["o"])
        wt.vector(p + "ffn_norm.weight", s.n_embd)
        if fused:
            wt.matrix(p + "ffn_up.weight", 2 * s.n_ff, s.n_embd, types["up"])
        else:
            wt.matrix(p + "ffn_gate.weight", s.n_ff, s.n_embd, types["up"])
            wt.matrix(p + "ffn_up.weight", s.n_ff, s.n_embd, types["up"])
        wt.matrix(p + "ffn_down.weight", s.n_embd, s.n_ff, types["down"])


def llama3_rope_factors(head_dim: int, base: float, factor=32.0, low=1.0, high=4.0, old_ctx=8192):
    """LlamaModel.generate_extra_tensors (rope_type llama3). The tiny model's original
    context is small so that its factors span all three bands over a head of 64."""
    freqs = 1.0 / (base ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim))
    low_wavelen, high_wavelen = old_ctx / low, old_ctx / high
    out = []
    for f in freqs:
        wavelen = 2 * math.pi / f
        if wavelen < high_wavelen:
            out.append(1.0)
        elif wavelen > low_wavelen:
            out.append(factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


def write(arch: str, out: str, size: str, seed: int):
    s = shape_for(arch, size)
    big = size == "1b"
    gguf_arch = {"llama3": "llama", "llama-yarn": "llama", "mistral": "llama"}.get(arch, arch)
    w = gguf.GGUFWriter(out, gguf_arch)
    w.add_name(f"slimkv random {arch} {size}")
    wt = Weights(w, seed)
    tied = False
    if arch in ("llama3", "llama-yarn"):
        vocab = bpe_vocab("llama-bpe", ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                                        "<|end_header_id|>", "<|eot_id|>"], s.n_vocab, "<|begin_of_text|>",
                          "<|eot_id|>", True, lambda i: f"<|reserved_special_token_{i}|>")
        common_keys(w, s, 500000.0)
        w.add_vocab_size(len(vocab.tokens))
        w.add_rope_dimension_count(s.head_dim)
        if arch == "llama3":
            tied = True
            types = {"qkv": T.Q4_K, "v": T.Q6_K, "o": T.Q4_K, "up": T.Q4_K, "down": T.Q6_K, "embd": T.Q6_K}
            w.add_tensor("rope_freqs.weight", llama3_rope_factors(s.head_dim, 500000.0, old_ctx=8192 if big else 64))
        else:
            w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
            w.add_rope_scaling_factor(4.0)
            w.add_rope_scaling_orig_ctx_len(8192 if big else 64)
            types = {"qkv": T.Q5_K, "o": T.Q5_K, "up": T.Q5_K, "down": T.Q8_0, "embd": T.Q8_0, "out": T.Q6_K}
        vocab.write(w, (TEMPLATES / "llama3.jinja").read_text())
        layers(wt, s, types)
    elif arch in ("qwen2", "qwen3"):
        vocab = bpe_vocab("qwen2", ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], s.n_vocab, "<|endoftext|>",
                          "<|im_end|>", False, lambda i: f"<|extra_{i}|>")
        common_keys(w, s, 1000000.0, 1e-6)
        if arch == "qwen3":
            w.add_key_length(s.head_dim)
            w.add_value_length(s.head_dim)
        vocab.write(w, (TEMPLATES / "chatml.jinja").read_text())
        if arch == "qwen2":
            types = {"qkv": T.Q8_0, "o": T.Q8_0, "up": T.Q8_0, "down": T.Q8_0, "embd": T.Q8_0, "out": T.Q8_0}
        else:
            tied = True
            types = {"qkv": T.Q5_0, "o": T.Q3_K, "up": T.Q3_K, "down": T.Q5_0, "embd": T.Q5_0}
        layers(wt, s, types, qkv_bias=arch == "qwen2", qk_norm=arch == "qwen3")
    elif arch == "mistral":
        vocab = spm_vocab([("[INST]", gguf.TokenType.CONTROL), ("[/INST]", gguf.TokenType.CONTROL)], [],
                          32768 if big else 0)
        common_keys(w, s, 10000.0)
        w.add_vocab_size(len(vocab.tokens))
        w.add_rope_dimension_count(s.head_dim)
        w.add_sliding_window(4096 if big else 48)
        vocab.write(w, (TEMPLATES / "mistral.jinja").read_text())
        types = {"qkv": T.Q2_K, "o": T.IQ4_XS, "up": T.Q2_K, "down": T.IQ4_XS, "embd": T.Q4_1, "out": T.Q6_K}
        layers(wt, s, types)
    elif arch == "phi3":
        vocab = spm_vocab([], [("<|endoftext|>", gguf.TokenType.CONTROL), ("<|assistant|>", gguf.TokenType.USER_DEFINED),
                               ("<|end|>", gguf.TokenType.CONTROL), ("<|user|>", gguf.TokenType.USER_DEFINED),
                               ("<|system|>", gguf.TokenType.USER_DEFINED)], 32064 if big else 0)
        vocab.eos = vocab.tokens.index("<|end|>")
        # Phi3MiniModel.set_gguf_parameters and generate_extra_tensors (Phi-3-mini-128k).
        orig = 4096 if big else 64
        w.add_context_length(131072 if big else s.n_ctx)
        w.add_rope_scaling_orig_ctx_len(orig)
        w.add_embedding_length(s.n_embd)
        w.add_feed_forward_length(s.n_ff)
        w.add_block_count(s.n_layer)
        w.add_head_count(s.n_head)
        w.add_head_count_kv(s.n_head_kv)
        w.add_layer_norm_rms_eps(1e-5)
        w.add_rope_dimension_count(s.head_dim)
        w.add_rope_freq_base(10000.0)
        w.add_sliding_window(262144 if big else 2047)
        scale = (131072 if big else s.n_ctx) / orig
        w.add_rope_scaling_attn_factors(math.sqrt(1 + math.log(scale) / math.log(orig)))
        vocab.write(w, (TEMPLATES / "phi3.jinja").read_text())
        half = s.head_dim // 2
        rng = np.random.default_rng(seed + 1)
        w.add_tensor("rope_factors_long.weight", (1.0 + 40.0 * np.linspace(0, 1, half) ** 2).astype(np.float32))
        w.add_tensor("rope_factors_short.weight", (1.0 + 0.2 * rng.random(half)).astype(np.float32))
        types = {"qkv": T.IQ4_NL, "o": T.Q5_1, "up": T.IQ4_NL, "down": T.Q4_0, "embd": T.BF16, "out": T.Q8_0}
        layers(wt, s, types, fused=True)
    else:
        raise SystemExit(f"unknown architecture {arch!r}")
    n_vocab = len(vocab.tokens)
    # A tied embedding is the output projection too: weights of 1/sqrt(n_embd), as trained
    # models' are, keep the logits in a realistic range (RMSNorm makes the input scale-free).
    wt.matrix("token_embd.weight", n_vocab, s.n_embd, types["embd"], std=None if tied else 1.0)
    wt.vector("output_norm.weight", s.n_embd)
    if not tied:
        wt.matrix("output.weight", n_vocab, s.n_embd, types["out"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return n_vocab


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("arch", choices=["llama3", "llama-yarn", "qwen2", "qwen3", "mistral", "phi3"])
    ap.add_argument("out")
    ap.add_argument("--shape", choices=["tiny", "1b"], default="tiny")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    n_vocab = write(args.arch, args.out, args.shape, args.seed)
    print(f"{args.out}: {args.arch} ({args.shape}), vocabulary {n_vocab}", file=sys.stderr)


if __name__ == "__main__":
    main()
