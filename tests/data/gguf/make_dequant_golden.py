"""Makes dequant_golden.safetensors: random blocks of every GGUF tensor type prunelab reads, with the values the
`gguf` PyPI package's dequantiser (the reference implementation of llama.cpp's formats) gives for them.

    pip install gguf==0.19.0 numpy safetensors && python3 make_dequant_golden.py
"""
import numpy as np
from gguf import GGMLQuantizationType as T, quants
from gguf.constants import GGML_QUANT_SIZES
from safetensors.numpy import save_file

rng = np.random.default_rng(20261128)
BLOCKS = 6
out = {}
# Types added later come last, so the blocks of the earlier ones stay the same.
for t in [T.F32, T.F16, T.BF16, T.Q4_0, T.Q4_1, T.Q8_0, T.Q4_K, T.Q5_K, T.Q6_K, T.Q5_0, T.Q5_1, T.Q2_K, T.Q3_K,
          T.IQ4_NL]:
    block, size = GGML_QUANT_SIZES[t]
    if t in (T.F32, T.F16, T.BF16):
        values = rng.standard_normal(BLOCKS * 32).astype(np.float32)
        raw = {T.F32: values, T.F16: values.astype(np.float16)}.get(t)
        raw = raw.view(np.uint8) if raw is not None else (values.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8)
    else:
        raw = rng.integers(0, 256, size=(BLOCKS, size), dtype=np.uint8)
        # Scales are f16: random bytes would give NaN/inf, so write finite small scales where each format keeps them.
        halves = {T.Q4_0: [0], T.Q4_1: [0, 2], T.Q8_0: [0], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [size - 2],
             T.Q5_0: [0], T.Q5_1: [0, 2], T.Q2_K: [size - 4, size - 2], T.Q3_K: [size - 2], T.IQ4_NL: [0]}[t]
        for off in halves:
            raw[:, off:off + 2] = rng.uniform(-0.05, 0.05, BLOCKS).astype(np.float16).view(np.uint8).reshape(BLOCKS, 2)
        raw = raw.reshape(-1)
    deq = quants.dequantize(raw, t).astype(np.float32).reshape(-1)
    out[f"{t.name}.raw"] = raw.copy()
    out[f"{t.name}.f32"] = deq
save_file(out, "dequant_golden.safetensors")
print({k: v.shape for k, v in out.items()})
