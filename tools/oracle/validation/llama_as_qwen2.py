#!/usr/bin/env python3
"""Rewrite a llama-architecture GGUF as an equivalent "qwen2" GGUF, to exercise
the oracle's qwen2 path (NEOX RoPE + Q/K/V biases) without a qwen2 checkpoint.

llama.cpp's converter permutes the rows of Q and K of llama checkpoints so that
GGUF llama uses the "normal" RoPE (interleaved pairs 2i, 2i+1).  qwen2 uses NEOX
RoPE (pairs i, i+d/2) on unpermuted rows.  Undoing the permutation therefore gives
a qwen2 file that computes the same function.  With --bias-std > 0 random Q/K/V
biases are added (then the model differs, but oracle and another engine must still
agree on it).  All tensors are written as F32.

    llama_as_qwen2.py IN.gguf OUT.gguf [--bias-std 0.0]
"""

import argparse

import numpy as np
import gguf
from gguf.quants import dequantize


def unpermute(w, n_head):
    # inverse of convert_hf_to_gguf's LlamaModel.permute:
    # rows (head, j in {0,1}, i < d/2)  ->  rows (head, i, j)  was applied; undo it
    rows, n_in = w.shape
    half = rows // n_head // 2
    return w.reshape(n_head, half, 2, n_in).swapaxes(1, 2).reshape(rows, n_in)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--bias-std", type=float, default=0.0)
    a = ap.parse_args()
    r = gguf.GGUFReader(a.src, "r")
    assert r.fields["general.architecture"].contents() == "llama"
    n_head = r.fields["llama.attention.head_count"].contents()
    n_head_kv = r.fields["llama.attention.head_count_kv"].contents()
    w = gguf.GGUFWriter(a.dst, "qwen2")
    for f in r.fields.values():
        if f.name == "general.architecture" or f.name.startswith("GGUF."):
            continue
        vtype = f.types[0]
        sub = f.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        name = "qwen2." + f.name[len("llama."):] if f.name.startswith("llama.") else f.name
        val = int(gguf.LlamaFileType.ALL_F32) if f.name == "general.file_type" else f.contents()
        w.add_key_value(name, val, vtype, sub_type=sub)
    rng = np.random.default_rng(1234)
    for t in r.tensors:
        x = np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32).reshape(tuple(int(d) for d in reversed(t.shape)))
        if t.name.endswith("attn_q.weight"):
            x = unpermute(x, n_head)
        elif t.name.endswith("attn_k.weight"):
            x = unpermute(x, n_head_kv)
        w.add_tensor(t.name, np.ascontiguousarray(x))
        for kind in ("q", "k", "v"):
            if t.name.endswith(f"attn_{kind}.weight"):
                b = (rng.standard_normal(x.shape[0]) * a.bias_std).astype(np.float32)
                w.add_tensor(t.name.replace(".weight", ".bias"), b)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main()
