"""Opt-in helper of tests/llama_cpp.sh (needs numpy and llama.cpp's `gguf` package) for the Qwen2 layout:
  add-biases HF_DIR          gives an f32 HF LLaMA folder q/k/v biases (seeded) and model_type qwen2;
  to-qwen2 IN.gguf OUT.gguf  rewrites an f32 `llama` GGUF as llama.cpp's converter writes `qwen2`: the same
                             keys under `qwen2.`, q/k rows (weights and biases) in HF's order, as llama.cpp
                             rotates qwen2 halves as HF does (its LlamaModel.permute is not applied)."""
import json
import struct
import sys

import numpy as np
from gguf import GGUFReader, GGUFValueType, GGUFWriter


def read_safetensors(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    header.pop("__metadata__", None)
    out = {}
    for name, info in header.items():
        assert info["dtype"] == "F32", f"{name}: {info['dtype']} (expected an f32 folder)"
        a, b = info["data_offsets"]
        out[name] = np.frombuffer(raw[8 + n + a:8 + n + b], dtype="<f4").reshape(info["shape"])
    return out


def write_safetensors(path, tensors):
    header, offset = {}, 0
    for name, t in tensors.items():
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + t.nbytes]}
        offset += t.nbytes
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob)
        for t in tensors.values():
            f.write(np.ascontiguousarray(t, dtype="<f4").tobytes())


def add_biases(folder):
    cfg = json.load(open(f"{folder}/config.json"))
    cfg["model_type"] = "qwen2"
    cfg.pop("rope_scaling", None)
    cfg["rope_parameters"] = {"rope_type": "default", "rope_theta": cfg["rope_theta"]}
    json.dump(cfg, open(f"{folder}/config.json", "w"), indent=1)
    tensors = read_safetensors(f"{folder}/model.safetensors")
    rng = np.random.default_rng(0)
    for name in list(tensors):
        for proj in ("q_proj", "k_proj", "v_proj"):
            if name.endswith(f"self_attn.{proj}.weight"):
                rows = tensors[name].shape[0]
                tensors[name.replace(".weight", ".bias")] = rng.normal(0, 0.1, rows).astype("<f4")
    write_safetensors(f"{folder}/model.safetensors", tensors)


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
