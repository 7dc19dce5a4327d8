"""The report page in a real browser: headless Chromium loads report.html from disk (no
server, no network) and the DOM it ends with must show

  - no script error: nothing on the console at error level, nothing in #js-errors, and the
    page's own script ran to its end (body data-ready="yes");
  - every chart the run has data for, each an <svg> with drawn marks (bars, lines, points or
    cells) and text;
  - every number linked to its cell's command, and equal to that cell's JSON: the value at
    data-pointer of cells/ID.json's result, times data-scale, printed with data-digits.

Usage: report_page.py REPORT_DIR EXPECTED_CHARTS (comma-separated chart ids)
Run by tests/cli/report_test.sh; needs Debian's `chromium` (tools/setup.sh installs it).
"""
import html.parser
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile


class Dom(html.parser.HTMLParser):
    """The elements the checks need, from Chromium's serialized DOM."""

    def __init__(self):
        super().__init__()
        self.stack = []
        self.numbers = []   # (attrs, text)
        self.charts = {}    # id -> {"marks": n, "texts": n, "svgs": n}
        self.errors_text = ""
        self.ready = None
        self.commands = set()
        self._num = None
        self._chart = None
        self._in_errors = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "body":
            self.ready = a.get("data-ready")
        if tag == "a" and "num" in (a.get("class") or "").split():
            self._num = [a, ""]
        if tag == "figure" and a.get("data-chart"):
            self._chart = a["data-chart"]
            self.charts[self._chart] = {"marks": 0, "texts": 0, "svgs": 0}
        if self._chart:
            c = self.charts[self._chart]
            if tag == "svg":
                c["svgs"] += 1
            elif tag in ("rect", "path", "circle") and a.get("fill", "") != "white":
                c["marks"] += 1
            elif tag == "text":
                c["texts"] += 1
        if tag == "pre" and a.get("id") == "js-errors":
            self._in_errors = True
        if tag == "li" and (a.get("id") or "").startswith("cmd-"):
            self.commands.add(a["id"][4:])
        self.stack.append(tag)

    def handle_endtag(self, tag):
        if tag == "a" and self._num is not None:
            self.numbers.append(tuple(self._num))
            self._num = None
        if tag == "figure":
            self._chart = None
        if tag == "pre":
            self._in_errors = False

    def handle_data(self, data):
        if self._num is not None:
            self._num[1] += data
        if self._in_errors:
            self.errors_text += data


def main():
    report_dir, expected = sys.argv[1], [c for c in sys.argv[2].split(",") if c]
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if not browser:
        print("FAIL: chromium not found (tools/setup.sh installs the Debian package)")
        sys.exit(1)
    page = os.path.abspath(os.path.join(report_dir, "report.html"))
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp}/p",
                              "--enable-logging=stderr", "--v=0", "--virtual-time-budget=3000", "--dump-dom",
                              "file://" + page], capture_output=True, text=True, timeout=180)
    if not out.stdout.strip():
        print("FAIL: chromium printed no DOM:", out.stderr[-2000:])
        sys.exit(1)
    # Console messages arrive on stderr as ...:CONSOLE(line)] "message", source: ...; any
    # uncaught error or console.error is a failure.
    for line in out.stderr.splitlines():
        if "CONSOLE" in line and re.search(r"Uncaught|Error|error", line):
            failures.append("console: " + line.strip())
    dom = Dom()
    dom.feed(out.stdout)
    if dom.errors_text.strip():
        failures.append("script errors on the page: " + dom.errors_text.strip())
    if dom.ready != "yes":
        failures.append(f"the page's script did not finish (body data-ready={dom.ready!r})")
    for chart in expected:
        c = dom.charts.get(chart)
        if c is None:
            failures.append(f"chart {chart} missing")
        elif c["svgs"] < 1 or c["marks"] < 2 or c["texts"] < 3:
            failures.append(f"chart {chart} is empty: {c}")
    cells = {}
    checked = 0
    for attrs, text in dom.numbers:
        cid = attrs.get("data-cell")
        if cid not in cells:
            with open(os.path.join(report_dir, "cells", cid + ".json")) as f:
                cells[cid] = json.load(f)
        cell = cells[cid]
        if attrs.get("href") != "#cmd-" + cid or cid not in dom.commands:
            failures.append(f"number {text!r} does not link to its command ({attrs.get('href')})")
        if attrs.get("title") != cell["command"]:
            failures.append(f"number {text!r}: title {attrs.get('title')!r} is not the command {cell['command']!r}")
        value = cell["result"]
        for part in attrs["data-pointer"].split("/")[1:]:
            value = value[int(part)] if isinstance(value, list) else value[part]
        want = f"{value * float(attrs['data-scale']):.{int(attrs['data-digits'])}f}"
        shown = re.sub(r"[^0-9.eE+-]", "", text)
        if shown != want:
            failures.append(f"cell {cid} {attrs['data-pointer']}: page shows {text!r}, the JSON gives {want}")
        checked += 1
    if checked < 10:
        failures.append(f"only {checked} numbers on the page")
    for f in failures:
        print("FAIL:", f)
    print(f"report page: {len(dom.charts)} charts, {checked} numbers checked against the cells' JSON, "
          f"{len(failures)} failures")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
