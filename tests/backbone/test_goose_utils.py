"""Helpers of the Goose (RWKV-7) tests: random weights of a realistic scale, tiny models, BlinkDL's
runtime loaded with RWKV_V7_ON=1, and an independent step-by-step reference of the whole model
written from the runtime's formulas (one token at a time, plain tensors, fp64)."""

from __future__ import annotations

import importlib.util
import math
import os
from types import ModuleType

import torch
import torch.nn.functional as F

from rwkv_mm.backbone import RWKVConfig, build_backbone


@torch.no_grad()
def randomize_goose_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every parameter of a Goose model (or encoder) random, at a scale where every term matters
    (RWKV-LM's init zeroes the output projections and the first LoRA matrices)."""
    g = torch.Generator().manual_seed(seed)

    def uniform(p, lo, hi):
        p.copy_(torch.rand(p.shape, generator=g) * (hi - lo) + lo)

    def normal(p, std, mean=0.0):
        p.copy_(torch.randn(p.shape, generator=g) * std + mean)

    for name, p in model.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        if leaf.startswith("x_"):  # token-shift mixes
            uniform(p, 0.0, 1.0)
        elif leaf == "w0":
            uniform(p, -4.0, 2.0)
        elif leaf in ("a0", "v0"):
            uniform(p, -1.0, 1.0)
        elif leaf in ("w1", "a1", "v1", "g1"):
            normal(p, 0.5 / math.sqrt(p.shape[0]))
        elif leaf in ("w2", "a2", "v2"):
            normal(p, 0.3)
        elif leaf == "g2":
            normal(p, 1.0 / math.sqrt(p.shape[0]))
        elif leaf == "k_k":
            uniform(p, 0.5, 1.0)
        elif leaf == "k_a":
            uniform(p, 0.5, 1.5)
        elif leaf == "r_k":
            normal(p, 0.5)
        elif name.startswith("emb."):
            normal(p, 1.0)
        elif leaf == "weight" and p.dim() == 1:  # LayerNorm / GroupNorm
            normal(p, 0.1, mean=1.0)
        elif leaf == "bias":
            normal(p, 0.1)
        elif p.dim() == 2:
            normal(p, 1.0 / math.sqrt(p.shape[1]))
        else:
            raise AssertionError(f"randomize_goose_: no rule for {name} {tuple(p.shape)}")
    return model


def tiny_goose(n_layer: int = 3, n_embd: int = 64, head_size: int = 16, vocab_size: int = 300,
               seed: int = 0, **kwargs) -> torch.nn.Module:
    """A small randomly weighted Goose language model (eval mode)."""
    torch.manual_seed(seed)
    config = RWKVConfig(version="7", n_layer=n_layer, n_embd=n_embd, vocab_size=vocab_size,
                        head_size=head_size, **kwargs)
    return randomize_goose_(build_backbone(config), seed).eval()


_ENV = ("RWKV_V7_ON", "RWKV_DE_VERSION", "RWKV_CUDA_ON", "RWKV_JIT_ON")


def load_runtime_v7() -> ModuleType:
    """BlinkDL's `rwkv.model` with RWKV_V7_ON=1 (read when the module runs), as a module of its
    own: a plain `import rwkv.model` elsewhere in the session keeps its v4-v6 class. The
    environment and the TorchScript autocast switch the module flips are restored afterwards."""
    spec = importlib.util.find_spec("rwkv.model")
    if spec is None or spec.origin is None:
        raise ImportError("the `rwkv` runtime is not installed")
    saved = {k: os.environ.get(k) for k in _ENV}
    autocast = torch._C._jit_set_autocast_mode(True)
    torch._C._jit_set_autocast_mode(autocast)
    os.environ["RWKV_V7_ON"] = "1"
    for k in ("RWKV_DE_VERSION", "RWKV_CUDA_ON"):
        os.environ.pop(k, None)
    try:
        v7_spec = importlib.util.spec_from_file_location("_rwkv_runtime_v7", spec.origin)
        module = importlib.util.module_from_spec(v7_spec)
        v7_spec.loader.exec_module(module)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        torch._C._jit_set_autocast_mode(autocast)
    return module


# ----------------------------------------------------------------------------- step reference
def _lerp(x, prev, mu):
    return x + (prev - x) * mu.reshape(-1)


def reference_forward(sd: dict[str, torch.Tensor], tokens: list[int], n_head: int,
                      order: list[list[int]] | None = None) -> torch.Tensor:
    """Logits [T, V] of an x070 state dict, fp64, one token at a time from zero state, written
    from the runtime's formulas (`RWKV_x070_TMix_one`, `RWKV_x070_CMix_one`). `order[i]` (a
    permutation of the positions) runs layer i over the positions in that order, each position
    keeping its own layer-0 value v_first."""
    z = {k: v.double() for k, v in sd.items()}
    D = z["emb.weight"].shape[1]
    H, N, T = n_head, D // n_head, len(tokens)
    L = 1 + max(int(k.split(".")[1]) for k in z if k.startswith("blocks."))
    x = F.layer_norm(z["emb.weight"][tokens], (D,), z["blocks.0.ln0.weight"], z["blocks.0.ln0.bias"])
    v_first = torch.zeros(T, D, dtype=torch.float64)
    for i in range(L):
        att, ffn = f"blocks.{i}.att.", f"blocks.{i}.ffn."
        seq = order[i] if order is not None and order[i] is not None else list(range(T))
        out = torch.zeros_like(x)
        xprev, S = torch.zeros(D, dtype=torch.float64), torch.zeros(H, N, N, dtype=torch.float64)
        xn = F.layer_norm(x, (D,), z[f"blocks.{i}.ln1.weight"], z[f"blocks.{i}.ln1.bias"])
        for t in seq:
            h = xn[t]
            xr, xw, xk, xv, xa, xg = (_lerp(h, xprev, z[att + f"x_{c}"]) for c in "rwkvag")
            xprev = h
            r, k, v = xr @ z[att + "receptance.weight"].T, xk @ z[att + "key.weight"].T, xv @ z[att + "value.weight"].T
            w = torch.exp(-math.exp(-0.5) * torch.sigmoid(z[att + "w0"].reshape(-1) + torch.tanh(xw @ z[att + "w1"]) @ z[att + "w2"]))
            a = torch.sigmoid(z[att + "a0"].reshape(-1) + (xa @ z[att + "a1"]) @ z[att + "a2"])
            g = torch.sigmoid(xg @ z[att + "g1"]) @ z[att + "g2"]
            kk = F.normalize((k * z[att + "k_k"].reshape(-1)).view(H, N), dim=-1).view(D)
            k = k * (1 + (a - 1) * z[att + "k_a"].reshape(-1))
            if i == 0:
                v_first[t] = v
            else:
                v = v + (v_first[t] - v) * torch.sigmoid(z[att + "v0"].reshape(-1) + (xv @ z[att + "v1"]) @ z[att + "v2"])
            ab = (-kk).view(H, N, 1) @ (kk * a).view(H, 1, N)
            S = S * w.view(H, 1, N) + S @ ab + v.view(H, N, 1) @ k.view(H, 1, N)  # [H, value, key]
            y = (S @ r.view(H, N, 1)).view(1, D)
            y = F.group_norm(y, H, z[att + "ln_x.weight"], z[att + "ln_x.bias"], eps=64e-5).view(D)
            y = y + ((r * k * z[att + "r_k"].reshape(-1)).view(H, N).sum(-1, keepdim=True) * v.view(H, N)).view(D)
            out[t] = (y * g) @ z[att + "output.weight"].T
        x = x + out
        xn = F.layer_norm(x, (D,), z[f"blocks.{i}.ln2.weight"], z[f"blocks.{i}.ln2.bias"])
        out = torch.zeros_like(x)
        xprev = torch.zeros(D, dtype=torch.float64)
        for t in seq:
            kx = _lerp(xn[t], xprev, z[ffn + "x_k"])
            xprev = xn[t]
            out[t] = torch.relu(kx @ z[ffn + "key.weight"].T) ** 2 @ z[ffn + "value.weight"].T
        x = x + out
    x = F.layer_norm(x, (D,), z["ln_out.weight"], z["ln_out.bias"])
    return x @ z["head.weight"].T
