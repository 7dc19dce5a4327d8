#!/usr/bin/env python3
"""slimkv against llama.cpp on the same model file, in one run.

    .venv/bin/python bench/compare_llamacpp.py --llama-bin DIR [--model M] [--kv fp16 fp32]
        [--tests pp512 tg128 tg128@d2048] [--reps 3] [--rounds 2] [--ppl-ctx 512 2048]
        [--serve-requests 6] [--slimkv-base OTHER_SLIMKV] [--out FILE.md]

DIR holds llama.cpp's llama-bench (and llama-perplexity for --ppl-ctx), built outside this
repository from the llama.cpp source inside the PyPI source package of llama-cpp-python
(see bench/README.md). Both programs run on 2 threads, on the same GGUF, with the same KV
type (llama.cpp's -ctk/-ctv). The two are interleaved test by test and round by round, so
the machine's drift hits both alike; the table reports the median of the rounds and the
ratio slimkv / llama.cpp of those medians. With --ppl-ctx, perplexity of the eval text at each
context is measured by both (llama.cpp's method; slimkv ppl copies it). With --serve-requests,
each round also starts `slimkv serve` and then `llama-server -np 1` and sends that many
streamed completions from one client (bench/loadgen throughput --clients 1: a ~70-token
prompt, 64 tokens, greedy), for one user's TTFT and tokens/s.

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
# slimkv's preset -> llama.cpp's cache type of the same bytes (int4: 4-bit codes and an fp16
# scale per 32, as q4_0).
KV_TO_LLAMA = {"fp16": "f16", "fp32": "f32", "q8_0": "q8_0", "q4_0": "q4_0", "bf16": "bf16", "int4": "q4_0",
               "int8": "q8_0"}


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


def llama_bench(dir_, model, kv, test, reps, fa):
    m = re.fullmatch(r"(pp|tg)(\d+)(?:@d(\d+))?", test)
    kind, n, depth = m.group(1), m.group(2), m.group(3) or "0"
    cmd = [os.path.join(dir_, "llama-bench"), "-m", model, "-t", "2", "-r", str(reps), "-o", "json",
           "-d", depth, "-ctk", KV_TO_LLAMA[kv], "-ctv", KV_TO_LLAMA[kv]]
    cmd += ["-p", n, "-n", "0"] if kind == "pp" else ["-p", "0", "-n", n]
    # Quantized V needs flash attention in llama.cpp; --llama-fa chooses for the others.
    cmd += ["-fa", "on" if kv not in ("fp16", "fp32", "bf16") else fa]
    rows = json.loads(run(cmd, stdout_only=True))
    return float(rows[0]["avg_ts"])


def loadgen_one_client(loadgen, port, label, requests):
    """(TTFT p50 s, tokens/s, decode tokens/s) of one client's streamed completions."""
    out = run([loadgen, "--url", f"http://127.0.0.1:{port}", "--label", label, "throughput", "--clients", "1",
               "--requests-per-client", str(requests), "--max-tokens", "64"], stdout_only=True)
    row = [c.strip() for c in out.strip().splitlines()[-1].strip("|").split("|")]
    # | server | clients | requests | errors | gen tokens | wall s | tokens/s | per client | decode tok/s | TTFT p50 |
    if row[3] != "0":
        sys.exit(f"{label}: {row[3]} requests failed:\n{out}")
    return float(row[9]), float(row[6]), float(row[8])


def serve_round(a, kv, requests):
    """One round of the one-client serving test: slimkv serve, then llama-server."""
    import socket
    import time
    import urllib.request
    loadgen = os.path.join(os.path.dirname(a.slimkv), "loadgen")
    results = []
    for which in ("slimkv", "llama"):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if which == "slimkv":
            cmd = [a.slimkv, "serve", "-m", a.model, "-t", "2", "--kv", kv, "--port", str(port), "-c", "1024"]
        else:
            cmd = [os.path.join(a.llama_bin, "llama-server"), "-m", a.model, "-t", "2", "-np", "1", "-c", "1024",
                   "--host", "127.0.0.1", "--port", str(port), "-ctk", KV_TO_LLAMA[kv], "-ctv", KV_TO_LLAMA[kv],
                   "-fa", a.llama_fa, "--no-webui"]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(600):
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
                    break
                except Exception:
                    time.sleep(0.1)
            results.append(loadgen_one_client(loadgen, port, which, requests))
        finally:
            proc.terminate()
            proc.wait()
    return results


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
    ap.add_argument("--slimkv-base", help="a second slimkv binary (e.g. main's build) measured in the same rounds")
    ap.add_argument("--kv", nargs="+", default=["fp16", "fp32"])
    ap.add_argument("--tests", nargs="*", default=["pp512", "tg128", "tg128@d2048"])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--ppl-ctx", nargs="*", type=int, default=[])
    ap.add_argument("--text", default=os.path.join(ROOT, "data", "pg_essays.txt"))
    ap.add_argument("--llama-fa", default="auto", choices=["auto", "on", "off"],
                    help="llama.cpp's flash attention for f16/f32 KV (its own default: auto)")
    ap.add_argument("--serve-requests", type=int, default=0, help="also the one-client serving test, per round")
    ap.add_argument("--out")
    a = ap.parse_args()
    lines = [f"Measured {date.today()} on this machine (`nproc` = {os.cpu_count()}, load average at the start "
             f"{os.getloadavg()[0]:.1f}), 2 threads each, model `{os.path.basename(a.model)}`, median of {a.rounds} "
             f"interleaved rounds of {a.reps} repetitions."]
    base = ["slimkv (base)"] if a.slimkv_base else []
    if a.tests:
        lines += ["", "| KV | test | slimkv tokens/s | " + "".join(f"{b} tokens/s | " for b in base) +
                  "llama.cpp tokens/s | slimkv / llama.cpp |" + "".join(f" {b} / llama.cpp |" for b in base),
                  "|---|---|---|---|---|" + "---|---|" * len(base)]
    for kv in a.kv:
        for test in a.tests:
            ours, olds, theirs = [], [], []
            for _ in range(a.rounds):
                ours.append(slimkv_bench(a.slimkv, a.model, kv, test, a.reps))
                if base:
                    olds.append(slimkv_bench(a.slimkv_base, a.model, kv, test, a.reps))
                theirs.append(llama_bench(a.llama_bin, a.model, kv, test, a.reps, a.llama_fa))
                print(f"{kv} {test}: slimkv {ours[-1]:.1f}, " + (f"base {olds[-1]:.1f}, " if base else "") +
                      f"llama.cpp {theirs[-1]:.1f}", file=sys.stderr)
            o, t = statistics.median(ours), statistics.median(theirs)
            b = [statistics.median(olds)] if base else []
            lines.append(f"| {kv} | {test} | {o:.1f} | " + "".join(f"{x:.1f} | " for x in b) + f"{t:.1f} | {o / t:.2f}x |" +
                         "".join(f" {x / t:.2f}x |" for x in b))
    if a.serve_requests:
        lines += ["", f"One client, streamed /v1/completions (~70-token prompt, 64 tokens, greedy), "
                  f"{a.serve_requests} requests per round, llama-server -np 1 -fa {a.llama_fa}:", "",
                  "| KV | figure | slimkv serve | llama-server | slimkv / llama-server |", "|---|---|---|---|---|"]
        for kv in a.kv:
            rounds = [serve_round(a, kv, a.serve_requests) for _ in range(a.rounds)]
            for r in rounds:
                print(f"{kv} serve: slimkv TTFT {r[0][0]:.3f} s {r[0][1]:.1f} t/s, "
                      f"llama-server TTFT {r[1][0]:.3f} s {r[1][1]:.1f} t/s", file=sys.stderr)
            for i, name in enumerate(["TTFT p50 (s)", "tokens/s", "decode tokens/s"]):
                o = statistics.median(r[0][i] for r in rounds)
                t = statistics.median(r[1][i] for r in rounds)
                lines.append(f"| {kv} | {name} | {o:.3f} | {t:.3f} | {o / t:.2f}x |" if i == 0 else
                             f"| {kv} | {name} | {o:.1f} | {t:.1f} | {o / t:.2f}x |")
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
