#!/usr/bin/env python3
"""Checks of the oracle's building blocks and loader that need no model file.

    .venv/bin/python tools/oracle/test_reference.py      (pytest works too)

The oracle's agreement with llama.cpp on real checkpoints is in README.md; these
tests pin the conventions (rope orders, masks, shapes) so that a change that
breaks them is caught without a model.
"""

import os
import sys
import tempfile

import numpy as np
import gguf

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference as R  # noqa: E402
from gguf_model import GGUFFile  # noqa: E402

rng = np.random.default_rng(0)


def test_rope_normal_equals_neox_on_permuted_rows():
    # llama.cpp's llama converter permutes HF rows (halves order) into interleaved
    # order; normal RoPE on permuted vectors == NEOX RoPE on the originals.
    d, n = 16, 5
    x = rng.standard_normal((3, n, d))
    pos = np.arange(7, 7 + n)
    perm = np.arange(d).reshape(2, d // 2).T.reshape(d)      # interleaved <- halves
    a = R.rope(x[..., perm], pos, d, 10000.0, neox=False)
    b = R.rope(x, pos, d, 10000.0, neox=True)[..., perm]
    assert np.allclose(a, b, atol=1e-12)


def test_rope_scores_depend_on_relative_position_only():
    d = 32
    q, k = rng.standard_normal((1, 1, d)), rng.standard_normal((1, 1, d))
    for neox in (False, True):
        s = [float(R.rope(q, np.array([m]), d, 500.0, neox=neox)[0, 0]
                   @ R.rope(k, np.array([m - 3]), d, 500.0, neox=neox)[0, 0]) for m in (3, 10, 100)]
        assert np.allclose(s, s[0], atol=1e-10)


def test_rope_position_zero_and_partial_rotation():
    x = rng.standard_normal((2, 1, 8))
    assert np.allclose(R.rope(x, np.array([0]), 8, 1e4), x)
    y = R.rope(x, np.array([5]), 4, 1e4, neox=True)
    assert np.allclose(y[..., 4:], x[..., 4:]) and not np.allclose(y[..., :4], x[..., :4])


def test_rope_linear_scaling_and_freq_factors():
    x = rng.standard_normal((1, 1, 8))
    a = R.rope(x, np.array([8]), 8, 1e4, freq_scale=0.25)
    b = R.rope(x, np.array([2]), 8, 1e4)
    assert np.allclose(a, b)
    c = R.rope(x, np.array([6]), 8, 1e4, freq_factors=np.full(4, 3.0))
    assert np.allclose(c, b)


def test_rope_yarn_keeps_fast_pairs_and_interpolates_slow_ones():
    # Pairs below the fast correction dim keep their trained angle, pairs above the slow one
    # are interpolated by freq_scale; cos and sin carry 1 + 0.1 ln(factor) (and the file's
    # attention factor).
    d, base, orig = 64, 10000.0, 4096
    lo, hi = R.yarn_corr_dims(d, orig, base)
    assert 1 <= lo < hi < d / 2 - 1
    x = rng.standard_normal((1, d))
    pos = np.array([37])
    y = R.rope(x, pos, d, base, freq_scale=0.25, yarn_orig_ctx=orig, mscale=1.5)
    m = 1.5 * (1 + 0.1 * np.log(4.0))
    plain = R.rope(x, pos, d, base) * m
    interp = R.rope(x, pos, d, base, freq_scale=0.25) * m
    fast, slow = int(lo) - 1, int(hi) + 1
    assert np.allclose(y[0, 2 * fast:2 * fast + 2], plain[0, 2 * fast:2 * fast + 2])
    assert np.allclose(y[0, 2 * slow:2 * slow + 2], interp[0, 2 * slow:2 * slow + 2])


def naive_attention(q, k, v, q_pos, k_pos, scale, window):
    n_head, n, _ = q.shape
    g = n_head // k.shape[0]
    out = np.zeros((n_head, n, v.shape[-1]))
    for h in range(n_head):
        for i in range(n):
            js = [j for j in range(k.shape[1])
                  if k_pos[j] <= q_pos[i] and (not window or q_pos[i] - k_pos[j] < window)]
            s = np.array([q[h, i] @ k[h // g, j] * scale for j in js])
            p = np.exp(s - s.max())
            p /= p.sum()
            out[h, i] = sum(pj * v[h // g, j] for pj, j in zip(p, js))
    return out


def test_attention_matches_naive_gqa_causal_window():
    q = rng.standard_normal((6, 4, 8))
    k, v = rng.standard_normal((2, 9, 8)), rng.standard_normal((2, 9, 5))
    q_pos, k_pos = np.arange(5, 9), np.arange(9)
    for window in (0, 3):
        a = R.attention(q, k, v, q_pos, k_pos, 0.3, window)
        assert np.allclose(a, naive_attention(q, k, v, q_pos, k_pos, 0.3, window), atol=1e-12)


def test_activations():
    x = np.linspace(-30, 30, 101)
    assert np.allclose(R.silu(x), x / (1 + np.exp(-x)))
    assert abs(R.gelu_tanh(np.array([1.0]))[0] - 0.8411919906) < 1e-9


def write_tiny_gguf(path, arch, tie=True, n_vocab=50, n_embd=16, n_layer=2, n_head=4, n_head_kv=2, n_ff=24,
                    head_dim=None):
    hd = head_dim or n_embd // n_head
    w = gguf.GGUFWriter(path, arch)
    w.add_uint32(f"{arch}.block_count", n_layer)
    w.add_uint32(f"{arch}.embedding_length", n_embd)
    w.add_uint32(f"{arch}.feed_forward_length", n_ff)
    w.add_uint32(f"{arch}.attention.head_count", n_head)
    w.add_uint32(f"{arch}.attention.head_count_kv", n_head_kv)
    w.add_float32(f"{arch}.attention.layer_norm_rms_epsilon", 1e-6)
    w.add_float32(f"{arch}.rope.freq_base", 10000.0)
    if head_dim:
        w.add_uint32(f"{arch}.attention.key_length", hd)
        w.add_uint32(f"{arch}.attention.value_length", hd)
    if arch == "gemma3":
        w.add_uint32(f"{arch}.attention.sliding_window", 3)
    w.add_uint32("tokenizer.ggml.bos_token_id", 1)
    w.add_bool("tokenizer.ggml.add_bos_token", True)

    def t(name, *shape):  # numpy shape (rows, cols) = reversed ggml ne
        w.add_tensor(name, (rng.standard_normal(shape) * 0.3).astype(np.float32))

    t("token_embd.weight", n_vocab, n_embd)
    t("output_norm.weight", n_embd)
    if not tie:
        t("output.weight", n_vocab, n_embd)
    for il in range(n_layer):
        p = f"blk.{il}."
        t(p + "attn_norm.weight", n_embd)
        t(p + "attn_q.weight", n_head * hd, n_embd)
        t(p + "attn_k.weight", n_head_kv * hd, n_embd)
        t(p + "attn_v.weight", n_head_kv * hd, n_embd)
        t(p + "attn_output.weight", n_embd, n_head * hd)
        t(p + "ffn_norm.weight", n_embd)
        t(p + "ffn_gate.weight", n_ff, n_embd)
        t(p + "ffn_up.weight", n_ff, n_embd)
        t(p + "ffn_down.weight", n_embd, n_ff)
        if arch == "gemma3":
            t(p + "attn_q_norm.weight", hd)
            t(p + "attn_k_norm.weight", hd)
            t(p + "post_attention_norm.weight", n_embd)
            t(p + "post_ffw_norm.weight", n_embd)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_loader_shapes_and_forward_on_tiny_models():
    with tempfile.TemporaryDirectory() as tmp:
        for arch, tie, head_dim in (("llama", True, None), ("llama", False, None), ("gemma3", True, 8)):
            path = os.path.join(tmp, f"{arch}{tie}.gguf")
            write_tiny_gguf(path, arch, tie=tie, head_dim=head_dim)
            # numpy shape of a 2-D tensor is reversed ggml ne: (rows = ne1, cols = ne0)
            g = GGUFFile(path)
            assert list(g.tensors["blk.0.attn_output.weight"].shape) == [4 * (head_dim or 4), 16]
            assert g.tensor("blk.0.attn_output.weight").shape == (16, 4 * (head_dim or 4))
            m = R.Model(path)
            if arch == "gemma3":
                assert m.cfg.sliding_window == [3, 3] and m.cfg.rope_base == [10000.0, 10000.0]
                assert m.cfg.attn_scale == 1 / np.sqrt(8) and m.cfg.embd_scale == 4.0
            assert (m.w["output.weight"] is m.w["token_embd.weight"]) == tie
            toks = [1, 5, 9, 2, 33, 7, 7, 40]
            full = m.all_logits(toks)
            assert full.shape == (8, 50)
            for batch in (1, 3):
                assert np.allclose(m.all_logits(toks, batch=batch), full, atol=1e-12)
            out, gaps = m.greedy(toks[:3], 5)
            assert len(out) == 5 and out[0] == int(np.argmax(full[2]))


def test_gemma_sliding_window_pattern():
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "g.gguf")
        write_tiny_gguf(path, "gemma3", n_layer=13, head_dim=8)
        cfg = R.Model(path).cfg
        assert [il for il in range(13) if cfg.sliding_window[il] == 0] == [5, 11]
        assert cfg.rope_base[5] == 10000.0 and cfg.rope_base[0] == 10000.0  # file base is 1e4 here


if __name__ == "__main__":
    tests = [(k, v) for k, v in sorted(globals().items()) if k.startswith("test_") and callable(v)]
    failed = 0
    for name, fn in tests:
        try:
            fn()
            print(f"ok   {name}")
        except Exception as e:  # noqa: BLE001
            failed += 1
            print(f"FAIL {name}: {e!r}")
    print(f"{len(tests) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)
