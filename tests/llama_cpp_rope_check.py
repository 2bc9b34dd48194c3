"""Opt-in check with llama.cpp itself (llama-cpp-python 0.3.36): rotary scaling written to GGUF (LLaMA-3 as
`rope_freqs.weight`, linear and YaRN as `rope.scaling.*` metadata), q/k/v biases (as `llama`, `deci`, and read
from `qwen2`) and a depth-pruned stack mean to llama.cpp what they mean to prunelab. Run by tests/llama_cpp.sh with prunelab's binary, a
text, the unscaled f32 GGUF of one model and `NAME=PATH` for each changed one (pruned ones too, named
"..., pruned ..."): both tools compute the mean NLL of the same 128-token windows; they must agree on each model,
and each unpruned change must move it far more than they differ."""
import json
import sys

from llama_cpp_nll import llama_cpp_nll, prunelab_nll, windows

binary, text, unscaled = sys.argv[1:4]
models = [("unscaled", unscaled)] + [tuple(arg.split("=", 1)) for arg in sys.argv[4:]]
ws, ids = windows(unscaled, text)
result = {name: {"llama.cpp": llama_cpp_nll(path, ws), "prunelab": prunelab_nll(binary, path, ids)}
          for name, path in models}
print(json.dumps(result, indent=1))
gap = max(abs(r["llama.cpp"] - r["prunelab"]) for r in result.values())
assert gap <= 1e-3 * result["unscaled"]["prunelab"], f"llama.cpp and prunelab differ by {gap} nats"
for name, r in result.items():
    if name != "unscaled" and "pruned" not in name:
        effect = abs(r["prunelab"] - result["unscaled"]["prunelab"])
        assert effect >= 20 * gap, f"{name}: the change moves the NLL by {effect} nats only (tools differ by {gap})"
        print(f"llama.cpp: {name} as prunelab means it (tools within {gap:.2e} nats; the change moves {effect:.3f})")
