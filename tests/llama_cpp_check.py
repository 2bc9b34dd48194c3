"""Opt-in check with llama.cpp itself (llama-cpp-python 0.3.36): the original SmolLM2 GGUF and our unpruned
GGUF (converted by prunelab) generate the same greedy text, and a pruned GGUF with per-layer shapes (`deci`)
loads and generates. Run by tests/llama_cpp.sh, which writes the files first."""
import json
import sys

from llama_cpp import Llama

original, ours, pruned = sys.argv[1:4]
prompt = "The Python interpreter reads a line of code and"


def greedy(path, n=32):
    llm = Llama(model_path=path, n_ctx=256, verbose=False, seed=0)
    out = llm(prompt, max_tokens=n, temperature=0.0, top_k=1)
    return out["choices"][0]["text"]


a, b, c = greedy(original), greedy(ours), greedy(pruned)
print(json.dumps({"original": a, "ours": b, "pruned": c}, indent=1))
assert a == b, "our GGUF generates different greedy text than the original"
assert len(c.strip()) > 0, "the pruned GGUF generated nothing"
print("llama.cpp: same greedy text for the unpruned model; the pruned (deci) model generates")
