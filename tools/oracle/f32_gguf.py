#!/usr/bin/env python3
"""Write a copy of a GGUF file with every tensor dequantized to F32.

Used to validate the oracle against another engine without that engine's own
quantization of activations: with F32 weights, llama.cpp's CPU matmuls run in
f32 x f32 instead of quantizing activations to 8 bits, so its logits can be
compared with the float64 oracle to float32 rounding.  The weights are the exact
values gguf.quants.dequantize produces (what the oracle itself uses), so the
model is the same model.

    f32_gguf.py IN.gguf OUT.gguf
"""

import sys

import numpy as np
import gguf
from gguf.quants import dequantize


def main(src, dst):
    reader = gguf.GGUFReader(src, "r")
    arch = reader.fields["general.architecture"].contents()
    writer = gguf.GGUFWriter(dst, arch)
    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        if field.name == "general.file_type":
            writer.add_key_value(field.name, int(gguf.LlamaFileType.ALL_F32), vtype)
            continue
        writer.add_key_value(field.name, field.contents(), vtype, sub_type=sub)
    for t in reader.tensors:
        shape = tuple(int(d) for d in reversed(t.shape))
        a = np.ascontiguousarray(np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32).reshape(shape))
        writer.add_tensor(t.name, a)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
