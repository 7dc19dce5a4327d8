#!/usr/bin/env python3
"""slimkv correctness oracle: a float64 numpy reference forward pass over a GGUF file.

    reference.py logits --model M --tokens 1,2,3 [--out FILE]
    reference.py greedy --model M --tokens 1,2,3 -n 64 [--out FILE]
    reference.py ppl    --model M --tokens-file F --ctx 512 --chunks 4
    reference.py info   --model M
    reference.py selftest --model M

Takes token ids, never text.  Weights are read by the `gguf` PyPI package and
dequantized by gguf.quants.dequantize, so nothing here shares code with the C++
engine.  See README.md beside this file for the conventions and the validation
against llama.cpp.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gguf_model import Config, GGUFFile, load_weights, read_config  # noqa: E402


# ----------------------------------------------------------------------------
# building blocks
# ----------------------------------------------------------------------------

def rms_norm(x, weight, eps):
    """RMSNorm (Zhang & Sennrich 2019): x / sqrt(mean(x^2) + eps) * g.

    For Gemma the GGUF weight already holds (1 + g): llama.cpp's converter adds
    1 to every *norm.weight of gemma3 (conversion/gemma.py, Gemma3Model.norm_shift),
    so the same formula serves both families."""
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * weight


def silu(x):
    # x * sigmoid(x), written with tanh so that it cannot overflow
    return x * 0.5 * (1.0 + np.tanh(0.5 * x))


def gelu_tanh(x):
    # GELU, tanh approximation (Hendrycks & Gimpel 2016); Gemma's hidden_activation
    # "gelu_pytorch_tanh", ggml_gelu in llama.cpp
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def softmax(x, axis=-1):
    m = np.max(x, axis=axis, keepdims=True)
    e = np.exp(x - m)
    return e / np.sum(e, axis=axis, keepdims=True)


def log_softmax(x, axis=-1):
    m = np.max(x, axis=axis, keepdims=True)
    return x - m - np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True))


def yarn_corr_dims(n_rot, orig_ctx, base, beta_fast=32.0, beta_slow=1.0):
    """ggml_rope_yarn_corr_dims: the pair indices between which YaRN ramps from keeping the
    trained frequency (below) to interpolating it (above)."""
    def dim(n):
        return n_rot * math.log(orig_ctx / (n * 2 * math.pi)) / (2 * math.log(base))
    return max(0.0, math.floor(dim(beta_fast))), min(n_rot - 1.0, math.ceil(dim(beta_slow)))


def rope(x, pos, n_rot, base, freq_scale=1.0, freq_factors=None, neox=False, yarn_orig_ctx=0, mscale=1.0):
    """Rotary embedding (Su et al. 2021) on the first n_rot dims of the last axis.

    For pair i (i < n_rot/2):  theta_i = base^(-2i/n_rot) / freq_factor_i,
    angle = pos * freq_scale * theta_i  (freq_scale = 1/linear-scaling factor).
    YaRN (yarn_orig_ctx > 0, Peng et al. 2023, as ggml's rope_yarn with ext_factor 1): pair i
    mixes the interpolated and the trained angle, r_i = 1 - clamp((i - lo)/(hi - lo), 0, 1):
    angle = pos * theta_i * (freq_scale (1 - r_i) + r_i), and cos/sin get 1 + 0.1 ln(1/freq_scale).
    mscale (the file's attention factor) multiplies cos and sin.
      normal (llama):      pairs (x[2i], x[2i+1])
      neox (qwen2, gemma): pairs (x[i],  x[i + n_rot/2])
    Dims >= n_rot pass through unchanged."""
    half = n_rot // 2
    theta = base ** (-2.0 * np.arange(half, dtype=np.float64) / n_rot)
    if freq_factors is not None:
        theta = theta / freq_factors
    per_pair = np.full(half, freq_scale)
    if yarn_orig_ctx:
        lo, hi = yarn_corr_dims(n_rot, yarn_orig_ctx, base)
        r = 1.0 - np.clip((np.arange(half) - lo) / max(0.001, hi - lo), 0.0, 1.0)
        per_pair = freq_scale * (1.0 - r) + r
        mscale = mscale * (1.0 + 0.1 * math.log(1.0 / freq_scale))
    angle = np.asarray(pos, dtype=np.float64)[:, None] * (theta * per_pair)[None, :]  # [n, half]
    cos, sin = np.cos(angle) * mscale, np.sin(angle) * mscale
    out = x.copy()
    if neox:
        x1, x2 = x[..., :half], x[..., half:n_rot]
        out[..., :half] = x1 * cos - x2 * sin
        out[..., half:n_rot] = x1 * sin + x2 * cos
    else:
        x1, x2 = x[..., 0:n_rot:2], x[..., 1:n_rot:2]
        out[..., 0:n_rot:2] = x1 * cos - x2 * sin
        out[..., 1:n_rot:2] = x1 * sin + x2 * cos
    return out


def attention(q, k, v, q_pos, k_pos, scale, window=0):
    """Causal scaled dot-product attention with grouped KV heads.

    q [n_head, n, d], k [n_kv, T, d], v [n_kv, T, dv]; query head h reads kv head
    h // (n_head / n_kv) (contiguous groups, as ggml's broadcasting and HF's
    repeat_kv).  A key at position p0 is visible to a query at p1 iff p0 <= p1 and,
    for sliding-window layers, p1 - p0 < window (llama.cpp is_masked_swa)."""
    n_head, n, d = q.shape
    n_kv = k.shape[0]
    g = n_head // n_kv
    qg = q.reshape(n_kv, g, n, d)
    scores = np.matmul(qg, k[:, None].transpose(0, 1, 3, 2)) * scale       # [n_kv, g, n, T]
    dist = q_pos[:, None] - k_pos[None, :]                                  # [n, T]
    visible = dist >= 0
    if window:
        visible &= dist < window
    scores = np.where(visible, scores, -np.inf)
    p = softmax(scores, axis=-1)
    out = np.matmul(p, v[:, None])                                          # [n_kv, g, n, dv]
    return out.reshape(n_head, n, v.shape[-1])


class KVCache:
    """Per layer, the post-RoPE keys and the values of every position seen so far."""

    def __init__(self, n_layer):
        self.k = [None] * n_layer
        self.v = [None] * n_layer
        self.pos = np.zeros(0, dtype=np.int64)

    @property
    def n_tokens(self):
        return len(self.pos)

    def append(self, il, k, v):
        if self.k[il] is None:
            self.k[il], self.v[il] = k, v
        else:
            self.k[il] = np.concatenate([self.k[il], k], axis=1)
            self.v[il] = np.concatenate([self.v[il], v], axis=1)
        return self.k[il], self.v[il]


# ----------------------------------------------------------------------------
# the model
# ----------------------------------------------------------------------------

class Model:
    def __init__(self, path, verbose=False, n_ctx=0):
        t0 = time.time()
        self.path = path
        g = GGUFFile(path)
        self.cfg: Config = read_config(g)
        self.w = load_weights(g, self.cfg, n_ctx)
        self.load_s = time.time() - t0
        if verbose:
            print(self.cfg.describe(), file=sys.stderr)
            print(f"loaded in {self.load_s:.1f}s", file=sys.stderr)

    def new_cache(self):
        return KVCache(self.cfg.n_layer)

    def _proj(self, x, name):
        y = x @ self.w[name + ".weight"].T
        b = self.w.get(name + ".bias")
        return y if b is None else y + b

    def _attention_block(self, il, x, cache, pos):
        """x: normed input [n, n_embd] -> attention output [n, n_embd] (before residual)."""
        c, p = self.cfg, f"blk.{il}."
        n = x.shape[0]
        q = self._proj(x, p + "attn_q").reshape(n, c.n_head, c.head_dim).transpose(1, 0, 2)
        k = self._proj(x, p + "attn_k").reshape(n, c.n_head_kv, c.head_dim).transpose(1, 0, 2)
        v = self._proj(x, p + "attn_v").reshape(n, c.n_head_kv, c.head_dim_v).transpose(1, 0, 2)
        if c.qk_norm:  # per-head RMSNorm of q and k, before RoPE (gemma3, qwen3)
            q = rms_norm(q, self.w[p + "attn_q_norm.weight"], c.norm_eps)
            k = rms_norm(k, self.w[p + "attn_k_norm.weight"], c.norm_eps)
        ff = self.w.get("rope_freqs.weight")
        yarn = c.rope_orig_ctx if c.rope_yarn[il] else 0
        for_rope = dict(freq_factors=ff, neox=c.rope_neox, yarn_orig_ctx=yarn, mscale=c.rope_attn_factor)
        q = rope(q, pos, c.n_rot, c.rope_base[il], c.rope_freq_scale[il], **for_rope)
        k = rope(k, pos, c.n_rot, c.rope_base[il], c.rope_freq_scale[il], **for_rope)
        K, V = cache.append(il, k, v)
        k_pos = np.concatenate([cache.pos, pos])
        o = attention(q, K, V, pos, k_pos, c.attn_scale, c.sliding_window[il])  # [n_head, n, dv]
        o = o.transpose(1, 0, 2).reshape(n, c.n_head * c.head_dim_v)
        return self._proj(o, p + "attn_output")

    def _mlp(self, il, x):
        p = f"blk.{il}."
        act = gelu_tanh if self.cfg.arch == "gemma3" else silu   # GeGLU vs SwiGLU
        return self._proj(act(self._proj(x, p + "ffn_gate")) * self._proj(x, p + "ffn_up"), p + "ffn_down")

    def forward(self, tokens, cache):
        """Run new tokens (at positions cache.n_tokens, ...) through the model,
        appending their K/V to the cache.  Returns final-normed hidden states [n, n_embd]."""
        c, w = self.cfg, self.w
        tokens = np.asarray(tokens, dtype=np.int64)
        pos = cache.n_tokens + np.arange(len(tokens), dtype=np.int64)
        x = w["token_embd.weight"][tokens] * c.embd_scale
        for il in range(c.n_layer):
            p = f"blk.{il}."
            if c.arch == "gemma3":
                # Gemma 3: sandwich norms around attention and MLP
                a = self._attention_block(il, rms_norm(x, w[p + "attn_norm.weight"], c.norm_eps), cache, pos)
                x = x + rms_norm(a, w[p + "post_attention_norm.weight"], c.norm_eps)
                f = self._mlp(il, rms_norm(x, w[p + "ffn_norm.weight"], c.norm_eps))
                x = x + rms_norm(f, w[p + "post_ffw_norm.weight"], c.norm_eps)
            else:
                # llama / qwen2: pre-norm residual blocks
                x = x + self._attention_block(il, rms_norm(x, w[p + "attn_norm.weight"], c.norm_eps), cache, pos)
                x = x + self._mlp(il, rms_norm(x, w[p + "ffn_norm.weight"], c.norm_eps))
        cache.pos = np.concatenate([cache.pos, pos])
        return rms_norm(x, w["output_norm.weight"], c.norm_eps)

    def logits(self, h):
        """Hidden states [n, n_embd] -> logits [n, n_vocab] (float64)."""
        z = self._proj(h, "output")          # output.weight (or tied token_embd), optional output.bias
        cap = self.cfg.final_logit_softcap
        if cap:
            z = cap * np.tanh(z / cap)
        return z

    def all_logits(self, tokens, cache=None, batch=0):
        """Logits for every position; `batch` > 0 feeds the tokens in pieces through the cache."""
        cache = cache or self.new_cache()
        step = batch if batch > 0 else len(tokens)
        return np.concatenate([self.logits(self.forward(tokens[i:i + step], cache))
                               for i in range(0, len(tokens), step)])

    def greedy(self, prompt, n):
        """n greedy next tokens after prompt (no EOS stop).  Also returns, per step,
        the gap between the best and second-best logit (small gaps = fragile ties)."""
        cache = self.new_cache()
        z = self.logits(self.forward(prompt, cache)[-1:])[0]
        out, gaps = [], []
        for _ in range(n):
            top2 = np.argsort(z)[-2:]
            tok = int(np.argmax(z))
            out.append(tok)
            gaps.append(float(z[top2[1]] - z[top2[0]]))
            z = self.logits(self.forward([tok], cache))[0]
        return out, gaps


# ----------------------------------------------------------------------------
# perplexity, llama.cpp style (tools/perplexity/perplexity.cpp, perplexity())
# ----------------------------------------------------------------------------

def perplexity(model, tokens, n_ctx, n_chunks, add_bos, on_chunk=None):
    """Non-overlapping windows of n_ctx tokens; if the model adds BOS the first
    token of each window is replaced by BOS; only the second half of each window
    is scored: logits at positions first..n_ctx-2 predict tokens first+1..n_ctx-1,
    first = n_ctx // 2.  Returns (ppl, per-chunk mean nll list)."""
    first = n_ctx // 2
    n_chunks = min(n_chunks, len(tokens) // n_ctx)
    nll_sum, count, per_chunk = 0.0, 0, []
    for ci in range(n_chunks):
        window = list(tokens[ci * n_ctx:(ci + 1) * n_ctx])
        if add_bos:
            window[0] = model.cfg.bos_id
        h = model.forward(window, model.new_cache())
        targets = np.asarray(window[first + 1:])
        lp = []
        for r in range(first, n_ctx - 1, 64):                 # bound memory for big vocabularies
            rows = np.arange(r, min(r + 64, n_ctx - 1))
            ls = log_softmax(model.logits(h[rows]))
            lp.append(ls[np.arange(len(rows)), targets[rows - first]])
        nll = -np.concatenate(lp)
        nll_sum += nll.sum()
        count += len(nll)
        per_chunk.append(float(nll.mean()))
        if on_chunk:
            on_chunk(ci, math.exp(nll_sum / count), h)
    return math.exp(nll_sum / count), per_chunk


# ----------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------

def parse_ids(text):
    text = text.strip().strip("[]")
    return [int(t) for t in text.replace(",", " ").split()]


def write_json(path, obj):
    if path:
        with open(path, "w") as f:
            json.dump(obj, f, indent=1)
            f.write("\n")
    else:
        json.dump(obj, sys.stdout)
        sys.stdout.write("\n")


def cmd_logits(args):
    model = Model(args.model, verbose=args.verbose, n_ctx=args.n_ctx)
    tokens = parse_ids(args.tokens)
    t0 = time.time()
    z = model.all_logits(tokens, batch=args.batch)
    dt = time.time() - t0
    rows = list(range(len(tokens)))
    if args.every > 1:  # rows 0, K, 2K, ... and the last: long prompts without huge files
        rows = sorted(set(range(0, len(tokens), args.every)) | {len(tokens) - 1})
        z = z[rows]
    if args.out:
        z.astype("<f4").tofile(args.out)
        write_json(args.out + ".json", {
            "shape": [len(rows), model.cfg.n_vocab], "rows": rows, "dtype": "float32", "byteorder": "little",
            "model": os.path.basename(args.model), "model_bytes": os.path.getsize(args.model),
            "arch": model.cfg.arch, "tokens": tokens,
            "argmax": [int(i) for i in z.argmax(-1)],
            "logit_range": float(z.max() - z.min()),
            "oracle": "tools/oracle/reference.py (float64)",
        })
    else:
        for i, row in enumerate(z):
            top = np.argsort(row)[::-1][:5]
            print(f"pos {rows[i]:4d} tok {tokens[rows[i]]:7d} -> " + " ".join(f"{t}:{row[t]:.4f}" for t in top))
    print(f"logits: {len(tokens)} tokens in {dt:.2f}s (load {model.load_s:.1f}s)", file=sys.stderr)


def cmd_greedy(args):
    model = Model(args.model, verbose=args.verbose, n_ctx=args.n_ctx)
    prompt = parse_ids(args.tokens)
    t0 = time.time()
    out, gaps = model.greedy(prompt, args.n)
    dt = time.time() - t0
    write_json(args.out, {"model": os.path.basename(args.model), "prompt": prompt, "n": args.n,
                          "tokens": out, "top1_top2_gap": [round(g, 6) for g in gaps]})
    print(f"greedy: {args.n} tokens in {dt:.2f}s (load {model.load_s:.1f}s); "
          f"smallest top1-top2 gap {min(gaps):.4g}", file=sys.stderr)


def cmd_ppl(args):
    model = Model(args.model, verbose=args.verbose, n_ctx=args.n_ctx)
    with open(args.tokens_file) as f:
        tokens = parse_ids(f.read())
    add_bos = model.cfg.add_bos if args.add_bos is None else args.add_bos
    t0 = time.time()

    def progress(ci, ppl, _h):
        print(f"[{ci + 1}]{ppl:.4f},", end="", flush=True)

    ppl, per_chunk = perplexity(model, tokens, args.ctx, args.chunks, add_bos, progress)
    print()
    print(f"PPL = {ppl:.4f}  (ctx {args.ctx}, {len(per_chunk)} chunks, add_bos={add_bos}, "
          f"{time.time() - t0:.1f}s)")
    print("per-chunk ppl: " + " ".join(f"{math.exp(v):.4f}" for v in per_chunk))


def cmd_info(args):
    model = Model(args.model)
    print(model.cfg.describe())


def cmd_selftest(args):
    """Internal consistency: incremental decoding through the KV cache must give the
    same logits as one batched forward pass."""
    model = Model(args.model, verbose=True)
    rng = np.random.default_rng(0)
    tokens = [int(t) for t in rng.integers(0, model.cfg.n_vocab, args.n)]
    full = model.all_logits(tokens)
    ok = True
    for batch in (1, 7):
        inc = model.all_logits(tokens, batch=batch)
        err = np.abs(inc - full).max() / (full.max() - full.min())
        print(f"batch {batch}: max |diff| / logit range = {err:.3g}")
        ok &= err < 1e-9
    print("selftest", "passed" if ok else "FAILED")
    sys.exit(0 if ok else 1)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)

    def common(p):
        p.add_argument("--model", required=True, help="GGUF file")
        p.add_argument("-v", "--verbose", action="store_true")
        p.add_argument("--n-ctx", type=int, default=0,
                       help="context size the engine runs with (phi3: picks the long or short RoPE factors)")

    p = sub.add_parser("logits", help="logits of every position -> raw float32 [n_tokens, n_vocab] + FILE.json")
    common(p)
    p.add_argument("--tokens", required=True, help="comma-separated token ids")
    p.add_argument("--out", help="output file (default: print top-5 per position)")
    p.add_argument("--batch", type=int, default=0, help="feed tokens through the KV cache in pieces of this size")
    p.add_argument("--every", type=int, default=1, help="write only rows 0, K, 2K, ... and the last")
    p.set_defaults(fn=cmd_logits)

    p = sub.add_parser("greedy", help="n greedy next-token ids (json)")
    common(p)
    p.add_argument("--tokens", required=True, help="comma-separated prompt token ids")
    p.add_argument("-n", type=int, default=64)
    p.add_argument("--out", help="output json (default: stdout)")
    p.set_defaults(fn=cmd_greedy)

    p = sub.add_parser("ppl", help="llama.cpp-style perplexity over a token-id file")
    common(p)
    p.add_argument("--tokens-file", required=True, help="token ids: '[1, 2, 3]' or comma/space separated")
    p.add_argument("--ctx", type=int, default=512)
    p.add_argument("--chunks", type=int, default=4)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--add-bos", dest="add_bos", action="store_true", default=None)
    g.add_argument("--no-add-bos", dest="add_bos", action="store_false")
    p.set_defaults(fn=cmd_ppl)

    p = sub.add_parser("info", help="print the model config as the oracle reads it")
    common(p)
    p.set_defaults(fn=cmd_info)

    p = sub.add_parser("selftest", help="KV-cache incremental decode == batched forward")
    common(p)
    p.add_argument("-n", type=int, default=24)
    p.set_defaults(fn=cmd_selftest)

    args = ap.parse_args(argv)
    args.fn(args)


if __name__ == "__main__":
    main()
