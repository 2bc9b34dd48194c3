"""Writes rope_freqs_golden.json: the `rope_freqs.weight` values llama.cpp's converter (convert_hf_to_gguf.py,
LlamaModel.generate_extra_tensors) writes for LLaMA-3 rotary scaling, computed its way, in float32 as torch does
(`scalar / tensor` is `tensor.reciprocal() * scalar` in torch); numpy's float32 stands in for torch's, so a value
may differ from torch's by the last bit of `pow`. Run: python3 make_rope_freqs_golden.py (needs numpy)."""
import json
import math

import numpy as np

f32 = np.float32


def rope_freqs(base, dim, factor, low_freq_factor, high_freq_factor, old_context_len):
    freqs = np.reciprocal(np.power(f32(base), np.arange(0, dim, 2, dtype=f32) / f32(dim))) * f32(1.0)
    low_freq_wavelen = old_context_len / low_freq_factor
    high_freq_wavelen = old_context_len / high_freq_factor
    out = []
    for freq in freqs:
        wavelen = np.reciprocal(freq) * f32(2 * math.pi)
        if wavelen < high_freq_wavelen:
            out.append(1)
        elif wavelen > low_freq_wavelen:
            out.append(factor)
        else:
            smooth = (np.reciprocal(wavelen) * f32(old_context_len) - f32(low_freq_factor)) / f32(
                high_freq_factor - low_freq_factor)
            out.append(np.reciprocal((f32(1) - smooth) / f32(factor) + smooth) * f32(1))
    return [float(f32(v)) for v in out]


cases = {
    # Llama-3.1-8B: rope_theta 500000, head_dim 128, factor 8, low 1, high 4, original context 8192.
    "llama-3.1": dict(base=500000.0, dim=128, factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                      old_context_len=8192),
    # Llama-3.2-1B: the same with factor 32 and head_dim 64.
    "llama-3.2-1b": dict(base=500000.0, dim=64, factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0,
                         old_context_len=8192),
}
json.dump({k: {"params": v, "rope_freqs": rope_freqs(**v)} for k, v in cases.items()},
          open("rope_freqs_golden.json", "w"), indent=1)
