"""Opt-in check with llama.cpp itself (llama-cpp-python 0.3.36): llama.cpp quantises an f16 GGUF of SmolLM2 as
its Q2_K, Q2_K (pure), Q3_K_M, Q5_0, Q5_1 and IQ4_NL files; prunelab reads each file and both tools compute the
mean NLL of the same 128-token windows. SmolLM2's rows of 576 values are not a multiple of 256, so llama.cpp
falls back to Q4_0 for most matrices, and the files hold between them Q2_K, Q3_K, Q4_0, Q4_K, Q5_0, Q5_1, Q5_K,
IQ4_NL and Q8_0 tensors (the report lists each file's). llama.cpp multiplies quantised weights by activations it
quantises too, prunelab by the dequantised weights in f32, so they agree within what that costs (1% of the NLL),
far closer than the quantisation moves it. Run by tests/llama_cpp.sh with prunelab's binary, a text and the f16
GGUF."""
import json
import os
import sys
import tempfile

import llama_cpp

from llama_cpp_nll import llama_cpp_nll, prunelab_nll, windows

binary, text, f16 = sys.argv[1:4]
# llama.cpp's LLAMA_FTYPE_MOSTLY_* ids, and whether every quantisable matrix takes the file's type ("pure": the
# Q2_K mix stores ffn_down as Q3_K, the pure file as Q2_K).
FTYPES = {"Q2_K": (10, False), "Q2_K (pure)": (10, True), "Q3_K_M": (12, False), "Q5_0": (8, False),
          "Q5_1": (9, False), "IQ4_NL": (25, False)}


def tensor_types(path):
    from gguf import GGUFReader
    return sorted({t.tensor_type.name for t in GGUFReader(path).tensors})


ws, ids = windows(f16, text)
scratch = tempfile.TemporaryDirectory()
tmp = scratch.name
dense = prunelab_nll(binary, f16, ids)
result = {"f16": {"llama.cpp": llama_cpp_nll(f16, ws), "prunelab": dense}}
for n, (name, (ftype, pure)) in enumerate(FTYPES.items()):
    out = os.path.join(tmp, f"{n}.gguf")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype, params.pure = ftype, pure
    assert llama_cpp.llama_model_quantize(f16.encode(), out.encode(), params) == 0, name
    result[name] = {"types": tensor_types(out), "llama.cpp": llama_cpp_nll(out, ws),
                    "prunelab": prunelab_nll(binary, out, ids)}
print(json.dumps(result, indent=1))
for name, r in result.items():
    gap = abs(r["llama.cpp"] - r["prunelab"])
    assert gap <= 1e-2 * r["prunelab"], f"{name}: llama.cpp and prunelab differ by {gap} nats"
    if name != "f16":
        effect = abs(r["prunelab"] - dense)
        print(f"llama.cpp: {name} ({', '.join(r['types'])}) read as llama.cpp reads it: the tools differ by "
              f"{gap:.4f} nats, quantisation moves the NLL by {effect:.4f}")
