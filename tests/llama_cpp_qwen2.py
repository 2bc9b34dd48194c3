"""Opt-in helper of tests/llama_cpp.sh (needs numpy, safetensors and llama.cpp's `gguf` package) for the Qwen2
layout:
  add-biases HF_DIR          gives an f32 HF LLaMA folder q/k/v biases (seeded) and model_type qwen2;
  to-qwen2 IN.gguf OUT.gguf  rewrites an f32 `llama` GGUF as llama.cpp's converter writes `qwen2`: the same
                             keys under `qwen2.`, q/k rows (weights and biases) in HF's order, as llama.cpp
                             rotates qwen2 halves as HF does (its LlamaModel.permute is not applied)."""
import json
import sys

import numpy as np
from gguf import GGUFReader, GGUFValueType, GGUFWriter
from safetensors.numpy import load_file, save_file


def add_biases(folder):
    cfg = json.load(open(f"{folder}/config.json"))
    cfg["model_type"] = "qwen2"
    cfg.pop("rope_scaling", None)
    cfg["rope_parameters"] = {"rope_type": "default", "rope_theta": cfg["rope_theta"]}
    json.dump(cfg, open(f"{folder}/config.json", "w"), indent=1)
    tensors = load_file(f"{folder}/model.safetensors")
    rng = np.random.default_rng(0)
    for name in list(tensors):
        for proj in ("q_proj", "k_proj", "v_proj"):
            if name.endswith(f"self_attn.{proj}.weight"):
                rows = tensors[name].shape[0]
                tensors[name.replace(".weight", ".bias")] = rng.normal(0, 0.1, rows).astype("<f4")
    save_file(tensors, f"{folder}/model.safetensors")


def unpermute(t, heads):
    """The inverse of llama.cpp's LlamaModel.permute (rows h·d + 2i + j ← HF rows h·d + j·d/2 + i)."""
    shape = t.shape
    return t.reshape(heads, shape[0] // heads // 2, 2, *shape[1:]).swapaxes(1, 2).reshape(shape)


def to_qwen2(src, dst):
    r = GGUFReader(src)
    field = lambda k: r.fields[k].contents()
    assert field("general.architecture") == "llama"
    heads, kv = field("llama.attention.head_count"), field("llama.attention.head_count_kv")
    w = GGUFWriter(dst, "qwen2")
    for key, f in r.fields.items():
        if key.startswith("GGUF.") or key in ("general.architecture", "general.alignment"):
            continue
        sub = f.types[-1] if f.types[0] == GGUFValueType.ARRAY else None
        w.add_key_value(key.replace("llama.", "qwen2.", 1), f.contents(), f.types[0], sub_type=sub)
    for t in r.tensors:
        assert t.tensor_type == 0, f"{t.name}: not f32"
        data = np.array(t.data)
        if ".attn_q." in t.name or ".attn_k." in t.name:
            data = unpermute(data, heads if ".attn_q." in t.name else kv)
        w.add_tensor(t.name, data)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    {"add-biases": add_biases, "to-qwen2": to_qwen2}[sys.argv[1]](*sys.argv[2:])
