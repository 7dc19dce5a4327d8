#!/usr/bin/env python3
"""Decode speed per architecture, slimkv against llama.cpp on the same random-weight GGUF,
in interleaved rounds (one slimkv run, one llama-bench run per architecture per round), with
the KV bytes per token `slimkv info` reports.

    bench/bench_archs.py --models DIR --llama-bin DIR [--archs llama3,qwen2,...] [--rounds 3]
                         [--tokens 32]

DIR holds ARCH.gguf files written by `tools/oracle/make_model.py ARCH DIR/ARCH.gguf --shape 1b`
(never committed). Prints a Markdown table: median tokens/s of each engine, the ratio, the
load average before and after, and the weight types of each file.
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare_llamacpp import llama_bench, slimkv_bench  # noqa: E402  (2 threads each, fp16 KV)


def info(binary, model):
    out = subprocess.run([binary, "info", model], capture_output=True, text=True, check=True).stdout
    arch = re.search(r"architecture:\s+(\S+),", out).group(1)
    kv = {}
    for preset in ("fp16", "int4", "tq3"):
        m = re.search(rf"^\s+{preset}\s+[0-9.]+\s+[0-9.]+\s+([0-9.]+)", out, re.M)
        if m:
            kv[preset] = float(m.group(1))
    window = re.search(r"layers:\s+(.*)", out)
    types = re.findall(r"^\s+([A-Z0-9_]+)\s+\d+ tensors|^\s+([A-Z0-9_]+)\s+(\d+)\s+\S+ \S+\s+[0-9.]+\s+[0-9.]+$", out, re.M)
    type_names = sorted({a or b for a, b, _ in types if (a or b) != "F32"})
    return arch, kv, window.group(1) if window else "", type_names


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", required=True)
    ap.add_argument("--llama-bin", required=True)
    ap.add_argument("--slimkv", default="build/bin/slimkv")
    ap.add_argument("--archs", default="llama3,qwen2,qwen3,mistral,phi3")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=32)
    args = ap.parse_args()
    test = f"tg{args.tokens}"
    archs = args.archs.split(",")
    files = {a: os.path.join(args.models, f"{a}.gguf") for a in archs}
    load0 = os.getloadavg()
    ours = {a: [] for a in archs}
    theirs = {a: [] for a in archs}
    for r in range(args.rounds):
        for a in archs:
            ours[a].append(slimkv_bench(args.slimkv, files[a], "fp16", test, 1))
            theirs[a].append(llama_bench(args.llama_bin, files[a], "fp16", test, 1, "on"))
            print(f"round {r + 1} {a}: slimkv {ours[a][-1]:.2f}, llama.cpp {theirs[a][-1]:.2f} tokens/s", file=sys.stderr)
    load1 = os.getloadavg()
    print(f"{time.strftime('%Y-%m-%d %H:%M')}, 2 threads, fp16 KV, {test}, {args.rounds} interleaved rounds, "
          f"load average {load0[0]:.1f} before, {load1[0]:.1f} after\n")
    print("| architecture (file) | weights | KV bytes/token fp16 / int4 / tq3 | slimkv tg t/s | llama.cpp tg t/s | ratio |")
    print("|---|---|---|---:|---:|---:|")
    for a in archs:
        arch, kv, window, types = info(args.slimkv, files[a])
        so, th = statistics.median(ours[a]), statistics.median(theirs[a])
        kvs = " / ".join(f"{kv[p]:.0f}" for p in ("fp16", "int4", "tq3") if p in kv)
        note = f" ({window})" if window else ""
        print(f"| {a} ({arch}){note} | {', '.join(types)} | {kvs} | {so:.2f} | {th:.2f} | {so / th:.2f} |")


if __name__ == "__main__":
    main()
