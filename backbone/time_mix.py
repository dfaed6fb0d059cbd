"""Time mixing (the attention replacement) of Eagle (x052) and Finch (x060); Finch-C2 subclasses Finch.

Parameter names and shapes are the official checkpoints' (`blocks.i.att.*`), so a state dict of
these modules is the official layout.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rwkv_mm.kernels.wkv import wkv
from rwkv_mm.kernels.wkv_bidirectional import wkv_bidirectional

from .config import RWKVConfig
from .linear import Linear


def token_shift(x: torch.Tensor, x_prev: torch.Tensor) -> torch.Tensor:
    """The previous token's vector at every position: [x_prev, x_0, ..., x_{T-2}].

    x: [B, T, D]; x_prev: [B, D] (the last token of the previous call). Returns [B, T, D].
    """
    if x.shape[1] == 1:
        return x_prev.unsqueeze(1)
    return torch.cat((x_prev.unsqueeze(1), x[:, :-1]), dim=1)


class _TimeMixBase(nn.Module):
    """Projections, output norm and the WKV call shared by Eagle and Finch (and Finch-C2).

    `bidirectional=True` makes the mixing non-causal for encoders (AudioRWKV): every token reads
    the whole sequence through `wkv_bidirectional` (forward scan with the bonus + backward scan
    without it) and no recurrent state is kept.
    `head_norm=False` replaces the per-head GroupNorm of the WKV output by one LayerNorm over all
    D channels, and `bonus=False` drops the current-token bonus u (`time_faaaa`): both for
    GoldFinch's Finch-C2 time mix.
    """

    def __init__(self, config: RWKVConfig, layer_id: int, bidirectional: bool = False, *,
                 head_norm: bool = True, bonus: bool = True) -> None:
        super().__init__()
        self.layer_id = layer_id
        self.bidirectional = bidirectional
        self.n_head = config.n_head
        self.head_size = config.head_size
        D = config.n_embd
        self.receptance = Linear(D, D, bias=False)
        self.key = Linear(D, D, bias=False)
        self.value = Linear(D, D, bias=False)
        self.output = Linear(D, D, bias=False)
        self.gate = Linear(D, D, bias=False) if config.gate else None
        if head_norm:
            self.ln_x = nn.GroupNorm(config.n_head, D, eps=config.group_norm_eps)
        else:
            self.ln_x = nn.LayerNorm(D, eps=config.layer_norm_eps)
        if bonus:
            self.time_faaaa = nn.Parameter(torch.empty(config.n_head, config.head_size))  # u: [H, N]

    def _mix_inputs(self, x: torch.Tensor, shifted: torch.Tensor):
        """Returns (xr, xk, xv, xg, log_decay) for the architecture; log_decay [B, T, H, N] fp32."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor, x_prev: torch.Tensor | None, wkv_state: torch.Tensor | None,
                shifted: torch.Tensor | None = None):
        """x: normed input [B, T, D]; x_prev: [B, D]; wkv_state: [B, H, N, N] fp32.

        `shifted` [B, T, D] replaces the token shift as the "other token" input of the
        lerp/ddlerp (encoders pass Q-Shift's output; x_prev is then unused and may be None).
        Returns (output [B, T, D], new x_prev [B, D], new wkv_state [B, H, N, N]); the
        state is None for a bidirectional module.
        """
        B, T, D = x.shape
        H, N = self.n_head, self.head_size
        if self.bidirectional and wkv_state is not None:
            raise ValueError("a bidirectional time mix keeps no state: pass wkv_state=None")
        if shifted is None:
            shifted = token_shift(x, x_prev)
        xr, xk, xv, xg, log_w = self._mix_inputs(x, shifted)
        r = self.receptance(xr).view(B, T, H, N)
        k = self.key(xk).view(B, T, H, N)
        v = self.value(xv).view(B, T, H, N)
        if self.bidirectional:
            y, new_state = wkv_bidirectional(r, k, v, log_w, self.time_faaaa), None
        else:  # the kernels' dispatch runs the decode step for T = 1
            y, new_state = wkv(r, k, v, log_w, self.time_faaaa, wkv_state)
        y = self.ln_x(y.reshape(B * T, D)).view(B, T, D)
        if self.gate is not None:
            y = y * F.silu(self.gate(xg))
        return self.output(y), x[:, -1].clone(), new_state  # clone: a view would keep all of x alive


class TimeMixEagle(_TimeMixBase):
    """RWKV-5.2 (Eagle) time mix: lerp token shift, static per-channel decay w = exp(-exp(ω))."""

    def __init__(self, config: RWKVConfig, layer_id: int, bidirectional: bool = False) -> None:
        super().__init__(config, layer_id, bidirectional)
        D = config.n_embd
        self.time_mix_k = nn.Parameter(torch.empty(1, 1, D))
        self.time_mix_v = nn.Parameter(torch.empty(1, 1, D))
        self.time_mix_r = nn.Parameter(torch.empty(1, 1, D))
        self.time_mix_g = nn.Parameter(torch.empty(1, 1, D)) if config.gate else None
        self.time_decay = nn.Parameter(torch.empty(config.n_head, config.head_size))  # ω: [H, N]

    def _mix_inputs(self, x: torch.Tensor, shifted: torch.Tensor):
        # Eagle's lerp weights the *current* token: x·μ + x_prev·(1-μ).
        names = ("time_mix_k", "time_mix_v", "time_mix_r") + (("time_mix_g",) if self.gate is not None else ())
        mu = torch.stack([getattr(self, n) for n in names]).view(len(names), 1, 1, -1)
        mixed = torch.addcmul(shifted, x - shifted, mu).unbind(0)  # [B, T, D] each
        xk, xv, xr = mixed[:3]
        xg = mixed[3] if self.gate is not None else None
        B, T, _ = x.shape
        log_w = -torch.exp(self.time_decay.float())  # [H, N]
        return xr, xk, xv, xg, log_w.expand(B, T, *log_w.shape)


class TimeMixFinch(_TimeMixBase):
    """RWKV-6 (Finch) time mix: ddlerp token shift (LoRA, 5 groups) and data-dependent decay."""

    #: the ddlerp groups, in the order of the shared LoRA's slots; group `g` owns `time_maa_<g>`
    mix_groups: tuple[str, ...] = ("w", "k", "v", "r", "g")

    def __init__(self, config: RWKVConfig, layer_id: int, bidirectional: bool = False,
                 **base_options) -> None:
        super().__init__(config, layer_id, bidirectional, **base_options)
        D, R, Rd = config.n_embd, config.tm_lora_rank, config.decay_lora_rank
        n = len(self.mix_groups)
        for name in ("x", *self.mix_groups):
            setattr(self, f"time_maa_{name}", nn.Parameter(torch.empty(1, 1, D)))
        self.time_maa_w1 = nn.Parameter(torch.empty(D, n * R))
        self.time_maa_w2 = nn.Parameter(torch.empty(n, R, D))
        self.time_decay = nn.Parameter(torch.empty(1, 1, D))
        self.time_decay_w1 = nn.Parameter(torch.empty(D, Rd))
        self.time_decay_w2 = nn.Parameter(torch.empty(Rd, D))

    def _ddlerp(self, x: torch.Tensor, shifted: torch.Tensor) -> dict[str, torch.Tensor]:
        """The data-dependent lerp of every group in `mix_groups`: {group: [B, T, D]}."""
        # Finch's maa weights the *previous* token: x + (x_prev - x)·(μ + LoRA(x)).
        B, T, D = x.shape
        n = len(self.mix_groups)
        delta = shifted - x  # [B, T, D]
        xxx = torch.addcmul(x, delta, self.time_maa_x)
        lora = torch.tanh(xxx @ self.time_maa_w1).view(B * T, n, -1).transpose(0, 1)  # [n, BT, R]
        mix = torch.bmm(lora, self.time_maa_w2).view(n, B, T, D)  # [n, B, T, D]
        mu = torch.stack([getattr(self, f"time_maa_{g}") for g in self.mix_groups]).view(n, 1, 1, D)
        mixed = torch.addcmul(x, delta, mix + mu).unbind(0)  # one pass for all groups
        return dict(zip(self.mix_groups, mixed))

    def _log_decay(self, xw: torch.Tensor) -> torch.Tensor:
        """Data-dependent log decay -exp(ω + tanh(xw A) B): [B, T, D] fp32."""
        ww = torch.tanh(xw @ self.time_decay_w1) @ self.time_decay_w2  # [B, T, D]
        return -torch.exp((self.time_decay + ww).float())

    def _mix_inputs(self, x: torch.Tensor, shifted: torch.Tensor):
        B, T, _ = x.shape
        m = self._ddlerp(x, shifted)
        log_w = self._log_decay(m["w"]).view(B, T, self.n_head, self.head_size)
        return m["r"], m["k"], m["v"], m["g"], log_w


def time_mix_class(config: RWKVConfig) -> type[_TimeMixBase]:
    """The time mix of an Eagle ("5") or Finch ("6") config; other families bring their own."""
    if config.version not in ("5", "6"):
        raise ValueError(f"no Eagle/Finch time mix for version {config.version!r}")
    return TimeMixFinch if config.version == "6" else TimeMixEagle
