#!/usr/bin/env python3
"""Needle accuracy of eviction policies with and without `:recall`, as a table and a grouped bar chart.

Reads `slimkv needle --json` files named SET_POLICY_FRACTION.json (POLICY with ':' written '_',
e.g. int4_h2o_recall_0.5.json) and SET_full.json from one or more directories; SET is a KV preset
or any label (gemma_int4). Prints a markdown table (base policy, with :recall, the fetch-ahead hit
rate) and writes an SVG with one group of bars per policy and budget.

  python3 bench/recall_chart.py DIR... --sets fp16,int4 --svg docs/figures/recall_needle.svg
"""
import argparse
import json
import os


def load(dirs, name):
    for d in dirs:
        p = os.path.join(d, name + ".json")
        if os.path.exists(p):
            with open(p) as f:
                return json.load(f)
    return None


def pct(j):
    return f"{100 * j['accuracy']:.0f} %" if j else "–"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dirs", nargs="+")
    ap.add_argument("--sets", default="fp16,int4", help="comma-separated SET labels, in order")
    ap.add_argument("--policies", default="h2o,snapkv,expected")
    ap.add_argument("--fractions", default="0.5,0.25")
    ap.add_argument("--svg", help="write the chart here")
    ap.add_argument("--title", default="Needle accuracy at 4K, 6 depths: policy alone vs with :recall")
    args = ap.parse_args()
    sets, policies, fractions = args.sets.split(","), args.policies.split(","), args.fractions.split(",")

    print("| set | policy | budget | full cache | policy alone | with :recall | fetch-ahead hit rate | blocks fetched / offloaded |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    groups = []  # (label, full, base, recall)
    for s in sets:
        full = load(args.dirs, f"{s}_full")
        for f in fractions:
            for p in policies:
                base = load(args.dirs, f"{s}_{p}_{f}")
                rec = load(args.dirs, f"{s}_{p}_recall_{f}")
                r = rec["recall"] if rec else None
                hit = f"{100 * r['fetch_hit_rate']:.0f} %" if r else "–"
                moved = f"{r['fetched']} / {r['offloaded']}" if r else "–"
                print(f"| {s} | {p} | {100 * float(f):.0f} % | {pct(full)} | {pct(base)} | {pct(rec)} | {hit} | {moved} |")
                groups.append((f"{s} {p} {100 * float(f):.0f}%", full, base, rec))
    if not args.svg:
        return
    w, h, ml, mr, mt, mb = max(720, 60 * len(groups) + 120), 420, 120, 20, 50, 130
    gw = (w - ml - mr) / len(groups)
    Y = lambda y: h - mb - y * (h - mt - mb)  # noqa: E731
    series = [("policy", 2, "#1f77b4"), ("with :recall", 3, "#d62728")]
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" '
           f'font-size="12">', f'<rect width="{w}" height="{h}" fill="white"/>',
           f'<text x="{w / 2}" y="20" text-anchor="middle" font-size="14">{args.title}</text>']
    for i in range(6):
        y = i / 5
        out.append(f'<line x1="{ml}" x2="{w - mr}" y1="{Y(y):.1f}" y2="{Y(y):.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{ml - 6}" y="{Y(y) + 4:.1f}" text-anchor="end">{100 * y:.0f}%</text>')
    for g, (label, full, *cells) in enumerate(groups):
        x0 = ml + g * gw
        bw = gw * 0.35
        for k, (_, idx, color) in enumerate(series):
            j = cells[idx - 2]
            if j is None:
                continue
            a = j["accuracy"]
            out.append(f'<rect x="{x0 + gw * 0.12 + k * bw:.1f}" y="{Y(a):.1f}" width="{bw:.1f}" '
                       f'height="{Y(0) - Y(a):.1f}" fill="{color}"/>')
        if full:
            yf = Y(full["accuracy"])
            out.append(f'<line x1="{x0 + gw * 0.05:.1f}" x2="{x0 + gw * 0.95:.1f}" y1="{yf:.1f}" y2="{yf:.1f}" '
                       f'stroke="black" stroke-dasharray="4 3"/>')
        cx = x0 + gw / 2
        out.append(f'<text x="{cx:.1f}" y="{h - mb + 12}" text-anchor="end" '
                   f'transform="rotate(-40 {cx:.1f} {h - mb + 12})">{label}</text>')
    out.append(f'<line x1="{ml}" x2="{w - mr}" y1="{Y(0)}" y2="{Y(0)}" stroke="black"/>')
    legend = series + [("full cache", None, "black")]
    for k, (label, _, color) in enumerate(legend):
        lx = ml + 10 + 150 * k
        if label == "full cache":
            out.append(f'<line x1="{lx}" x2="{lx + 14}" y1="{mt - 12}" y2="{mt - 12}" stroke="black" '
                       f'stroke-dasharray="4 3"/>')
        else:
            out.append(f'<rect x="{lx}" y="{mt - 18}" width="12" height="12" fill="{color}"/>')
        out.append(f'<text x="{lx + 18}" y="{mt - 8}">{label}</text>')
    out.append("</svg>\n")
    with open(args.svg, "w") as f:
        f.write("\n".join(out))


if __name__ == "__main__":
    main()
