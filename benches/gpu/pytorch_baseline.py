#!/usr/bin/env python3
"""The PyTorch baseline of benches/gpu_7b.sh: prunelab's two 7B pipelines written plainly in PyTorch, run on the
same checkpoint, calibration ids and GPU, from safetensors on disk to safetensors on disk.

  taylor-first  LLM-Pruner's `param_first`: one backward pass over the calibration windows, |w·g| summed over
                each KV group (its query heads' q rows and o columns, its k and v rows) and each MLP channel
                (gate and up rows, down column); the lowest RATIO of each pruned layer removed.
  flap-ls       sequential, no gradients: per pruned layer, FLAP's score σ²_j·‖W[:,j]‖² on the inputs of o_proj
                (summed per KV group) and down_proj, then the least-squares refit of the kept columns,
                W'_K = W_K + W_P G_PK (G_KK + λI)⁻¹ with λ = 0.01·mean(diag G) (Cholesky on the device, f32).

Usage: pytorch_baseline.py MODEL_DIR IDS.json OUT_DIR --recipe taylor-first|flap-ls [--ratio 0.25]
       [--layers 4..30] [--device cuda] [--dtype bf16]
Prints one JSON line: stage times, total, peak device memory, parameters before and after.
"""
import argparse
import glob
import json
import os
import time

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file


def rms_norm(x, w, eps):
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype) * w


def rotary(cfg, seq, device, dtype):
    d = cfg["head_dim"]
    inv = 1.0 / (cfg.get("rope_theta", 10000.0) ** (torch.arange(0, d, 2, device=device).float() / d))
    ang = torch.outer(torch.arange(seq, device=device).float(), inv)
    ang = torch.cat([ang, ang], -1)
    return ang.cos().to(dtype), ang.sin().to(dtype)


def rope(x, cos, sin):
    h = x.shape[-1] // 2
    return x * cos + torch.cat([-x[..., h:], x[..., :h]], -1) * sin


class Model:
    """A LLaMA as a dict of HF-named tensors; per-layer widths come from the tensors, so pruned layers work."""

    def __init__(self, directory, device, dtype):
        self.cfg = json.load(open(os.path.join(directory, "config.json")))
        self.cfg.setdefault("head_dim", self.cfg["hidden_size"] // self.cfg["num_attention_heads"])
        self.w = {}
        for f in sorted(glob.glob(os.path.join(directory, "*.safetensors"))):
            for k, v in load_file(f, device=device).items():
                self.w[k] = v.to(dtype)
        self.eps = self.cfg["rms_norm_eps"]

    def p(self, l, name):
        return self.w[f"model.layers.{l}.{name}.weight"]

    def attention_heads(self, l, x, cos, sin):
        """The attention's per-head outputs before o_proj: [batch, seq, heads·head_dim]."""
        b, s, _ = x.shape
        d = self.cfg["head_dim"]
        q = (x @ self.p(l, "self_attn.q_proj").T).view(b, s, -1, d).transpose(1, 2)
        k = (x @ self.p(l, "self_attn.k_proj").T).view(b, s, -1, d).transpose(1, 2)
        v = (x @ self.p(l, "self_attn.v_proj").T).view(b, s, -1, d).transpose(1, 2)
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        rep = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
        if hasattr(F, "scaled_dot_product_attention"):
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:  # torch < 2.0
            att = (q @ k.transpose(-1, -2)) / d**0.5
            att = att.masked_fill(torch.ones(s, s, dtype=torch.bool, device=x.device).triu(1), float("-inf"))
            a = att.float().softmax(-1).to(q.dtype) @ v
        return a.transpose(1, 2).reshape(b, s, -1)

    def mlp_hidden(self, l, x):
        return F.silu(x @ self.p(l, "mlp.gate_proj").T) * (x @ self.p(l, "mlp.up_proj").T)

    def layer(self, l, h, cos, sin):
        x = rms_norm(h, self.p(l, "input_layernorm"), self.eps)
        h = h + self.attention_heads(l, x, cos, sin) @ self.p(l, "self_attn.o_proj").T
        x = rms_norm(h, self.p(l, "post_attention_layernorm"), self.eps)
        return h + self.mlp_hidden(l, x) @ self.p(l, "mlp.down_proj").T

    def logits(self, ids):
        cos, sin = rotary(self.cfg, ids.shape[1], ids.device, self.w["model.embed_tokens.weight"].dtype)
        h = self.w["model.embed_tokens.weight"][ids]
        for l in range(self.cfg["num_hidden_layers"]):
            h = self.layer(l, h, cos, sin)
        h = rms_norm(h, self.w["model.norm.weight"], self.eps)
        return h @ self.w.get("lm_head.weight", self.w["model.embed_tokens.weight"]).T

    def groups(self, l):
        """(query heads per KV group, number of KV groups) of layer l."""
        d = self.cfg["head_dim"]
        nq, nkv = self.p(l, "self_attn.q_proj").shape[0] // d, self.p(l, "self_attn.k_proj").shape[0] // d
        return nq // nkv, nkv

    def slice_layer(self, l, kv_keep, mlp_keep):
        """Keeps KV groups kv_keep and MLP channels mlp_keep (sorted index tensors) of layer l."""
        d = self.cfg["head_dim"]
        rep, _ = self.groups(l)
        kv_rows = (kv_keep[:, None] * d + torch.arange(d, device=kv_keep.device)).flatten()
        q_heads = (kv_keep[:, None] * rep + torch.arange(rep, device=kv_keep.device)).flatten()
        q_rows = (q_heads[:, None] * d + torch.arange(d, device=kv_keep.device)).flatten()
        pre = f"model.layers.{l}."
        for name, idx, dim in [("self_attn.q_proj", q_rows, 0), ("self_attn.k_proj", kv_rows, 0),
                               ("self_attn.v_proj", kv_rows, 0), ("self_attn.o_proj", q_rows, 1),
                               ("mlp.gate_proj", mlp_keep, 0), ("mlp.up_proj", mlp_keep, 0),
                               ("mlp.down_proj", mlp_keep, 1)]:
            key = pre + name + ".weight"
            self.w[key] = self.w[key].index_select(dim, idx).contiguous()
        return q_rows

    def params(self):
        return sum(v.numel() for v in self.w.values())

    def save(self, out, max_shard=5 << 30):
        os.makedirs(out, exist_ok=True)
        shard, size, n = {}, 0, 0
        for k in sorted(self.w):
            t = self.w[k]
            if size and size + t.numel() * t.element_size() > max_shard:
                save_file(shard, os.path.join(out, f"model-{n:05d}.safetensors"))
                shard, size, n = {}, 0, n + 1
            shard[k] = t.contiguous()
            size += t.numel() * t.element_size()
        save_file(shard, os.path.join(out, f"model-{n:05d}.safetensors"))


def keep_top(scores, ratio):
    n = scores.numel()
    return scores.topk(n - int(n * ratio)).indices.sort().values


def taylor_first(m, ids, layers, ratio, stages, sync):
    names = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
             "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
    params = [m.p(l, n) for l in layers for n in names]
    for t in params:
        t.requires_grad_(True)
    t0 = time.perf_counter()
    logits = m.logits(ids)
    loss = F.cross_entropy(logits[:, :-1].float().flatten(0, 1), ids[:, 1:].flatten())
    sync()
    stages["forward"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    loss.backward()
    del logits, loss
    sync()
    stages["backward"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    d = m.cfg["head_dim"]
    with torch.no_grad():
        for l in layers:
            imp = {n: (m.p(l, n) * m.p(l, n).grad).abs().float() for n in names}
            rep, nkv = m.groups(l)
            kv = (imp["self_attn.k_proj"].sum(1) + imp["self_attn.v_proj"].sum(1)).view(nkv, d).sum(1)
            kv += imp["self_attn.q_proj"].sum(1).view(nkv, rep * d).sum(1)
            kv += imp["self_attn.o_proj"].sum(0).view(nkv, rep * d).sum(1)
            ch = imp["mlp.gate_proj"].sum(1) + imp["mlp.up_proj"].sum(1) + imp["mlp.down_proj"].sum(0)
            del imp
            for n in names:
                m.p(l, n).grad = None
                m.p(l, n).requires_grad_(False)
            m.slice_layer(l, keep_top(kv, ratio), keep_top(ch, ratio))
    sync()
    stages["score+slice"] = time.perf_counter() - t0


def ls_refit(w, gram, keep, lam_scale=0.01):
    """W'_K = W_K + W_P G_PK (G_KK + λI)⁻¹ for w [d_out, n] and the input Gram matrix gram [n, n] (f32)."""
    mask = torch.ones(w.shape[1], dtype=torch.bool, device=w.device)
    mask[keep] = False
    pruned = mask.nonzero().flatten()
    g_kk = gram[keep][:, keep]
    g_kk.diagonal().add_(lam_scale * gram.diagonal().mean())
    rhs = gram[keep][:, pruned] @ w[:, pruned].float().T  # [k, d_out]
    chol = torch.linalg.cholesky(g_kk)
    delta = torch.cholesky_solve(rhs, chol)  # [k, d_out]
    return (w[:, keep].float() + delta.T).to(w.dtype)


def flap_ls(m, ids, layers, ratio, stages, sync):
    t0 = time.perf_counter()
    d = m.cfg["head_dim"]
    with torch.no_grad():
        cos, sin = rotary(m.cfg, ids.shape[1], ids.device, m.w["model.embed_tokens.weight"].dtype)
        h = m.w["model.embed_tokens.weight"][ids]
        for l in range(layers.start):
            h = m.layer(l, h, cos, sin)
        for l in layers:
            x = rms_norm(h, m.p(l, "input_layernorm"), m.eps)
            a = m.attention_heads(l, x, cos, sin).flatten(0, 1).float()  # [tokens, heads·d]
            gram, mean = a.T @ a, a.mean(0)
            var = gram.diagonal() / a.shape[0] - mean**2
            o = m.p(l, "self_attn.o_proj")
            col = var * o.float().pow(2).sum(0)
            rep, nkv = m.groups(l)
            kv_keep = keep_top(col.view(nkv, rep * d).sum(1), ratio)
            q_heads = (kv_keep[:, None] * rep + torch.arange(rep, device=h.device)).flatten()
            cols = (q_heads[:, None] * d + torch.arange(d, device=h.device)).flatten()
            o_new = ls_refit(o, gram, cols)
            h = h + (a[:, cols] @ o_new.float().T).view_as(h).to(h.dtype)
            del a, gram
            x = rms_norm(h, m.p(l, "post_attention_layernorm"), m.eps)
            z = m.mlp_hidden(l, x).flatten(0, 1).float()  # [tokens, intermediate]
            gram, mean = z.T @ z, z.mean(0)
            var = gram.diagonal() / z.shape[0] - mean**2
            down = m.p(l, "mlp.down_proj")
            ch_keep = keep_top(var * down.float().pow(2).sum(0), ratio)
            down_new = ls_refit(down, gram, ch_keep)
            h = h + (z[:, ch_keep] @ down_new.float().T).view_as(h).to(h.dtype)
            del z, gram
            m.slice_layer(l, kv_keep, ch_keep)
            m.w[f"model.layers.{l}.self_attn.o_proj.weight"] = o_new
            m.w[f"model.layers.{l}.mlp.down_proj.weight"] = down_new
    sync()
    stages["sequential"] = time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("ids")
    ap.add_argument("out")
    ap.add_argument("--recipe", choices=["taylor-first", "flap-ls"], required=True)
    ap.add_argument("--ratio", type=float, default=0.25)
    ap.add_argument("--layers", default="4..30")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "f16", "f32"])
    args = ap.parse_args()
    dtype = {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}[args.dtype]
    cuda = args.device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    start, end = map(int, args.layers.split(".."))
    stages = {}
    t_all = time.perf_counter()
    t0 = time.perf_counter()
    m = Model(args.model, args.device, dtype)
    ids = torch.tensor(json.load(open(args.ids)), device=args.device)
    sync()
    stages["load"] = time.perf_counter() - t0
    before = m.params()
    (taylor_first if args.recipe == "taylor-first" else flap_ls)(m, ids, range(start, end), args.ratio, stages, sync)
    t0 = time.perf_counter()
    m.save(args.out)
    stages["write"] = time.perf_counter() - t0
    print(json.dumps({
        "tool": "pytorch", "recipe": args.recipe, "stages": stages, "total": time.perf_counter() - t_all,
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
        "params_before": before, "params_after": m.params(), "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
