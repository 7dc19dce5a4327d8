#!/usr/bin/env python3
"""Draws bench_matmul_ggml's blocks-against-tiles comparison as a grouped bar chart (SVG).

    build/bin/bench_matmul_ggml --benchmark_filter='rows:16384/cols:2048/tokens:1/threads:1/' \\
        --benchmark_format=json > out/matmul_types.json
    .venv/bin/python bench/matmul_types_chart.py out/matmul_types.json docs/figures/matmul_types.svg

One group per GGUF type, two bars: the file's blocks (form:0) and the repacker's tiles
(form:1), wall time of one matmul in ms, with each bar's value and the speed-up over the
group. The JSON must hold one shape, token count and thread count (the filter above).
"""
import json
import re
import sys


def load(path):
    """{type name: {form: ms}} in the order the benchmarks ran, and the run's shape."""
    with open(path) as f:
        runs = json.load(f)["benchmarks"]
    out, shape = {}, None
    for r in runs:
        if r.get("run_type") == "aggregate":
            continue
        m = re.search(r"rows:(\d+)/cols:(\d+)/tokens:(\d+)/threads:(\d+)/form:(\d)", r["name"])
        if not m:
            continue
        s = m.groups()[:4]
        if shape not in (None, s):
            sys.exit(f"{path} holds more than one shape, token count or thread count: filter one")
        shape = s
        unit = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}[r["time_unit"]]
        out.setdefault(r["label"].split(" as ")[0], {})[int(m.group(5))] = r["real_time"] * unit
    if not out:
        sys.exit(f"no bench_matmul_ggml runs in {path}")
    return out, shape


def svg(data, shape):
    types = list(data)
    w, h, ml, mr, mt, mb = 900, 420, 70, 20, 60, 50
    ymax = max(max(v.values()) for v in data.values()) * 1.15
    gw = (w - ml - mr) / len(types)
    bw = gw * 0.36
    Y = lambda y: h - mb - y / ymax * (h - mt - mb)  # noqa: E731
    rows, cols, tokens, threads = shape
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" '
           f'font-size="12">', f'<rect width="{w}" height="{h}" fill="white"/>',
           f'<text x="{w / 2}" y="20" text-anchor="middle" font-size="14">One matmul {rows} x {cols}, '
           f'{tokens} token(s), {threads} thread(s): the file\'s blocks against the repacker\'s tiles</text>']
    step = next(s for s in (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200) if ymax / s <= 8)
    y = 0.0
    while y <= ymax:
        out.append(f'<line x1="{ml}" x2="{w - mr}" y1="{Y(y):.1f}" y2="{Y(y):.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{ml - 6}" y="{Y(y) + 4:.1f}" text-anchor="end">{y:g}</text>')
        y += step
    colors = {0: ("blocks (kGgml)", "#999999"), 1: ("tiles", "#1f77b4")}
    for i, t in enumerate(types):
        x0 = ml + i * gw + (gw - 2 * bw) / 2
        for j, form in enumerate((0, 1)):
            v = data[t].get(form)
            if v is None:
                continue
            x = x0 + j * bw
            out.append(f'<rect x="{x:.1f}" y="{Y(v):.1f}" width="{bw:.1f}" height="{Y(0) - Y(v):.1f}" '
                       f'fill="{colors[form][1]}"/>')
            out.append(f'<text x="{x + bw / 2:.1f}" y="{Y(v) - 4:.1f}" text-anchor="middle" font-size="10">'
                       f'{v:.2f}</text>')
        if 0 in data[t] and 1 in data[t]:
            out.append(f'<text x="{ml + (i + 0.5) * gw:.1f}" y="{mt - 8}" text-anchor="middle" font-size="11" '
                       f'fill="#1f77b4">{data[t][0] / data[t][1]:.1f}x</text>')
        out.append(f'<text x="{ml + (i + 0.5) * gw:.1f}" y="{h - mb + 16}" text-anchor="middle">{t}</text>')
    out.append(f'<line x1="{ml}" x2="{w - mr}" y1="{h - mb}" y2="{h - mb}" stroke="black"/>')
    out.append(f'<line x1="{ml}" x2="{ml}" y1="{mt}" y2="{h - mb}" stroke="black"/>')
    out.append(f'<text x="16" y="{(mt + h - mb) / 2}" text-anchor="middle" '
               f'transform="rotate(-90 16 {(mt + h - mb) / 2})">ms per matmul (lower is better)</text>')
    for j, form in enumerate((0, 1)):
        out.append(f'<rect x="{ml + 10 + 150 * j}" y="{h - 22}" width="12" height="12" fill="{colors[form][1]}"/>')
        out.append(f'<text x="{ml + 28 + 150 * j}" y="{h - 12}">{colors[form][0]}</text>')
    out.append(f'<text x="{w - mr}" y="{h - 12}" text-anchor="end" font-size="11">above each group: '
               f'blocks / tiles</text>')
    out.append("</svg>\n")
    return "\n".join(out)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    data, shape = load(sys.argv[1])
    with open(sys.argv[2], "w") as f:
        f.write(svg(data, shape))
    print(f"wrote {sys.argv[2]} ({len(data)} types)")


if __name__ == "__main__":
    main()
