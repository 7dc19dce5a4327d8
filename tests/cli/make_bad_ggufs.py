#!/usr/bin/env python3
"""Crafts truncated, corrupted and hostile GGUF files from a real model, for bad_input_test.sh.

usage: make_bad_ggufs.py MODEL.gguf OUTDIR

Writes OUTDIR/<case>.gguf for every case and OUTDIR/cases.tsv, one line per case:
    <case> TAB <commands> TAB <phrase> [TAB <phrase> ...]
<commands> names the slimkv commands that must reject the file: "info,run" when the header or
the architecture is bad (both read them), "run" when only loading the weights or the vocabulary
can tell (a missing tensor, a wrong shape, an unusable tensor type, a bad token id), "chat" for
`run --chat` (the chat template). The first phrase is the file name; every phrase must appear
in the error message: it names the file and the field, tensor or key at fault.

The files are made by byte-patching or re-serialising the model's header (metadata and tensor
infos, about 1.8 MB for SmolLM2); the tensor data section keeps its size but is left as a hole
(sparse zeros), so some forty files cost a few MB and well under a second. No case needs the
real tensor values: every error is found before they are used, or (non-finite weights) the case
writes the values it needs.
"""

import os
import struct
import sys

# GGUF metadata value types with a fixed encoded size.
FIXED = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
STRING, ARRAY, UINT32, INT32, FLOAT32 = 8, 9, 4, 5, 6
F32, Q8_0, I8 = 0, 8, 24


class Kv:
    def __init__(self, key, vtype, raw, start, value_off):
        self.key, self.vtype, self.raw = key, vtype, raw
        self.start = start          # file offset of the entry (its key length)
        self.type_off = value_off - 4
        self.value_off = value_off  # file offset of the value


class Ti:
    def __init__(self, name, dims, ttype, offset, start, dims_off):
        self.name, self.dims, self.ttype, self.offset = name, dims, ttype, offset
        self.start = start  # file offset of the entry (its name length)
        self.ndims_off = dims_off - 4
        self.dims_off = dims_off
        self.type_off = dims_off + 8 * len(dims)
        self.offset_off = self.type_off + 4


class Gguf:
    """The parsed header of a well-formed GGUF v2/v3 file, with the offset of every field."""

    def __init__(self, buf):
        self.buf = buf
        assert buf[:4] == b"GGUF"
        self.version, n_tensors, n_kv = struct.unpack_from("<IQQ", buf, 4)
        pos = 24
        self.kvs = []
        for _ in range(n_kv):
            start = pos
            (klen,) = struct.unpack_from("<Q", buf, pos)
            key = buf[pos + 8:pos + 8 + klen].decode()
            pos += 8 + klen
            (vtype,) = struct.unpack_from("<I", buf, pos)
            pos += 4
            end = self._skip(pos, vtype)
            self.kvs.append(Kv(key, vtype, buf[pos:end], start, pos))
            pos = end
        self.tis = []
        for _ in range(n_tensors):
            start = pos
            (nlen,) = struct.unpack_from("<Q", buf, pos)
            name = buf[pos + 8:pos + 8 + nlen].decode()
            pos += 8 + nlen
            (nd,) = struct.unpack_from("<I", buf, pos)
            dims = list(struct.unpack_from(f"<{nd}Q", buf, pos + 4))
            ttype, offset = struct.unpack_from("<IQ", buf, pos + 4 + 8 * nd)
            self.tis.append(Ti(name, dims, ttype, offset, start, pos + 4))
            pos += 4 + 8 * nd + 12
        self.infos_end = pos
        align = self.kv("general.alignment")
        self.alignment = struct.unpack_from("<I", align.raw)[0] if align else 32
        self.data_start = -(-pos // self.alignment) * self.alignment
        self.data_size = len(buf) - self.data_start

    def _skip(self, pos, vtype):
        if vtype in FIXED:
            return pos + FIXED[vtype]
        if vtype == STRING:
            return pos + 8 + struct.unpack_from("<Q", self.buf, pos)[0]
        assert vtype == ARRAY
        etype, count = struct.unpack_from("<IQ", self.buf, pos)
        pos += 12
        if etype in FIXED:
            return pos + count * FIXED[etype]
        for _ in range(count):
            pos = self._skip(pos, etype)
        return pos

    def kv(self, key):
        return next((k for k in self.kvs if k.key == key), None)

    def ti(self, name):
        return next(t for t in self.tis if t.name == name)

    def header(self):
        """The original bytes up to the data section (a mutable copy)."""
        return bytearray(self.buf[:self.data_start])

    def serialize(self, kvs, tis, alignment=None):
        """A new header from (key, vtype, raw) and (name, dims, ttype, offset) tuples."""
        alignment = alignment or self.alignment
        out = bytearray(b"GGUF" + struct.pack("<IQQ", self.version, len(tis), len(kvs)))
        for key, vtype, raw in kvs:
            k = key.encode()
            out += struct.pack("<Q", len(k)) + k + struct.pack("<I", vtype) + raw
        for name, dims, ttype, offset in tis:
            n = name.encode()
            out += struct.pack("<Q", len(n)) + n + struct.pack("<I", len(dims))
            out += struct.pack(f"<{len(dims)}Q", *dims) + struct.pack("<IQ", ttype, offset)
        out += bytes(-len(out) % alignment)
        return out

    def kv_tuples(self):
        return [(k.key, k.vtype, k.raw) for k in self.kvs]

    def ti_tuples(self):
        return [(t.name, list(t.dims), t.ttype, t.offset) for t in self.tis]


def string_raw(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


class Writer:
    def __init__(self, outdir):
        self.outdir = outdir
        self.manifest = []

    def write(self, case, commands, phrases, head, total_size=None, extra=()):
        """Writes `head`, then a hole up to total_size, then the (offset, bytes) pairs of extra."""
        path = os.path.join(self.outdir, case + ".gguf")
        with open(path, "wb") as f:
            f.write(head)
            if total_size is not None:
                f.truncate(total_size)
            for off, data in extra:
                f.seek(off)
                f.write(data)
        self.manifest.append("\t".join([case, commands, case + ".gguf"] + list(phrases)))


def main():
    model, outdir = sys.argv[1], sys.argv[2]
    os.makedirs(outdir, exist_ok=True)
    # Only the header is read in full; the data section is located by the parse.
    size = os.path.getsize(model)
    with open(model, "rb") as f:
        buf = f.read(8 << 20)
    g = Gguf(buf)
    assert g.data_start < len(buf), "header larger than the read window"
    g.data_size = size - g.data_start
    w = Writer(outdir)
    both = "info,run"

    def patched(case, phrases, patches, commands=both):
        h = g.header()
        for off, fmt, value in patches:
            struct.pack_into(fmt, h, off, value)
        w.write(case, commands, phrases, h, size)

    def rebuilt(case, phrases, kvs=None, tis=None, alignment=None, commands=both, extra=()):
        h = g.serialize(kvs if kvs is not None else g.kv_tuples(),
                        tis if tis is not None else g.ti_tuples(), alignment)
        w.write(case, commands, phrases, h, len(h) + g.data_size, extra)

    # --- Not a GGUF file at all.
    w.write("empty", both, ["magic"], b"")
    w.write("text_file", both, ["magic", "GGUF"], b"Once upon a time there was a model file.\n" * 4)

    # --- Truncated copies: inside the header, the metadata, the tensor infos, the data.
    tokens = g.kv("tokenizer.ggml.tokens")
    k_info = g.ti("blk.0.attn_k.weight")
    last = max(g.tis, key=lambda t: t.offset)
    w.write("trunc_header", both, ["header", "tensor count"], g.buf[:12])
    w.write("trunc_metadata", both, ["tokenizer.ggml.tokens"],
            g.buf[:tokens.value_off + len(tokens.raw) // 2])
    w.write("trunc_tensor_info", both, ["'blk.0.attn_k.weight'", "file ends"],
            g.buf[:k_info.dims_off + 4])
    w.write("trunc_data_middle", both, ["runs past the end of the file"], g.header(),
            g.data_start + g.data_size // 2)
    w.write("trunc_last_byte", both, [f"'{last.name}'", "runs past the end of the file"],
            g.header(), size - 1)

    # --- Header fields.
    h = g.header()
    h[0:4] = bytes(b ^ 0xFF for b in h[0:4])
    w.write("bad_magic", both, ["magic", "GGUF"], h, size)
    patched("version_1", ["version", "v1"], [(4, "<I", 1)])
    patched("version_99", ["version", "v99"], [(4, "<I", 99)])
    patched("version_big_endian", ["version", "big-endian"], [(4, ">I", 3)])
    patched("tensor_count_huge", ["tensor count", "exceed"], [(8, "<Q", 1 << 60)])
    patched("metadata_count_huge", ["metadata count", "exceed"], [(16, "<Q", 1 << 40)])
    patched("tensor_count_plus_one", [f"tensor #{len(g.tis)}"], [(8, "<Q", len(g.tis) + 1)])
    patched("metadata_count_plus_one", ["metadata_count_plus_one.gguf"], [(16, "<Q", len(g.kvs) + 1)])

    # --- Metadata entries: lengths, counts and types.
    arch = g.kv("general.architecture")
    first = g.kvs[0]
    patched("key_length_huge", ["metadata #0", "key", "length"], [(first.start, "<Q", 1 << 40)])
    patched("string_length_huge", ["general.architecture", "length"], [(arch.value_off, "<Q", 1 << 63)])
    patched("array_count_huge", ["tokenizer.ggml.tokens", "cannot fit"],
            [(tokens.value_off + 4, "<Q", 1 << 62)])
    patched("value_type_unknown", ["general.architecture", "unknown value type 99"],
            [(arch.type_off, "<I", 99)])
    patched("array_type_unknown", ["tokenizer.ggml.tokens", "unknown array element type 99"],
            [(tokens.value_off, "<I", 99)])
    patched("bool_value_bad", ["tokenizer.ggml.add_bos_token", "bool"],
            [(g.kv("tokenizer.ggml.add_bos_token").value_off, "<B", 7)])

    # --- Tensor infos: types, offsets, dimensions.
    q = g.ti("blk.0.attn_q.weight")
    patched("tensor_type_77", ["'blk.0.attn_q.weight'", "unknown tensor type id 77"], [(q.type_off, "<I", 77)])
    patched("offset_past_end", ["'blk.0.attn_q.weight'", "runs past the end of the file"],
            [(q.offset_off, "<Q", 1 << 40)])
    patched("offset_huge", ["'blk.0.attn_q.weight'", "offset"], [(q.offset_off, "<Q", (1 << 64) - 32)])
    patched("offset_misaligned", ["'blk.0.attn_q.weight'", "alignment"], [(q.offset_off, "<Q", q.offset + 1)])
    k_prev = g.ti("blk.0.attn_k.weight")
    patched("offset_overlap", ["'blk.0.attn_q.weight'", "overlaps"], [(q.offset_off, "<Q", k_prev.offset)])
    patched("dim_zero", ["'blk.0.attn_q.weight'", "dims[1] is 0"], [(q.dims_off + 8, "<Q", 0)])
    patched("dim_huge", ["'blk.0.attn_q.weight'", "runs past the end of the file"],
            [(q.dims_off + 8, "<Q", 1 << 40)])
    patched("dim_overflow", ["'blk.0.attn_q.weight'", "overflow"], [(q.dims_off + 8, "<Q", 1 << 62)])
    patched("dim_not_blocks", ["'blk.0.attn_q.weight'", "block size"], [(q.dims_off, "<Q", 577)])
    patched("n_dims_zero", ["'blk.0.attn_q.weight'", "no dimensions"], [(q.ndims_off, "<I", 0)])
    patched("n_dims_seven", ["'blk.0.attn_q.weight'", "dimensions"], [(q.ndims_off, "<I", 7)])
    patched("tensor_name_huge", ["tensor #0", "name", "length"], [(g.tis[0].start, "<Q", 1 << 50)])
    tis = g.ti_tuples()
    tis[1] = (tis[0][0],) + tis[1][1:]
    rebuilt("tensor_name_duplicate", [f"'{g.tis[0].name}'", "duplicate"], tis=tis)

    # --- Alignment: not a power of two, zero, a string, and a valid one the offsets break.
    def with_alignment(vtype, raw):
        return [k for k in g.kv_tuples() if k[0] != "general.alignment"] + [("general.alignment", vtype, raw)]

    rebuilt("alignment_3", ["general.alignment", "alignment 3 is not a power of two"],
            kvs=with_alignment(UINT32, struct.pack("<I", 3)), alignment=1)
    rebuilt("alignment_0", ["general.alignment", "power of two"],
            kvs=with_alignment(UINT32, struct.pack("<I", 0)), alignment=1)
    rebuilt("alignment_string", ["general.alignment", "type"], kvs=with_alignment(STRING, string_raw("32")))
    big = next(a for a in (1 << n for n in range(6, 21)) if any(t.offset % a for t in g.tis))
    odd = next(t for t in g.tis if t.offset % big)
    rebuilt("alignment_too_big_for_offsets", [f"'{odd.name}'", f"alignment ({big})"],
            kvs=with_alignment(UINT32, struct.pack("<I", big)), alignment=big)

    # --- Architecture and hyper-parameters (valid GGUF, bad model).
    def with_kv(key, vtype, raw):
        return [(k, t, r) if k != key else (key, vtype, raw) for k, t, r in g.kv_tuples()]

    rebuilt("arch_unknown", ["unknown architecture 'gpt-j-nonsense'", "llama"],
            kvs=with_kv("general.architecture", STRING, string_raw("gpt-j-nonsense")))
    rebuilt("arch_missing", ["general.architecture"],
            kvs=[k for k in g.kv_tuples() if k[0] != "general.architecture"])
    rebuilt("arch_not_string", ["general.architecture"], kvs=with_kv("general.architecture", UINT32, struct.pack("<I", 7)))

    def hparam(case, key, value, phrases, fmt="<I", commands=both):
        kv = g.kv(key)
        assert kv, key
        patched(case, [key] + phrases, [(kv.value_off, fmt, value)], commands)

    hparam("block_count_zero", "llama.block_count", 0, ["is 0"])
    hparam("block_count_huge", "llama.block_count", 0xFFFFFFFF, ["4294967295"])
    hparam("embedding_length_zero", "llama.embedding_length", 0, ["is 0"])
    hparam("context_length_zero", "llama.context_length", 0, ["is 0"])
    hparam("head_count_zero", "llama.attention.head_count", 0, ["is 0"])
    patched("head_count_kv_4", ["9 query heads", "4 KV heads"],
            [(g.kv("llama.attention.head_count_kv").value_off, "<I", 4)])
    hparam("rms_eps_nan", "llama.attention.layer_norm_rms_epsilon", float("nan"), ["nan"], fmt="<f")
    hparam("rope_base_zero", "llama.rope.freq_base", 0.0, [], fmt="<f")
    hparam("rope_dim_odd", "llama.rope.dimension_count", 63, ["even"])
    hparam("vocab_size_huge", "llama.vocab_size", 1 << 30, ["1073741824"])
    patched("block_count_wrong_type", ["llama.block_count"],
            [(g.kv("llama.block_count").type_off, "<I", FLOAT32)])
    # Hyper-parameters that parse but disagree with the tensors: only loading the weights tells.
    n_layers = struct.unpack("<I", g.kv("llama.block_count").raw)[0]
    patched("block_count_plus_one", [f"missing tensor 'blk.{n_layers}."],
            [(g.kv("llama.block_count").value_off, "<I", n_layers + 1)], commands="run")
    n_vocab = struct.unpack("<I", g.kv("llama.vocab_size").raw)[0]
    embd = g.ti("token_embd.weight")
    patched("vocab_size_smaller",
            [f"'token_embd.weight' has shape [{embd.dims[0]}, {n_vocab}], expected [{embd.dims[0]}, {n_vocab - 1}]"],
            [(g.kv("llama.vocab_size").value_off, "<I", n_vocab - 1)], commands="run")

    # --- Weights: a missing tensor, a wrong shape, an unusable type, non-finite values.
    gone = "blk.5.ffn_up.weight"
    up = g.ti(gone)
    rebuilt("tensor_missing", [f"missing tensor '{gone}'", f"expected shape [{up.dims[0]}, {up.dims[1]}]"],
            tis=[t for t in g.ti_tuples() if t[0] != gone], commands="run")
    kname = "blk.0.attn_k.weight"
    kt = g.ti(kname)
    rebuilt("tensor_wrong_shape",
            [f"'{kname}' has shape [{kt.dims[1]}, {kt.dims[0]}], expected [{kt.dims[0]}, {kt.dims[1]}]"],
            tis=[(n, d[::-1] if n == kname else d, t, o) for n, d, t, o in g.ti_tuples()], commands="run")
    rebuilt("tensor_extra_dim", [f"'{kname}' has shape [{kt.dims[0]}, {kt.dims[1]}, 1]"],
            tis=[(n, d + [1] if n == kname else d, t, o) for n, d, t, o in g.ti_tuples()], commands="run")
    assert embd.ttype == Q8_0  # I8 takes fewer bytes, so the range stays inside the file
    patched("matrix_type_unsupported", ["'token_embd.weight'", "I8", "supported: F32, F16, Q4_0"],
            [(embd.type_off, "<I", I8)], commands="info,run")
    norm = g.ti("output_norm.weight")
    assert norm.ttype == F32
    patched("norm_type_unsupported", ["'output_norm.weight'", "I8"], [(norm.type_off, "<I", I8)], commands="run")
    attn_norm = g.ti("blk.0.attn_norm.weight")
    w.write("norm_not_finite", "run", ["'blk.0.attn_norm.weight'", "non-finite"], g.header(), size,
            extra=[(g.data_start + attn_norm.offset + 4 * 7, struct.pack("<f", float("inf")))])

    # --- Vocabulary and chat template (read when the tokenizer loads, not by `info`).
    patched("bos_outside_vocab", ["tokenizer.ggml.bos_token_id", "outside the vocabulary"],
            [(g.kv("tokenizer.ggml.bos_token_id").value_off, "<I", 0xFFFFFFFF)], commands="run")
    rebuilt("tokenizer_model_unknown", ["tokenizer.ggml.model", "'gpt-j-nonsense'"], commands="run",
            kvs=with_kv("tokenizer.ggml.model", STRING, string_raw("gpt-j-nonsense")))
    rebuilt("tokens_missing", ["tokenizer.ggml.tokens", "missing"], commands="run",
            kvs=[k for k in g.kv_tuples() if k[0] != "tokenizer.ggml.tokens"])
    rebuilt("token_type_short", ["tokenizer.ggml.token_type", "3 entries"], commands="run",
            kvs=with_kv("tokenizer.ggml.token_type", ARRAY, struct.pack("<IQ3i", 5, 3, 1, 1, 1)))
    rebuilt("merge_malformed", ["tokenizer.ggml.merges[0]", "'nospace'"], commands="run",
            kvs=with_kv("tokenizer.ggml.merges", ARRAY,
                        struct.pack("<IQ", STRING, 2) + string_raw("nospace") + string_raw("a b")))
    # Special tokens (control, user-defined, unknown) are cut out of every input through a
    # trie of their texts: 8 MB of such text made the old trie take ~1 GB (116 bytes per byte)
    # and abort with std::bad_alloc under the test's memory cap. Now refused (over 4 MiB).
    letters = bytes(range(97, 123)) * 400
    filler = [b"%05d" % i + letters[i % 26:i % 26 + 9995] for i in range(800)]

    def appended(key, elem_type, items):
        """The raw value of array `key` with `items` (encoded) appended."""
        raw = g.kv(key).raw
        count = struct.unpack_from("<Q", raw, 4)[0] + len(items)
        return struct.pack("<IQ", elem_type, count) + raw[12:] + b"".join(items)

    more = {"tokenizer.ggml.tokens": appended("tokenizer.ggml.tokens", STRING,
                                              [struct.pack("<Q", len(x)) + x for x in filler]),
            "tokenizer.ggml.token_type": appended("tokenizer.ggml.token_type", INT32,
                                                  [struct.pack("<i", 3)] * len(filler))}
    rebuilt("special_text_huge", ["tokenizer.ggml.tokens", "bytes of text, more than"], commands="run",
            kvs=[(k, t, more.get(k, r)) for k, t, r in g.kv_tuples()])
    rebuilt("chat_template_unknown", ["chat template"], commands="chat",
            kvs=with_kv("tokenizer.chat_template", STRING, string_raw("{% for m in messages %}{{ m")))

    with open(os.path.join(outdir, "cases.tsv"), "w") as f:
        f.write("\n".join(w.manifest) + "\n")


if __name__ == "__main__":
    main()
