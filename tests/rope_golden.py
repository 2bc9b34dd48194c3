"""Writes tests/data/rope_golden.json: what HF transformers computes on the tiny-gqa fixture with each rotary
scaling (loss over 300 tokens, past max_position_embeddings = 256, and the logits at a few positions).
Needs torch and transformers (5.24 made the file): `python tests/rope_golden.py [SHARED_DIR]`."""
import json
import os
import shutil
import sys
import tempfile

import numpy as np
import torch
import transformers
from transformers import LlamaForCausalLM

here = os.path.dirname(os.path.abspath(__file__))
shared = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "..", "..", "shared")
fixture = os.path.join(shared, "fixtures", "tiny-gqa")
SEQ, POSITIONS = 300, [0, 40, 128, 255, 299]
ids = np.random.default_rng(7).integers(0, 128, SEQ).tolist()

# (name, extra top-level keys, the rotary object and which key holds it)
CASES = [
    ("default", {}, "rope_parameters", {"rope_type": "default", "rope_theta": 100000.0}),
    ("linear", {}, "rope_scaling", {"type": "linear", "factor": 2.0}),
    ("dynamic", {}, "rope_parameters", {"rope_type": "dynamic", "rope_theta": 100000.0, "factor": 3.0}),
    ("llama3", {}, "rope_parameters", {"rope_type": "llama3", "rope_theta": 100000.0, "factor": 8.0,
                                       "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                       "original_max_position_embeddings": 64}),
    ("yarn", {}, "rope_parameters", {"rope_type": "yarn", "rope_theta": 100000.0, "factor": 4.0,
                                     "original_max_position_embeddings": 64}),
    ("yarn-options", {}, "rope_scaling", {"type": "yarn", "factor": 8.0, "original_max_position_embeddings": 128,
                                          "beta_fast": 16, "beta_slow": 2, "truncate": False,
                                          "attention_factor": 1.25}),
    ("yarn-mscale", {"original_max_position_embeddings": 32}, "rope_parameters",
     {"rope_type": "yarn", "rope_theta": 100000.0, "factor": None, "original_max_position_embeddings": 64,
      "mscale": 0.707, "mscale_all_dim": 1.0}),
]

out = {"fixture": "tiny-gqa", "transformers": transformers.__version__, "input_ids": ids,
       "positions": POSITIONS, "cases": []}
base = json.load(open(os.path.join(fixture, "config.json")))
for name, top, key, rope in CASES:
    cfg = dict(base)
    cfg.pop("rope_parameters", None)
    cfg["rope_theta"] = 100000.0
    cfg.update(top)
    cfg[key] = rope
    with tempfile.TemporaryDirectory() as d:
        json.dump(cfg, open(os.path.join(d, "config.json"), "w"))
        shutil.copy(os.path.join(fixture, "model.safetensors"), d)
        model = LlamaForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager").eval()
    x = torch.tensor([ids])
    with torch.no_grad():
        res = model(x, labels=x)
    out["cases"].append({
        "name": name,
        "config": {**top, key: rope},
        "loss": res.loss.item(),
        # After the forward: dynamic NTK has grown its frequencies for the 300 positions.
        "inv_freq": model.model.rotary_emb.inv_freq.tolist(),
        "attention_scaling": float(model.model.rotary_emb.attention_scaling),
        "logits": res.logits[0, POSITIONS].tolist(),
    })
    print(name, res.loss.item(), out["cases"][-1]["attention_scaling"], out["cases"][-1]["inv_freq"])
json.dump(out, open(os.path.join(here, "data", "rope_golden.json"), "w"))
