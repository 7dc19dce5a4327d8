#!/usr/bin/env python3
"""Golden data for slimkv's dequantizers, from gguf-py's numpy reference (gguf.quants).

Usage: dequant_golden.py OUT_DIR [--model PATH --tensor NAME[:MAX_ROWS] ...]

Writes into OUT_DIR:
  sizes.txt            one line per ggml type gguf-py knows: NAME ID BLOCK_ELEMS BLOCK_BYTES
  <TYPE>.raw           random but valid blocks of TYPE (every fp16 field finite)
  <TYPE>.f32           gguf.quants.dequantize of those blocks, float32 little-endian
  tensor.<NAME>.f32    with --model: the first MAX_ROWS rows (all if omitted) of a tensor of
                       the model, dequantized by gguf-py

Random bytes exercise every quant bit pattern; the scale fields get random *finite* fp16
bit patterns (normals, subnormals and zeros of both signs, up to 65504), so that both sides
compute on the same finite inputs and can be compared bit for bit.
"""
import argparse
import os
import sys

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import GGML_QUANT_SIZES, GGUFReader
from gguf.quants import dequantize

# Byte offsets of the fp16 fields in each block (see src/gguf/dequant.h).
HALF_FIELDS = {
    T.Q4_0: [0],
    T.Q4_1: [0, 2],
    T.Q5_0: [0],
    T.Q5_1: [0, 2],
    T.Q8_0: [0],
    T.Q2_K: [80, 82],
    T.Q3_K: [108],
    T.Q4_K: [0, 2],
    T.Q5_K: [0, 2],
    T.Q6_K: [208],
    T.IQ4_NL: [0],
    T.IQ4_XS: [0],
}
BLOCKS = 96  # blocks per quantized type; 96 * 32 = 3072 elements for plain types


def finite_halves(rng, n):
    bits = rng.integers(0, 1 << 16, size=n, dtype=np.uint32).astype(np.uint16)
    inf_or_nan = (bits & 0x7C00) == 0x7C00
    bits[inf_or_nan] ^= 0x4000  # clear the top exponent bit: still any sign and mantissa
    return bits


def finite_bf16(rng, n):
    bits = rng.integers(0, 1 << 16, size=n, dtype=np.uint32).astype(np.uint16)
    inf_or_nan = (bits & 0x7F80) == 0x7F80
    bits[inf_or_nan] ^= 0x4000
    return bits


def finite_f32(rng, n):
    bits = rng.integers(0, 1 << 32, size=n, dtype=np.uint64).astype(np.uint32)
    inf_or_nan = (bits & 0x7F800000) == 0x7F800000
    bits[inf_or_nan] ^= 0x40000000
    return bits


def random_blocks(rng, qtype):
    block_elems, block_bytes = GGML_QUANT_SIZES[qtype]
    if qtype == T.F32:
        return finite_f32(rng, BLOCKS * 32).view(np.uint8).reshape(-1, 4)
    if qtype == T.F16:
        return finite_halves(rng, BLOCKS * 32).view(np.uint8).reshape(-1, 2)
    if qtype == T.BF16:
        return finite_bf16(rng, BLOCKS * 32).view(np.uint8).reshape(-1, 2)
    raw = rng.integers(0, 256, size=(BLOCKS, block_bytes), dtype=np.uint16).astype(np.uint8)
    for off in HALF_FIELDS[qtype]:
        raw[:, off:off + 2] = finite_halves(rng, BLOCKS).view(np.uint8).reshape(BLOCKS, 2)
    return raw


def write_types(out_dir):
    rng = np.random.default_rng(20240607)
    with open(os.path.join(out_dir, "sizes.txt"), "w") as f:
        for qtype, (elems, size) in GGML_QUANT_SIZES.items():
            f.write(f"{qtype.name} {int(qtype)} {elems} {size}\n")
    for qtype in [T.F32, T.F16, T.BF16, *HALF_FIELDS]:
        raw = random_blocks(rng, qtype)
        with np.errstate(over="raise", invalid="raise"):
            values = dequantize(raw, qtype).astype(np.float32, copy=False)
        assert np.isfinite(values).all(), qtype.name
        raw.tofile(os.path.join(out_dir, f"{qtype.name}.raw"))
        values.tofile(os.path.join(out_dir, f"{qtype.name}.f32"))


def write_tensors(out_dir, model, specs):
    reader = GGUFReader(model)
    by_name = {t.name: t for t in reader.tensors}
    for spec in specs:
        name, _, max_rows = spec.partition(":")
        t = by_name[name]
        data = t.data
        if max_rows:
            # gguf-py shapes data as [rows..., row] (reversed ggml order); keep whole rows.
            data = data.reshape(-1, data.shape[-1])[: int(max_rows)]
        values = dequantize(data, t.tensor_type).astype(np.float32, copy=False)
        values.tofile(os.path.join(out_dir, f"tensor.{name}.f32"))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out_dir")
    p.add_argument("--model")
    p.add_argument("--tensor", action="append", default=[])
    args = p.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    write_types(args.out_dir)
    if args.model:
        write_tensors(args.out_dir, args.model, args.tensor)
    return 0


if __name__ == "__main__":
    sys.exit(main())
