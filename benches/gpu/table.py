#!/usr/bin/env python3
"""The table of benches/gpu/run.sh: per recipe, prunelab (cold: kernel compilation, and with autotune its tuning,
included; warm: cached) and PyTorch side by side — stage times, total wall time, peak GPU memory — with the ratios
ours / PyTorch, and the training-free goal's memory bound. Usage: PRECISION=bf16|f32 table.py OUT"""
import json
import os
import sys

out = sys.argv[1]
runs = {r["name"]: r for r in map(json.loads, open(os.path.join(out, "runs.jsonl")))}
cfg = json.load(open(os.path.join(out, "model-config.json")))


def load(name):
    try:
        return json.load(open(os.path.join(out, name + ".json")))
    except (OSError, ValueError):
        return None


def stages(name, doc):
    if doc is None:
        return "failed (see %s.err)" % name
    if "stages" in doc:  # PyTorch
        items = doc["stages"].items()
    else:  # prunelab's report.json
        items = [(t["stage"], t["seconds"]) for t in doc.get("timings", [])]
    return ", ".join("%s %.1f s" % (k, v) for k, v in items)


def gib(mib):
    return None if mib is None else mib / 1024


h, inter, layers = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
heads, kv = cfg["num_attention_heads"], cfg.get("num_key_value_heads", cfg["num_attention_heads"])
d = cfg.get("head_dim", h // heads)
layer_params = h * d * (2 * heads + 2 * kv) + 3 * h * inter + 2 * h
embed_params = cfg["vocab_size"] * h * (1 if cfg.get("tie_word_embeddings") else 2)
total_params = layers * layer_params + embed_params + h
print("synthetic %s-shaped model: %.2fB parameters; one layer %.3f GiB in bf16 (%.3f in f32), embeddings + head "
      "%.3f GiB in bf16" % (cfg.get("model_type", "llama"), total_params / 1e9, layer_params * 2 / 2**30,
                            layer_params * 4 / 2**30, embed_params * 2 / 2**30))
if os.path.exists(os.path.join(out, "build.txt")):
    print(open(os.path.join(out, "build.txt")).read().strip())
synth = runs.get("synth")
if synth:
    print("synth (write the bf16 checkpoint): %.1f s" % synth["wall"])
print()
print("| recipe | tool | stages | total | peak GPU | ours / PyTorch (time, memory) |")
print("|---|---|---|---|---|---|")
for recipe in ["taylor-first", "flap-ls"]:
    theirs = runs.get("pytorch-" + recipe)
    for tool, name in [("prunelab", "ours-" + recipe), ("prunelab, warm", "ours-%s-warm" % recipe),
                       ("prunelab, autotune", "ours-%s-autotune" % recipe),
                       ("prunelab, autotune, warm", "ours-%s-autotune-warm" % recipe),
                       ("prunelab, autotune + fusion", "ours-%s-fused" % recipe),
                       ("prunelab, autotune + fusion, warm", "ours-%s-fused-warm" % recipe),
                       ("PyTorch", "pytorch-" + recipe)]:
        run = runs.get(name)
        if run is None:
            continue
        ours = run if tool != "PyTorch" else None
        peak = gib(run["peak_mib"])
        ratio = ""
        if ours and theirs and ours["rc"] == 0 and theirs["rc"] == 0:
            t = ours["wall"] / theirs["wall"]
            m = (ours["peak_mib"] / theirs["peak_mib"]) if ours["peak_mib"] and theirs["peak_mib"] else None
            ratio = "%.2f×, %s" % (t, "%.2f×" % m if m else "n/a")
        print("| %s | %s | %s | %.1f s | %s | %s |" % (
            recipe, tool, stages(name, load(name)), run["wall"], "n/a" if peak is None else "%.1f GiB" % peak, ratio))
fl = runs.get("ours-flap-ls")
if fl and fl["peak_mib"] is not None:
    precision = os.environ.get("PRECISION", "bf16")
    unit = (layer_params + embed_params) * (2 if precision == "bf16" else 4) / 2**30  # in prunelab's device type
    print()
    print("training-free goal: streamed peak ≤ 1.3 × (one layer + embeddings, %s: %.2f GiB) = %.2f GiB; "
          "ours %.2f GiB = %.2f × (PyTorch holds all bf16 weights: %.1f GiB)"
          % (precision, unit, 1.3 * unit, gib(fl["peak_mib"]), gib(fl["peak_mib"]) / unit, total_params * 2 / 2**30))
