"""The dashboard in a real browser: headless Chromium loads / from a live server while three
requests stream, and the screenshot must show the page as drawn — the dark background, the
KV pool bar with its free part, a segment per running sequence in the palette colours, and
text (many distinct colours from anti-aliasing), not a blank or error page.

Run by server/dashboard_test.sh; needs Debian's `chromium` (tools/setup.sh installs it).
"""
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import zlib

import openai

from serve_util import Checks, Server, metrics, wait_for

WIDTH, HEIGHT = 1100, 760
BACKGROUND = (0x0F, 0x17, 0x2A)
POOL_FREE = (0x33, 0x41, 0x55)
PALETTE = [(0x38, 0xBD, 0xF8), (0xA7, 0x8B, 0xFA), (0xF4, 0x72, 0xB6), (0xFB, 0x92, 0x3C),
           (0xFA, 0xCC, 0x15), (0x4A, 0xDE, 0x80), (0x2D, 0xD4, 0xBF), (0xF8, 0x71, 0x71)]


def read_png(path):
    """(width, height, [rgb tuples]) of an 8-bit RGB or RGBA, non-interlaced PNG."""
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, width = 8, b"", None
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", chunk)
            assert depth == 8 and color in (2, 6) and interlace == 0, (depth, color, interlace)
            bpp = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + n
    raw = zlib.decompress(idat)
    stride = width * bpp
    prev = bytearray(stride)
    pixels = []
    for y in range(height):
        filt = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        if filt == 1:
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 255
        elif filt == 2:
            for i in range(stride):
                line[i] = (line[i] + prev[i]) & 255
        elif filt == 3:
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 255
        elif filt == 4:
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0
                b = prev[i]
                c = prev[i - bpp] if i >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        pixels.extend(tuple(line[i:i + 3]) for i in range(0, stride, bpp))
        prev = line
    return width, height, pixels


def main():
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if not browser:
        print("FAIL: chromium not found (tools/setup.sh installs the Debian package)")
        sys.exit(1)
    checks = Checks()
    with Server("-c", "1024", "--kv-mem", "64") as srv, tempfile.TemporaryDirectory() as tmp:
        c = openai.OpenAI(base_url=srv.url + "/v1", api_key="none", max_retries=0)
        streams = [c.completions.create(model="m", prompt=f"Story number {i}:", max_tokens=400, stream=True,
                                        extra_body={"ignore_eos": True}) for i in range(3)]
        stop = threading.Event()

        def drain(s):
            for _ in s:
                if stop.is_set():
                    break
            s.close()

        threads = [threading.Thread(target=drain, args=(s,)) for s in streams]
        for t in threads:
            t.start()
        wait_for(lambda: metrics(srv.url)["slimkv_requests_running"] == 3, 60, "three running sequences")
        png = os.path.join(tmp, "dashboard.png")
        out = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                              f"--user-data-dir={tmp}/profile", f"--window-size={WIDTH},{HEIGHT}",
                              "--virtual-time-budget=3000", f"--screenshot={png}", srv.url + "/"],
                             capture_output=True, text=True, timeout=120)
        stop.set()
        for t in threads:
            t.join(60)
        keep = os.environ.get("SLIMKV_DASHBOARD_PNG")
        if keep and os.path.exists(png):
            shutil.copy(png, keep)

        def screenshot_taken():
            assert os.path.exists(png), out.stderr[-2000:]

        def page_is_drawn():
            w, h, px = read_png(png)
            assert (w, h) == (WIDTH, HEIGHT), (w, h)
            counts = {}
            for p in px:
                counts[p] = counts.get(p, 0) + 1
            n = len(px)
            assert counts.get(BACKGROUND, 0) > 0.2 * n, "the page background is missing"
            assert counts.get(POOL_FREE, 0) > 5000, "the KV pool bar (free part) is missing"
            seq_px = sum(counts.get(col, 0) for col in PALETTE)
            assert seq_px > 300, f"no sequence segments in the pool bar ({seq_px} pixels)"
            assert len(counts) > 200, f"only {len(counts)} colours: no text was drawn"

        checks.run("screenshot taken", screenshot_taken)
        if os.path.exists(png):
            checks.run("page is drawn", page_is_drawn)
    checks.finish()


if __name__ == "__main__":
    main()
