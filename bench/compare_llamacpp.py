#!/usr/bin/env python3
"""slimkv against llama.cpp on the same model file, in one run.

    .venv/bin/python bench/compare_llamacpp.py --llama-bin DIR [--model M] [--kv fp16 fp32]
        [--tests pp512 tg128 tg128@d2048] [--reps 3] [--rounds 2] [--ppl-ctx 512 2048] [--out FILE.md]

DIR holds llama.cpp's llama-bench (and llama-perplexity for --ppl-ctx), built outside this
repository from the llama.cpp source inside the PyPI source package of llama-cpp-python
(see bench/README.md). Both programs run on 2 threads, on the same GGUF, with the same KV
type (llama.cpp's -ctk/-ctv). The two are interleaved test by test and round by round, so
the machine's drift hits both alike; the table reports the median of the rounds and the
ratio slimkv / llama.cpp of those medians. With --ppl-ctx, perplexity of the eval text at each
context is measured by both (llama.cpp's method; slimkv ppl copies it).

Nothing here is needed to build or test slimkv; llama.cpp is never part of the repository.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
from datetime import date

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KV_TO_LLAMA = {"fp16": "f16", "fp32": "f32", "q8_0": "q8_0", "q4_0": "q4_0", "bf16": "bf16"}


def run(cmd, stdout_only=False):
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{p.stdout}\n{p.stderr}")
    return p.stdout if stdout_only else p.stdout + p.stderr


def slimkv_bench(bin_, model, kv, test, reps):
    out = run([bin_, "bench", "-m", model, "--kv", kv, "--tests", test, "-r", str(reps), "--no-bandwidth"])
    m = re.search(r"\|\s*" + re.escape(test) + r"\s*\|\s*([0-9.]+)", out)
    if not m:
        sys.exit(f"cannot read slimkv bench output:\n{out}")
    return float(m.group(1))


def llama_bench(dir_, model, kv, test, reps):
    m = re.fullmatch(r"(pp|tg)(\d+)(?:@d(\d+))?", test)
    kind, n, depth = m.group(1), m.group(2), m.group(3) or "0"
    cmd = [os.path.join(dir_, "llama-bench"), "-m", model, "-t", "2", "-r", str(reps), "-o", "json",
           "-d", depth, "-ctk", KV_TO_LLAMA[kv], "-ctv", KV_TO_LLAMA[kv]]
    cmd += ["-p", n, "-n", "0"] if kind == "pp" else ["-p", "0", "-n", n]
    if kv not in ("fp16", "fp32", "bf16"):
        cmd += ["-fa", "1"]  # quantized V needs flash attention in llama.cpp
    rows = json.loads(run(cmd, stdout_only=True))
    return float(rows[0]["avg_ts"])


def ppl(dir_, bin_, model, text, ctx):
    ours = run([bin_, "ppl", "-m", model, "-f", text, "-c", str(ctx), "--kl-base", "none"])
    theirs = run([os.path.join(dir_, "llama-perplexity"), "-m", model, "-f", text, "-c", str(ctx), "-t", "2"])
    a = float(re.search(r"PPL = ([0-9.]+)", ours).group(1))
    b = float(re.search(r"Final estimate: PPL = ([0-9.]+)", theirs).group(1))
    return a, b


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--llama-bin", required=True)
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--slimkv", default=os.path.join(ROOT, "build", "bin", "slimkv"))
    ap.add_argument("--kv", nargs="+", default=["fp16", "fp32"])
    ap.add_argument("--tests", nargs="+", default=["pp512", "tg128", "tg128@d2048"])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--ppl-ctx", nargs="*", type=int, default=[])
    ap.add_argument("--text", default=os.path.join(ROOT, "data", "pg_essays.txt"))
    ap.add_argument("--out")
    a = ap.parse_args()
    lines = [f"Measured {date.today()} on this machine (`nproc` = {os.cpu_count()}), 2 threads each, "
             f"model `{os.path.basename(a.model)}`, median of {a.rounds} interleaved rounds of {a.reps} repetitions.",
             "", "| KV | test | slimkv tokens/s | llama.cpp tokens/s | slimkv / llama.cpp |", "|---|---|---|---|---|"]
    for kv in a.kv:
        for test in a.tests:
            ours, theirs = [], []
            for _ in range(a.rounds):
                ours.append(slimkv_bench(a.slimkv, a.model, kv, test, a.reps))
                theirs.append(llama_bench(a.llama_bin, a.model, kv, test, a.reps))
                print(f"{kv} {test}: slimkv {ours[-1]:.1f}, llama.cpp {theirs[-1]:.1f}", file=sys.stderr)
            o, t = statistics.median(ours), statistics.median(theirs)
            lines.append(f"| {kv} | {test} | {o:.1f} | {t:.1f} | {o / t:.2f}x |")
    if a.ppl_ctx:
        lines += ["", "| context | slimkv PPL | llama.cpp PPL | difference |", "|---|---|---|---|"]
        for ctx in a.ppl_ctx:
            o, t = ppl(a.llama_bin, a.slimkv, a.model, a.text, ctx)
            lines.append(f"| {ctx} | {o:.4f} | {t:.4f} | {100 * (o / t - 1):+.2f}% |")
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
