"""Opt-in check with llama.cpp itself (llama-cpp-python 0.3.36): rotary scaling written to GGUF (LLaMA-3 as
`rope_freqs.weight`, linear and YaRN as `rope.scaling.*` metadata), q/k/v biases (as `llama`, `deci`, and read
from `qwen2`) and a depth-pruned stack mean to llama.cpp what they mean to prunelab. Run by tests/llama_cpp.sh with prunelab's binary, a
text, the unscaled f32 GGUF of one model and `NAME=PATH` for each changed one (pruned ones too, named
"..., pruned ..."): both tools compute the mean NLL of the same 128-token windows; they must agree on each model,
and each unpruned change must move it far more than they differ."""
import json
import subprocess
import sys
import tempfile

import numpy as np
from llama_cpp import Llama

binary, text, unscaled = sys.argv[1:4]
models = [("unscaled", unscaled)] + [tuple(arg.split("=", 1)) for arg in sys.argv[4:]]
SEQ, WINDOWS = 128, 4


def llama_cpp_nll(path, windows):
    llm = Llama(model_path=path, n_ctx=SEQ, logits_all=True, verbose=False)
    total = 0.0
    for w in windows:
        llm.reset()
        llm.eval(w)
        logits = np.asarray(llm.scores[: SEQ - 1], dtype=np.float64)
        logz = np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1)) + logits.max(1)
        total += float((logz - logits[np.arange(SEQ - 1), w[1:]]).sum())
    return total / (len(windows) * (SEQ - 1))


def prunelab_nll(path, ids_file):
    out = subprocess.run([binary, "eval", path, "--ids", ids_file, "--seq-len", str(SEQ), "--json"],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)["mean_nll"]


tokens = Llama(model_path=unscaled, n_ctx=SEQ, vocab_only=True, verbose=False).tokenize(
    open(text, "rb").read(), add_bos=False)
windows = [tokens[i * SEQ:(i + 1) * SEQ] for i in range(WINDOWS)]
with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
    json.dump(windows, f)
result = {name: {"llama.cpp": llama_cpp_nll(path, windows), "prunelab": prunelab_nll(path, f.name)}
          for name, path in models}
print(json.dumps(result, indent=1))
gap = max(abs(r["llama.cpp"] - r["prunelab"]) for r in result.values())
assert gap <= 1e-3 * result["unscaled"]["prunelab"], f"llama.cpp and prunelab differ by {gap} nats"
for name, r in result.items():
    if name != "unscaled" and "pruned" not in name:
        effect = abs(r["prunelab"] - result["unscaled"]["prunelab"])
        assert effect >= 20 * gap, f"{name}: the change moves the NLL by {effect} nats only (tools differ by {gap})"
        print(f"llama.cpp: {name} as prunelab means it (tools within {gap:.2e} nats; the change moves {effect:.3f})")
