"""Token sampling as in BlinkDL's RWKV runtime / ChatRWKV.

* :class:`SamplingConfig` - temperature, top-p, top-k, presence/frequency
  penalties with decay, greedy switch.  Validated on construction.
* :func:`sample_logits` - draw token id(s) from logits ``[V]`` or ``[B, V]``;
  NaN/+Inf logits raise :class:`NonFiniteLogitsError` (a ``UserError``), greedy
  included - every decoding loop goes through here (or :func:`check_finite_logits`).
* :class:`RepetitionPenalty` - decayed occurrence counts and the penalty they
  imply (``logits[t] -= presence + count[t] * frequency`` for seen ``t``).
* :class:`Sampler` - the two above plus a seeded generator, for simple loops.

Order of operations (same as ``rwkv.utils.PIPELINE.sample_logits``): the
top-p / top-k sets are chosen on the *temperature-1* distribution
``softmax(logits)``; the temperature is then applied to the logits of the kept
tokens only, and the result renormalised.  So temperature changes how the
surviving candidates are weighted, not which ones survive.  All arithmetic is
fp32.  ``temperature=0`` (or ``greedy=True``) means argmax.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any

import torch

from .errors import ConfigError, UserError, check_float, check_int

__all__ = [
    "SamplingConfig",
    "NonFiniteLogitsError",
    "check_finite_logits",
    "sample_logits",
    "top_k_top_p_mask",
    "RepetitionPenalty",
    "Sampler",
]

_MIN_TEMPERATURE = 1e-30  # below this fp32 division turns 0/T into nan


@dataclass(frozen=True)
class SamplingConfig:
    """How to pick the next token.

    Defaults follow ``rwkv.utils.PIPELINE_ARGS`` (temperature 1.0, top-p 0.85,
    top-k off, decay 0.996) but with both repetition penalties off (the
    runtime's 0.2/0.2 are a chat choice).  :meth:`chat` gives ChatRWKV's chat
    preset.

    Attributes:
        temperature: >= 0.  0 means greedy (argmax).  Applied after the top-p/
            top-k filtering, as in BlinkDL's runtime.
        top_p: nucleus size in [0, 1]; keep the smallest set of most likely
            tokens whose probability sum reaches ``top_p`` (tokens tied with
            the last one kept are kept too; at least one token always
            survives).  1.0 disables it; 0.0 keeps only the most likely token.
        top_k: keep the ``top_k`` most likely tokens; 0 disables it.
        presence_penalty: subtracted once from the logit of every token that
            has been generated (finite; negative encourages repetition).
        frequency_penalty: subtracted per (decayed) occurrence.
        penalty_decay: in [0, 1]; occurrence counts are multiplied by this
            after every sampled token (ChatRWKV's ``alpha_decay``).
        greedy: always take the argmax (same as ``temperature=0``).
    """

    temperature: float = 1.0
    top_p: float = 0.85
    top_k: int = 0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    penalty_decay: float = 0.996
    greedy: bool = False

    def __post_init__(self) -> None:
        check_float(self, "temperature", min=0.0)  # 0 = greedy
        check_float(self, "top_p", min=0.0, max=1.0)
        check_int(self, "top_k", min=0)  # 0 = off
        check_float(self, "presence_penalty")
        check_float(self, "frequency_penalty")
        check_float(self, "penalty_decay", min=0.0, max=1.0)
        if not isinstance(self.greedy, bool):
            raise ConfigError("greedy", self.greedy, "true or false")

    @property
    def is_greedy(self) -> bool:
        """True when sampling reduces to argmax."""
        return self.greedy or self.temperature == 0

    @property
    def uses_penalties(self) -> bool:
        """True when a repetition penalty changes the logits."""
        return self.presence_penalty != 0 or self.frequency_penalty != 0

    @classmethod
    def chat(cls, **overrides: Any) -> SamplingConfig:
        """ChatRWKV's chat preset (API_DEMO_CHAT.py): T=1.0, top-p 0.3,
        presence 0.5, frequency 0.5, decay 0.996; ``overrides`` replace fields."""
        base = cls(temperature=1.0, top_p=0.3, presence_penalty=0.5,
                   frequency_penalty=0.5, penalty_decay=0.996)
        return replace(base, **overrides)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SamplingConfig:
        """Build from a mapping (e.g. a recipe); unknown keys raise UserError."""
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise UserError(f"unknown sampling option(s) {sorted(unknown)}",
                            fix=f"valid options: {', '.join(sorted(known))}")
        return cls(**d)


def top_k_top_p_mask(probs: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Boolean mask of the tokens that survive top-k and top-p filtering.

    ``probs`` is ``[..., V]`` (a probability distribution along the last dim).
    Top-p keeps every token whose probability is >= that of the token at which
    the descending cumulative sum first reaches ``top_p`` (tie-inclusive, so the
    result does not depend on sort order).  Top-k keeps exactly ``top_k``
    tokens (ties broken by ``torch.topk``).  Both are computed on ``probs`` and
    intersected; the most likely token always survives.
    """
    V = probs.shape[-1]
    keep = torch.ones_like(probs, dtype=torch.bool)
    if top_p < 1.0:
        sorted_probs = torch.sort(probs, dim=-1, descending=True).values
        cumulative = torch.cumsum(sorted_probs, dim=-1)
        # index of the first position where the cumulative sum reaches top_p
        last = (cumulative < top_p).sum(dim=-1, keepdim=True).clamp_(max=V - 1)
        cutoff = torch.gather(sorted_probs, -1, last)
        keep &= probs >= cutoff
    if 0 < top_k < V:
        top = torch.topk(probs, top_k, dim=-1).indices
        in_top = torch.zeros_like(keep).scatter_(-1, top, True)
        keep &= in_top
    return keep


class NonFiniteLogitsError(UserError):
    """The model's logits hold NaN or +Inf (or every logit is -Inf): its weights hold NaN/Inf,
    or its activations overflowed in the dtype it runs in. ``step`` is the 1-based index of
    the token being chosen (None when unknown)."""

    def __init__(self, step: int | None, kind: str) -> None:
        self.step, self.kind = step, kind
        at = f" at token {step}" if step is not None else ""
        if kind == "-inf":
            super().__init__(f"every logit is -inf{at}", fix="no token is left to choose; check "
                             "the banned tokens and the penalties")
        else:
            super().__init__(f"the model produced non-finite logits ({kind}){at}",
                             fix="its weights hold NaN/Inf or overflowed in this dtype; check the "
                             "checkpoint, or run in fp32")


def check_finite_logits(logits: torch.Tensor, step: int | None = None) -> None:
    """Raise :class:`NonFiniteLogitsError` unless every row of ``logits`` ``[..., V]`` is free of
    NaN and +Inf and has at least one finite entry (``-inf`` marks a banned token).

    One reduction over V per row (``amax`` propagates NaN, is +Inf if any entry is, and -Inf
    only for a row of banned tokens) and one host sync."""
    if bool(torch.isfinite(logits.amax(dim=-1)).all()):
        return
    kind = "NaN" if bool(logits.isnan().any()) else "+inf" if bool(logits.isposinf().any()) else "-inf"
    raise NonFiniteLogitsError(step, kind)


def sample_logits(
    logits: torch.Tensor,
    cfg: SamplingConfig | None = None,
    generator: torch.Generator | None = None,
    *,
    step: int | None = None,
) -> int | torch.Tensor:
    """Sample the next token from ``logits``.

    Args:
        logits: ``[V]`` or ``[B, V]``, any float dtype/device (computed in fp32).
            ``-inf`` entries (banned tokens) are never drawn.
        cfg: sampling settings (default :class:`SamplingConfig()`).
        generator: for reproducible draws.  If it lives on another device than
            ``logits`` the draw is made on the generator's device, so a CPU
            generator gives the same tokens for CPU and CUDA logits.
        step: the 1-based index of the token being chosen, named in the error
            when the logits are not finite.

    Returns:
        an ``int`` for ``[V]`` input, a ``LongTensor[B]`` (on ``logits``'
        device) for ``[B, V]`` input.

    Raises:
        NonFiniteLogitsError: (a UserError) a row holds NaN or +Inf, or only -Inf;
            greedy decoding included (argmax of NaN logits would pick a token).
    """
    cfg = cfg if cfg is not None else SamplingConfig()
    if logits.dim() not in (1, 2):
        raise ValueError(f"logits must be [V] or [B, V], got shape {tuple(logits.shape)}")
    if logits.shape[-1] == 0:
        raise ValueError("logits have an empty vocabulary dimension")
    single = logits.dim() == 1
    x = logits.detach().float()
    if single:
        x = x.unsqueeze(0)
    check_finite_logits(x, step)

    if cfg.is_greedy:
        ids = torch.argmax(x, dim=-1)
    else:
        keep = top_k_top_p_mask(torch.softmax(x, dim=-1), cfg.top_k, cfg.top_p)
        if cfg.temperature != 1.0:
            # Shift so the best logit is 0 (no overflow), and keep the divisor a
            # normal fp32 number so that 0 / T stays 0 for absurdly small T.
            x = (x - x.amax(dim=-1, keepdim=True)) / max(cfg.temperature, _MIN_TEMPERATURE)
        probs = torch.softmax(x.masked_fill(~keep, -math.inf), dim=-1)
        if generator is not None and generator.device != probs.device:
            ids = torch.multinomial(probs.to(generator.device), 1, generator=generator)
            ids = ids.to(logits.device)
        else:
            ids = torch.multinomial(probs, 1, generator=generator)
        ids = ids.squeeze(-1)
    return int(ids[0]) if single else ids


class RepetitionPenalty:
    """ChatRWKV-style presence/frequency penalty with decaying counts.

    ``apply(logits)`` returns ``logits - (presence + count * frequency)`` on
    every token generated so far (others unchanged); ``update(token)`` first
    multiplies all counts by ``penalty_decay`` and then adds the token's weight
    (1 by default) to its count.  Presence is charged for any token ever seen,
    even once its count has decayed towards 0 (as in ChatRWKV).

    Args:
        cfg: supplies ``presence_penalty``, ``frequency_penalty``, ``penalty_decay``.
        vocab_size: size of the logits' last dimension.
        batch_size: ``None`` for ``[V]`` logits/ints, ``B`` for ``[B, V]``
            logits and ``[B]`` token tensors.
        device: where the counts live (default CPU).
        token_weights: optional ``[V]`` weight added per occurrence (ChatRWKV
            adds 0 for whitespace/digit tokens); presence still applies.
    """

    def __init__(
        self,
        cfg: SamplingConfig | None,
        vocab_size: int,
        *,
        batch_size: int | None = None,
        device: torch.device | str | None = None,
        token_weights: torch.Tensor | None = None,
    ) -> None:
        self.cfg = cfg if cfg is not None else SamplingConfig()
        if vocab_size <= 0:
            raise ValueError(f"vocab_size must be > 0, got {vocab_size}")
        if batch_size is not None and batch_size <= 0:
            raise ValueError(f"batch_size must be > 0, got {batch_size}")
        self.vocab_size = int(vocab_size)
        self.batch_size = batch_size
        shape = (vocab_size,) if batch_size is None else (batch_size, vocab_size)
        self.counts = torch.zeros(shape, dtype=torch.float32, device=device)
        self.seen = torch.zeros(shape, dtype=torch.bool, device=device)
        if token_weights is not None:
            token_weights = torch.as_tensor(token_weights, dtype=torch.float32, device=device)
            if token_weights.shape != (vocab_size,):
                raise ValueError(
                    f"token_weights must have shape ({vocab_size},), got {tuple(token_weights.shape)}"
                )
        self.token_weights = token_weights

    def reset(self) -> None:
        """Forget every occurrence."""
        self.counts.zero_()
        self.seen.zero_()

    def penalty(self) -> torch.Tensor:
        """The amount subtracted from each logit, same shape as ``counts``."""
        p = self.cfg.presence_penalty + self.counts * self.cfg.frequency_penalty
        return torch.where(self.seen, p, torch.zeros_like(p))

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        """Return penalised fp32 logits (``logits`` itself when penalties are off)."""
        if logits.shape != self.counts.shape:
            raise ValueError(
                f"logits shape {tuple(logits.shape)} does not match the penalty's "
                f"{tuple(self.counts.shape)}"
            )
        if not self.cfg.uses_penalties:
            return logits
        return logits.float() - self.penalty().to(logits.device)

    def update(self, tokens: int | torch.Tensor | list[int]) -> None:
        """Record sampled token(s): an int (unbatched) or ``[B]`` ids (batched)."""
        ids = torch.as_tensor(tokens, dtype=torch.long, device=self.counts.device)
        expected = () if self.batch_size is None else (self.batch_size,)
        if tuple(ids.shape) != expected:
            raise ValueError(f"expected token ids of shape {expected}, got {tuple(ids.shape)}")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.vocab_size):
            raise ValueError(f"token id out of range [0, {self.vocab_size}): {ids.tolist()}")
        if self.cfg.penalty_decay != 1.0:
            self.counts.mul_(self.cfg.penalty_decay)
        index = ids.reshape(*expected, 1)
        if self.token_weights is None:
            weight = torch.ones(index.shape, dtype=torch.float32, device=self.counts.device)
        else:
            weight = self.token_weights[index]
        self.counts.scatter_add_(-1, index, weight)
        self.seen.scatter_(-1, index, True)


class Sampler:
    """Penalty + sampling + (optionally seeded) generator in one callable.

    ``sampler(logits)`` penalises, samples, records the sampled token(s) and
    returns them (int for ``[V]``, ``LongTensor[B]`` for ``[B, V]``).
    """

    def __init__(
        self,
        cfg: SamplingConfig | None,
        vocab_size: int,
        *,
        batch_size: int | None = None,
        seed: int | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        self.cfg = cfg if cfg is not None else SamplingConfig()
        self.penalty = RepetitionPenalty(self.cfg, vocab_size, batch_size=batch_size, device=device)
        self.generator: torch.Generator | None = None
        if seed is not None:
            self.generator = torch.Generator(device=device or "cpu").manual_seed(seed)
        self.steps = 0  # tokens picked so far (named in a NonFiniteLogitsError)

    def __call__(self, logits: torch.Tensor) -> int | torch.Tensor:
        """Pick the next token(s) and record them for the penalty."""
        token = sample_logits(self.penalty.apply(logits), self.cfg, self.generator,
                              step=self.steps + 1)
        self.penalty.update(token)
        self.steps += 1
        return token
