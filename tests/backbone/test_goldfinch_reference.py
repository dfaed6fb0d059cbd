"""GoldFinch against an independent reference written from the paper (arXiv 2407.12077, §3) and the
authors' published training code, not from `backbone/goldfinch/`.

Every other GoldFinch test compares the model with itself (cached vs full, chunked vs whole, saved
vs loaded), so a mistake made the same way on both sides passes them. Here the whole forward pass
is written a second time in plain fp32 torch, straight from the equations, reading only the
model's parameters (by their GoldFinch-code names):

- layers 0 .. s-1, s = int(2L/3), are Finch-C2: ddlerp token shift (LoRA slots r, k, v, w, v2),
  decay w_t = exp(-exp(ω + tanh(x A) B)), key scaled by (1 - w_t), no bonus (u = 0) and a second
  value v2 = W_v x_v2 + tanh(x_v2 A2) B2 added to the WKV output, one LayerNorm over D, no gate;
  the WKV is a step-by-step loop: y_t = r_t S_{t-1}, S_t = diag(w_t) S_{t-1} + k_tᵀ v_t;
- the compressed key cache is written from the output of layer s-1 (the last Finch-C2 layer):
  c_t = W_a x_t, key_t = rms_norm(W_b [x0_t; c_t]) with x0 = ln0(emb);
- layers s .. L-1 are GOLD: the query from the ddlerp-shifted input, keys from the decompressed
  cache, values from rms_norm(x0), each lerped toward its previous position (zero before the
  first) with a shared LoRA, plus a residual tanh LoRA, LayerNorms on q, k, v, causal softmax
  attention (scale 1/√N), LayerNorm and output projection;
- every layer has Finch's channel mix; pre-LN residual blocks, ln0, ln_out, head.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

from rwkv_mm.backbone import GoldFinch, RWKVConfig, build_backbone
from rwkv_test_utils import randomize_

P = dict[str, torch.Tensor]


# ---- the reference ------------------------------------------------------------------------------


def layer_norm(x: torch.Tensor, p: P, name: str, eps: float = 1e-5) -> torch.Tensor:
    """LayerNorm over the last dim with weight/bias `name.weight`, `name.bias`."""
    mean = x.mean(-1, keepdim=True)
    var = (x - mean).square().mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * p[f"{name}.weight"] + p[f"{name}.bias"]


def rms(x: torch.Tensor) -> torch.Tensor:
    """x / RMS(x) over the last dim (inputs here are never zero vectors)."""
    return x * torch.rsqrt(x.square().mean(-1, keepdim=True))


def linear(x: torch.Tensor, p: P, name: str) -> torch.Tensor:
    return x @ p[f"{name}.weight"].T


def previous(x: torch.Tensor) -> torch.Tensor:
    """x_{t-1} at every position t of x [B, T, D], zeros before the first."""
    return torch.cat((torch.zeros_like(x[:, :1]), x[:, :-1]), dim=1)


def channel_mix(x: torch.Tensor, p: P, pre: str) -> torch.Tensor:
    """Finch channel mix: σ(W_r x_r) ⊙ W_v ReLU(W_k x_k)², x_□ = x + (x_{t-1} - x)·μ_□."""
    dx = previous(x) - x
    xk = x + dx * p[f"{pre}.time_maa_k"]
    xr = x + dx * p[f"{pre}.time_maa_r"]
    return torch.sigmoid(linear(xr, p, f"{pre}.receptance")) * linear(
        torch.relu(linear(xk, p, f"{pre}.key")).square(), p, f"{pre}.value")


def finch_c2(x: torch.Tensor, p: P, pre: str, n_head: int) -> torch.Tensor:
    """Finch-C2 time mix of the normed input x [B, T, D] (paper §3.1)."""
    B, T, D = x.shape
    N = D // n_head
    dx = previous(x) - x
    xxx = x + dx * p[f"{pre}.time_maa_x"]
    w1, w2 = p[f"{pre}.time_maa_w1"], p[f"{pre}.time_maa_w2"]  # [D, 5R], [5, R, D]
    R = w2.shape[1]
    lora = torch.tanh(xxx @ w1)  # [B, T, 5R]
    mixed = {}
    for slot, g in enumerate(("r", "k", "v", "w", "v2")):
        m = lora[..., slot * R:(slot + 1) * R] @ w2[slot]
        mixed[g] = x + dx * (p[f"{pre}.time_maa_{g}"] + m)
    r = linear(mixed["r"], p, f"{pre}.receptance")
    k = linear(mixed["k"], p, f"{pre}.key")
    v = linear(mixed["v"], p, f"{pre}.value")
    xv2 = mixed["v2"]
    v2 = linear(xv2, p, f"{pre}.value") + torch.tanh(xv2 @ p[f"{pre}.time_value2_w1"]) @ p[f"{pre}.time_value2_w2"]
    omega = p[f"{pre}.time_decay"] + torch.tanh(mixed["w"] @ p[f"{pre}.time_decay_w1"]) @ p[f"{pre}.time_decay_w2"]
    w = torch.exp(-torch.exp(omega))  # per-step decay in (0, 1)
    k = k * (1 - w)
    r, k, v, w = (t.view(B, T, n_head, N) for t in (r, k, v, w))
    S = torch.zeros(B, n_head, N, N)  # [b, h, key, value]
    ys = []
    for t in range(T):  # u = 0: the current token reaches the output only through v2
        ys.append(torch.einsum("bhi,bhij->bhj", r[:, t], S))
        S = w[:, t, :, :, None] * S + k[:, t, :, :, None] * v[:, t, :, None, :]
    y = torch.stack(ys, dim=1).reshape(B, T, D)
    return linear(layer_norm(y + v2, p, f"{pre}.ln_x"), p, f"{pre}.output")


def rotate(x: torch.Tensor, base: float) -> torch.Tensor:
    """RoPE of x [B, H, T, N] at positions 0..T-1: channel pairs (2i, 2i+1) as complex numbers
    multiplied by exp(i·t·base^(-2i/N)) (the authors' complex-number form)."""
    B, H, T, N = x.shape
    freq = base ** -(torch.arange(0, N, 2, dtype=torch.float64) / N)
    angle = torch.outer(torch.arange(T, dtype=torch.float64), freq)
    rot = torch.polar(torch.ones_like(angle), angle).to(torch.complex64)  # [T, N/2]
    z = torch.view_as_complex(x.reshape(B, H, T, N // 2, 2).contiguous())
    return torch.view_as_real(z * rot).reshape(B, H, T, N)


def gold(x: torch.Tensor, keys: torch.Tensor, x0: torch.Tensor, p: P, pre: str, n_head: int,
         rope_base: float | None) -> torch.Tensor:
    """GOLD time mix (paper §3.2–3.3) of the normed input x [B, T, D], over the decompressed keys
    [B, T, D] and x0 = ln0(emb) [B, T, D] of every position."""
    B, T, D = x.shape
    N = D // n_head
    dx = previous(x) - x
    xxx = x + dx * p[f"{pre}.time_maa_x"]
    mq = torch.tanh(xxx @ p[f"{pre}.time_maa_q_w1"]) @ p[f"{pre}.time_maa_q_w2"]
    q = layer_norm(linear(x + dx * (p[f"{pre}.time_maa_q"] + mq), p, f"{pre}.query"), p, f"{pre}.ln_q")

    xo = rms(x0)
    dxo = previous(xo) - xo
    lora = torch.tanh((xo + dxo * p[f"{pre}.time_maa_v_cache"]) @ p[f"{pre}.time_maa_kv_w1"])
    w2 = p[f"{pre}.time_maa_kv_w2"]  # [2, R, D]
    R = w2.shape[1]
    mk, mv = lora[..., :R] @ w2[0], lora[..., R:] @ w2[1]
    k = keys + (previous(keys) - keys) * (p[f"{pre}.time_maa_k"] + mk)
    v = xo + dxo * (p[f"{pre}.time_maa_v"] + mv)
    k = k + torch.tanh(k @ p[f"{pre}.time_key_w1"]) @ p[f"{pre}.time_key_w2"]
    v = v + torch.tanh(v @ p[f"{pre}.time_value_w1"]) @ p[f"{pre}.time_value_w2"]
    k, v = layer_norm(k, p, f"{pre}.ln_k"), layer_norm(v, p, f"{pre}.ln_v")

    q, k, v = (t.view(B, T, n_head, N).transpose(1, 2) for t in (q, k, v))  # [B, H, T, N]
    if rope_base is not None:
        q, k = rotate(q, rope_base), rotate(k, rope_base)
    scores = q @ k.transpose(-1, -2) / math.sqrt(N)  # [B, H, T, T]
    future = torch.ones(T, T, dtype=torch.bool).triu(1)
    att = torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1)
    y = (att @ v).transpose(1, 2).reshape(B, T, D)
    return linear(layer_norm(y, p, f"{pre}.ln_x"), p, f"{pre}.output")


def reference_forward(p: P, tokens: torch.Tensor, n_layer: int, n_head: int,
                      rope_base: float | None = None) -> dict[str, torch.Tensor]:
    """The paper's GoldFinch forward pass. Returns logits [B, T, V], the compressed cache
    c [B, T, Dc], the decompressed keys [B, T, D] and the cache layer's output x [B, T, D]."""
    s = int(2 * n_layer / 3)  # Finch-C2 layers below, GOLD layers from s on
    x0 = layer_norm(p["emb.weight"][tokens], p, "blocks.0.ln0")
    x, out = x0, {}
    for i in range(n_layer):
        pre = f"blocks.{i}"
        h = layer_norm(x, p, f"{pre}.ln1")
        if i < s:
            x = x + finch_c2(h, p, f"{pre}.att", n_head)
        else:
            x = x + gold(h, out["keys"], x0, p, f"{pre}.att", n_head, rope_base)
        x = x + channel_mix(layer_norm(x, p, f"{pre}.ln2"), p, f"{pre}.ffn")
        if i == s - 1:  # the cache is written once, from the last Finch-C2 layer's output
            out["cache_layer_output"] = x
            out["cache"] = linear(x, p, "w_kv_cache_a")
            out["keys"] = rms(linear(torch.cat((x0, out["cache"]), dim=-1), p, "w_kv_cache_b"))
    out["logits"] = linear(layer_norm(x, p, "ln_out"), p, "head")
    return out


# ---- the model under test -----------------------------------------------------------------------


def random_goldfinch(n_layer: int = 5, rope_base: float | None = None, seed: int = 0) -> GoldFinch:
    """A small GoldFinch with random weights of a realistic scale (every LoRA non-zero). Five
    layers: s = 3 Finch-C2 layers, so 'the layer before the cache layer' exists too."""
    torch.manual_seed(seed)
    config = RWKVConfig(version="goldfinch", n_layer=n_layer, n_embd=64, head_size=16,
                        vocab_size=97, rope_base=rope_base)
    return randomize_(build_backbone(config), seed).eval()


def params(model: GoldFinch) -> P:
    return {name: t.detach().float() for name, t in model.state_dict().items()}


def tokens_for(seed: int, B: int = 2, T: int = 45) -> torch.Tensor:
    """T = 45: more than one WKV chunk (32) and not a multiple of it."""
    return torch.randint(0, 97, (B, T), generator=torch.Generator().manual_seed(seed))


def assert_close(got: torch.Tensor, want: torch.Tensor, rel: float = 1e-4) -> None:
    err = (got - want).abs().max().item()
    scale = want.abs().max().item()
    assert err <= rel * scale, f"max error {err:.3g} vs scale {scale:.3g}"


# ---- tests --------------------------------------------------------------------------------------


@pytest.mark.parametrize("rope_base", [None, 500.0])
def test_logits_equal_the_paper_reference(rope_base):
    model = random_goldfinch(rope_base=rope_base)
    assert model.config.first_gold_layer == 3  # int(2L/3), the paper's two thirds
    tokens = tokens_for(1)
    with torch.no_grad():
        logits, state = model(tokens)
    ref = reference_forward(params(model), tokens, 5, model.config.n_head, rope_base)
    assert_close(logits, ref["logits"])


def test_compressed_cache_equals_the_reference_from_the_last_finch_c2_layer():
    """The stored cache is W_a applied to the last Finch-C2 layer's output, and the keys the GOLD
    layers see are rms_norm(W_b [ln0(emb); c])."""
    model = random_goldfinch()
    tokens = tokens_for(2)
    with torch.no_grad():
        _, state = model(tokens)
        keys = model.decompress_keys(model.blocks[0].ln0(model.emb(tokens)), state.key_cache)
    ref = reference_forward(params(model), tokens, 5, model.config.n_head)
    assert state.key_cache.shape == (2, 45, 64 // 16)
    assert_close(state.key_cache, ref["cache"])
    assert_close(keys, ref["keys"])


def test_cache_is_written_from_the_output_of_the_layer_the_paper_names():
    """Capture every block's output with hooks: the cache is W_a of block s-1's output (s = the
    first GOLD layer), not of any other block's."""
    model = random_goldfinch()
    s = model.config.first_gold_layer
    outputs = {}
    hooks = [block.register_forward_hook(lambda mod, args, out, i=i: outputs.__setitem__(i, out.x))
             for i, block in enumerate(model.blocks)]
    try:
        with torch.no_grad():
            _, state = model(tokens_for(3))
    finally:
        for h in hooks:
            h.remove()
    W_a = model.w_kv_cache_a.weight.detach()
    matches = [i for i in range(s) if torch.allclose(state.key_cache, outputs[i] @ W_a.T, atol=1e-5)]
    assert matches == [s - 1]


def test_cache_depends_on_the_finch_c2_layers_only():
    """Changing the last Finch-C2 layer changes the cache; changing a GOLD layer or the head does
    not (the cache must be complete before any GOLD layer runs: that is the O(1) prefill)."""
    tokens = tokens_for(4, T=12)
    original = random_goldfinch()

    def cache_after(edit) -> torch.Tensor:
        model = copy.deepcopy(original)
        with torch.no_grad():
            edit(model)
            return model(tokens)[1].key_cache

    base = cache_after(lambda m: None)
    s = 3
    changed = cache_after(lambda m: m.blocks[s - 1].ffn.value.weight.mul_(2.0))
    assert (changed - base).abs().max() > 1e-2 * base.abs().max()
    for edit in (lambda m: m.blocks[s].att.query.weight.mul_(2.0),
                 lambda m: m.blocks[s].ffn.value.weight.mul_(2.0),
                 lambda m: m.blocks[s].ln1.weight.mul_(2.0),
                 lambda m: m.head.weight.mul_(2.0)):
        assert torch.equal(cache_after(edit), base)


def test_decoding_after_a_prefill_equals_the_paper_reference():
    """Prefill (windowed GOLD stack) then token-by-token decoding: each step's logits are the
    reference's at that position (the reference knows nothing of caches or windows)."""
    model = random_goldfinch()
    tokens = tokens_for(5, B=1, T=30)
    ref = reference_forward(params(model), tokens, 5, model.config.n_head)["logits"]
    with torch.no_grad():
        logits, state = model(tokens[:, :20], last_only=True)
        got = [logits[:, 0]]
        for t in range(20, 30):
            out, state = model(tokens[:, t:t + 1], state)
            got.append(out[:, 0])
    assert_close(torch.stack(got, dim=1), ref[:, 19:30])
