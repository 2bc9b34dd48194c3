"""What the llama.cpp checks share (llama-cpp-python 0.3.36): the same 128-token windows of a text, tokenized by
llama.cpp, and the mean next-token NLL over them computed by llama.cpp and by `prunelab eval --ids`."""
import json
import subprocess
import tempfile

import numpy as np
from llama_cpp import Llama

SEQ, WINDOWS = 128, 4


def windows(gguf, text):
    """The first WINDOWS windows of SEQ tokens of `text`, tokenized by llama.cpp with `gguf`'s vocabulary, and
    a JSON file holding them (for `prunelab eval --ids`)."""
    tokens = Llama(model_path=gguf, n_ctx=SEQ, vocab_only=True, verbose=False).tokenize(
        open(text, "rb").read(), add_bos=False)
    ws = [tokens[i * SEQ:(i + 1) * SEQ] for i in range(WINDOWS)]
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(ws, f)
    return ws, f.name


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


def prunelab_nll(binary, path, ids_file):
    out = subprocess.run([binary, "eval", path, "--ids", ids_file, "--seq-len", str(SEQ), "--json"],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)["mean_nll"]
