"""Model configuration for the Eagle (RWKV-5) and Finch (RWKV-6) backbones."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

# Accepted spellings of the two architectures, mapped to the canonical "5" / "6".
_VERSION_ALIASES = {
    "5": "5", "5.2": "5", "x052": "5", "eagle": "5", "rwkv5": "5", "rwkv-5": "5",
    "6": "6", "6.0": "6", "x060": "6", "finch": "6", "rwkv6": "6", "rwkv-6": "6",
}


def default_dim_ffn(n_embd: int) -> int:
    """Channel-mix hidden size of the official models: int(3.5·D) rounded down to a multiple of 32."""
    return int((n_embd * 3.5) // 32 * 32)


@dataclass
class RWKVConfig:
    """Shapes and options of an RWKV-5 (Eagle) or RWKV-6 (Finch) language model.

    Attributes:
        version: "5" (Eagle, x052) or "6" (Finch, x060).
        n_layer: number of blocks L.
        n_embd: model width D.
        vocab_size: V (65536 for the World models, 128 for the ABC music model).
        head_size: N, channels per head (H = D / N heads).
        dim_ffn: channel-mix hidden size F; default int(3.5·D) rounded down to a multiple of 32.
        tm_lora_rank: Finch token-shift (ddlerp) LoRA rank; default 32, or 64 when D >= 4096.
        decay_lora_rank: Finch decay LoRA rank; default 64, or 128 when D >= 4096.
        gate: Eagle's SiLU output gate (RWKV-5.0 files have none; 5.1 and later do).
        head_size_divisor: the official x/8 before GroupNorm; realised as GroupNorm eps·divisor².
        layer_norm_eps: eps of the LayerNorms.
    """

    version: str = "6"
    n_layer: int = 12
    n_embd: int = 768
    vocab_size: int = 65536
    head_size: int = 64
    dim_ffn: int | None = None
    tm_lora_rank: int | None = None
    decay_lora_rank: int | None = None
    gate: bool = True
    head_size_divisor: int = 8
    layer_norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        key = str(self.version).strip().lower()
        if key not in _VERSION_ALIASES:
            raise ValueError(f"RWKVConfig.version={self.version!r}: expected '5' (Eagle) or '6' (Finch)")
        self.version = _VERSION_ALIASES[key]
        for name in ("n_layer", "n_embd", "vocab_size", "head_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"RWKVConfig.{name}={value!r}: expected a positive int")
        if self.head_size % 4 != 0:
            raise ValueError(f"RWKVConfig.head_size={self.head_size}: expected a multiple of 4")
        if self.n_embd % self.head_size != 0:
            raise ValueError(
                f"RWKVConfig.n_embd={self.n_embd} is not a multiple of head_size={self.head_size}")
        big = self.n_embd >= 4096
        if self.dim_ffn is None:
            self.dim_ffn = default_dim_ffn(self.n_embd)
        if self.tm_lora_rank is None:
            self.tm_lora_rank = 64 if big else 32
        if self.decay_lora_rank is None:
            self.decay_lora_rank = 128 if big else 64
        if self.version == "6" and not self.gate:
            raise ValueError("RWKVConfig.gate=False exists only for Eagle (RWKV-5.0 files)")

    @property
    def n_head(self) -> int:
        """H = D / N."""
        return self.n_embd // self.head_size

    @property
    def group_norm_eps(self) -> float:
        """GroupNorm eps on the un-divided WKV output (= 1e-5 on x / head_size_divisor)."""
        return 1e-5 * self.head_size_divisor ** 2

    def state_numel(self) -> int:
        """Recurrent-state floats per sequence: L·(2D + H·N²) (paper Eq. 30 gives 66·D·L for N=64)."""
        return self.n_layer * (2 * self.n_embd + self.n_head * self.head_size ** 2)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON/YAML-safe) of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "RWKVConfig":
        """Build from a dict, rejecting unknown keys by name."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown RWKVConfig keys {unknown}; valid keys: {sorted(known)}")
        return cls(**values)
