#!/usr/bin/env python3
"""Compare the oracle with the per-token log-probabilities another engine saved.

Reads the file written by `llama-perplexity ... --kl-divergence-base FILE`
(format from llama.cpp tools/perplexity/perplexity.cpp: "_logits_", int32 n_ctx,
int32 n_vocab, int32 n_chunk, int32 tokens[n_chunk*n_ctx], then for every chunk
and every scored position (first..n_ctx-2, first = n_ctx/2) a record of
nv = 2*((n_vocab+1)/2)+4 uint16: float32 scale, float32 min_log_prob, then
n_vocab uint16 q with log_prob = min_log_prob + scale*q for tokens whose logit is
within 16 of the maximum (q = 0 marks the rest)).  The token ids come from the
file, so no tokenizer is involved.  Nothing here needs llama.cpp to be installed:
only a file it wrote.

    compare_llamacpp.py --model M --base FILE [--chunks K]

Reports per chunk and overall: perplexity of both (over the targets whose
log-prob the file stores exactly; the engine prints its own full perplexity), top-1 agreement, mean and max
KL(base || oracle), and the largest |log p_oracle - log p_base| over the stored
(within-16-nats) entries.
"""

import argparse
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference import Model, log_softmax  # noqa: E402


def read_base(path):
    with open(path, "rb") as f:
        magic = f.read(8)
        assert magic == b"_logits_", magic
        n_ctx, n_vocab, n_chunk = np.frombuffer(f.read(12), dtype="<i4")
        tokens = np.frombuffer(f.read(4 * n_chunk * n_ctx), dtype="<i4").reshape(n_chunk, n_ctx)
        data_offset = f.tell()
    nv = 2 * ((n_vocab + 1) // 2) + 4
    first = n_ctx // 2
    n_scored = n_ctx - 1 - first
    recs = np.memmap(path, dtype="<u2", mode="r", offset=data_offset, shape=(n_chunk, n_scored, nv))
    return int(n_ctx), int(n_vocab), int(n_chunk), tokens, recs


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--base", required=True, help="llama-perplexity --kl-divergence-base file")
    ap.add_argument("--chunks", type=int, default=0)
    args = ap.parse_args()

    n_ctx, n_vocab, n_chunk, tokens, recs = read_base(args.base)
    model = Model(args.model)
    assert model.cfg.n_vocab == n_vocab, (model.cfg.n_vocab, n_vocab)
    first = n_ctx // 2
    n_chunk = min(n_chunk, args.chunks) if args.chunks else n_chunk

    tot = dict(nll=0.0, nll_base=0.0, n_ppl=0, n=0, same=0, kl=0.0, kl_max=0.0, dmax=0.0)
    for ci in range(n_chunk):
        window = tokens[ci].copy()
        if model.cfg.add_bos:
            window[0] = model.cfg.bos_id
        h = model.forward(window, model.new_cache())
        c = dict(nll=0.0, nll_base=0.0, n_ppl=0, n=0, same=0, kl=0.0, kl_max=0.0, dmax=0.0)
        for r0 in range(first, n_ctx - 1, 32):
            rows = np.arange(r0, min(r0 + 32, n_ctx - 1))
            lp = log_softmax(model.logits(h[rows]))                    # oracle log-probs
            rec = np.asarray(recs[ci, rows - first])
            hdr = rec[:, :4].copy().view("<f4")                         # [scale, min_log_prob]
            q = rec[:, 4:4 + n_vocab].astype(np.float64)
            lp_base = hdr[:, 1:2].astype(np.float64) + hdr[:, 0:1].astype(np.float64) * q
            stored = q > 0
            tgt = window[rows + 1]
            idx = np.arange(len(rows))
            # llama.cpp stores only log-probs within 16 nats of the top one; compare
            # perplexities on the targets it stored exactly (the rest are counted)
            ok = stored[idx, tgt]
            c["nll"] += -lp[idx, tgt][ok].sum()
            c["nll_base"] += -lp_base[idx, tgt][ok].sum()
            c["n_ppl"] += int(ok.sum())
            c["n"] += len(rows)
            c["same"] += int((lp.argmax(-1) == lp_base.argmax(-1)).sum())
            # KL(base || oracle) over the stored entries, as llama.cpp does (p_base > e^-16)
            pb = np.where(stored & (lp_base > -16), np.exp(lp_base), 0.0)
            kl = (pb * (lp_base - lp)).sum(-1)
            c["kl"] += kl.sum()
            c["kl_max"] = max(c["kl_max"], float(kl.max()))
            c["dmax"] = max(c["dmax"], float(np.abs(np.where(stored, lp - lp_base, 0)).max()))
        for k in ("nll", "nll_base", "n_ppl", "n", "same", "kl"):
            tot[k] += c[k]
        for k in ("kl_max", "dmax"):
            tot[k] = max(tot[k], c[k])
        print(f"chunk {ci + 1}: ppl oracle {math.exp(c['nll'] / c['n_ppl']):.4f} base {math.exp(c['nll_base'] / c['n_ppl']):.4f}"
              f" ({c['n'] - c['n_ppl']} clipped targets left out)"
              f"  top1 agree {c['same']}/{c['n']}  KL mean {c['kl'] / c['n']:.3g} max {c['kl_max']:.3g}"
              f"  max|dlogp| {c['dmax']:.3g}", flush=True)
    print(f"TOTAL ({n_chunk} chunks x {tot['n'] // n_chunk} tokens): ppl oracle {math.exp(tot['nll'] / tot['n_ppl']):.4f}"
          f" base {math.exp(tot['nll_base'] / tot['n_ppl']):.4f}"
          f" ({100 * (math.exp((tot['nll'] - tot['nll_base']) / tot['n_ppl']) - 1):+.3f}%,"
          f" {tot['n'] - tot['n_ppl']} clipped targets left out)"
          f"  top1 agree {tot['same']}/{tot['n']} ({100 * tot['same'] / tot['n']:.2f}%)"
          f"  KL mean {tot['kl'] / tot['n']:.3g} max {tot['kl_max']:.3g}  max|dlogp| {tot['dmax']:.3g}")


if __name__ == "__main__":
    main()
