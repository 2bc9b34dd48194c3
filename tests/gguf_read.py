"""Reads a GGUF file with the `gguf` PyPI package (llama.cpp's own reader) and prints what the tests check."""
import json
import sys

from gguf import GGUFReader

r = GGUFReader(sys.argv[1])
arch = bytes(r.fields["general.architecture"].parts[-1]).decode()
field = lambda k: r.fields[k].parts[r.fields[k].data[0]].tolist()
print(json.dumps({
    "architecture": arch,
    "block_count": field(f"{arch}.block_count")[0],
    "tensors": len(r.tensors),
    "tokens": len(r.fields["tokenizer.ggml.tokens"].data) if "tokenizer.ggml.tokens" in r.fields else 0,
    "shapes": {t.name: [int(x) for x in t.shape] for t in r.tensors},
}))
