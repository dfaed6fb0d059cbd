"""Model configuration for the Eagle (RWKV-5), Finch (RWKV-6), Goose (RWKV-7) and GoldFinch backbones."""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from .config_dict import config_from_dict, config_to_dict
from .errors import ConfigError, check_float, check_int

#: Accepted spellings of the four architectures (lower case), mapped to the canonical
#: "5" / "6" / "7" / "goldfinch" (read-only).
VERSION_ALIASES = MappingProxyType({
    "5": "5", "5.2": "5", "x052": "5", "eagle": "5", "rwkv5": "5", "rwkv-5": "5",
    "6": "6", "6.0": "6", "x060": "6", "finch": "6", "rwkv6": "6", "rwkv-6": "6",
    "7": "7", "7.0": "7", "x070": "7", "goose": "7", "rwkv7": "7", "rwkv-7": "7",
    "goldfinch": "goldfinch", "gold-finch": "goldfinch", "gf": "goldfinch",
})

#: The family name of each canonical version.
FAMILY_NAMES = MappingProxyType({"5": "Eagle", "6": "Finch", "7": "Goose", "goldfinch": "GoldFinch"})


def normalize_version(version: Any) -> str:
    """The canonical version ("5", "6", "7" or "goldfinch") of any accepted spelling ("Finch",
    "x060", " 6.0 ", "goose", ...); ConfigError on the key `version` otherwise."""
    key = str(version).strip().lower()
    if key not in VERSION_ALIASES:
        raise ConfigError("version", version, "'5' (Eagle), '6' (Finch), '7' (Goose) or 'goldfinch'")
    return VERSION_ALIASES[key]

# Fields that only GoldFinch uses (None for the others, left out of their `to_dict`).
_GOLDFINCH_FIELDS = ("n_gold_layer", "key_cache_dim", "gold_lora_rank", "rope_base")
# Fields that only Goose uses (None for the others, left out of their `to_dict`).
_GOOSE_FIELDS = ("w_lora_rank", "a_lora_rank", "v_lora_rank", "g_lora_rank")
# Finch's LoRA ranks (Eagle and GoldFinch keep them too); None for Goose, left out of its `to_dict`.
_FINCH_LORA_FIELDS = ("tm_lora_rank", "decay_lora_rank")


def goose_lora_ranks(n_embd: int) -> dict[str, int]:
    """Goose's LoRA widths for model width D, as RWKV-LM's x070 code sets them (the formulas of
    the code the released World / G1 checkpoints were trained with, RWKV-v7/train_temp up to
    2025-07): max(32, round(c·f(D)/32)·32) with c·f(D) = 1.8·√D (decay w, in-context learning
    rate a), 1.3·√D (value residual v) and 0.6·D^0.8 (gate g); the released 0.4B (D=1024) keeps
    a 128-wide gate. D=768: 64/64/32/128; D=1024: 64/64/32/128; D=2048: 96/96/64/256;
    D=2560: 96/96/64/320. (Python's round: halves go to even, as in RWKV-LM.)"""
    def width(x: float) -> int:
        return max(32, int(round(x / 32) * 32))

    root = n_embd ** 0.5
    gate = 128 if n_embd == 1024 else width(0.6 * n_embd ** 0.8)
    return {"w_lora_rank": width(1.8 * root), "a_lora_rank": width(1.8 * root),
            "v_lora_rank": width(1.3 * root), "g_lora_rank": gate}


def default_dim_ffn(n_embd: int) -> int:
    """Channel-mix hidden size of the official models: int(3.5·D) rounded down to a multiple of 32."""
    return int((n_embd * 3.5) // 32 * 32)


@dataclass
class RWKVConfig:
    """Shapes and options of an RWKV-5 (Eagle), RWKV-6 (Finch), RWKV-7 (Goose) or GoldFinch
    language model.

    Attributes:
        version: "5" (Eagle, x052), "6" (Finch, x060), "7" (Goose, x070: the generalised delta
            rule, arXiv 2503.14456) or "goldfinch" (Finch-C2 layers below, GOLD attention layers
            on top, one compressed key cache; arXiv 2407.12077).
        n_layer: number of blocks L.
        n_embd: model width D.
        vocab_size: V (65536 for the World models, 128 for the ABC music model).
        head_size: N, channels per head (H = D / N heads).
        dim_ffn: channel-mix hidden size F; default int(3.5·D) rounded down to a multiple of 32
            (Goose: 4·D).
        tm_lora_rank: Finch token-shift (ddlerp) LoRA rank; default 32, or 64 when D >= 4096
            (GoldFinch: always 32; also the rank of the GOLD query-shift LoRA).
        decay_lora_rank: Finch decay LoRA rank; default 64, or 128 when D >= 4096 (GoldFinch:
            always 64; also the rank of Finch-C2's v2 LoRA). Both unused by Goose, which resets
            them to None (as Eagle leaves them unused), so `version: "7"` can replace "6" in a
            recipe that sets them; Goose's own widths are the *_lora_rank fields below.
        gate: the output gate; default True for Eagle/Finch (RWKV-5.0 files have none) and
            Goose (its gate LoRA g1/g2 is in every x070 block), False for GoldFinch (Finch-C2
            has no gate).
        head_size_divisor: the official x/8 before GroupNorm; realised as GroupNorm eps·divisor².
        layer_norm_eps: eps of the LayerNorms.
        n_gold_layer: GoldFinch only: how many top layers are GOLD; default L - int(2L/3) (the
            paper's one third: layers below s = int(2L/3) are Finch-C2).
        key_cache_dim: GoldFinch only: width of the compressed key cache; default D // 16.
        gold_lora_rank: GoldFinch only: rank of the GOLD key/value LoRAs; default max(D // 16, 64).
        rope_base: GoldFinch only: RoPE base of the GOLD attention; None (default) = no
            positional encoding, as in the paper's main models.
        w_lora_rank, a_lora_rank, v_lora_rank, g_lora_rank: Goose only: widths of the LoRAs of
            the decay (att.w1/w2), the in-context learning rate (a1/a2), the value residual
            (v1/v2) and the gate (g1/g2); defaults per RWKV-LM's x070 code (`goose_lora_ranks`),
            a checkpoint's own widths when loaded.
    """

    version: str = "6"
    n_layer: int = 12
    n_embd: int = 768
    vocab_size: int = 65536
    head_size: int = 64
    dim_ffn: int | None = None
    tm_lora_rank: int | None = None
    decay_lora_rank: int | None = None
    gate: bool | None = None
    head_size_divisor: int = 8
    layer_norm_eps: float = 1e-5
    n_gold_layer: int | None = None
    key_cache_dim: int | None = None
    gold_lora_rank: int | None = None
    rope_base: float | None = None
    w_lora_rank: int | None = None
    a_lora_rank: int | None = None
    v_lora_rank: int | None = None
    g_lora_rank: int | None = None

    def __post_init__(self) -> None:
        """Resolve the defaults and check every field (ConfigError names the field)."""
        self.version = normalize_version(self.version)
        for name in ("n_layer", "n_embd", "vocab_size"):
            check_int(self, name, min=1)
        check_int(self, "head_size", min=4)
        if self.head_size % 4 != 0:
            raise ConfigError("head_size", self.head_size, "a multiple of 4")
        if self.n_embd % self.head_size != 0:
            raise ConfigError("n_embd", self.n_embd, f"a multiple of head_size={self.head_size}")
        for name in ("dim_ffn", *_FINCH_LORA_FIELDS, *_GOOSE_FIELDS):
            check_int(self, name, min=1, optional=True)
        check_int(self, "head_size_divisor", min=1)
        check_float(self, "layer_norm_eps", gt=0.0)
        if self.gate is not None and not isinstance(self.gate, bool):
            raise ConfigError("gate", self.gate, "true, false or null")
        self._reject_other_families_fields()
        if self.version == "7":
            self._resolve_goose()
            return
        big = self.n_embd >= 4096 and self.version != "goldfinch"  # GoldFinch's code keeps 32/64
        if self.dim_ffn is None:
            self.dim_ffn = default_dim_ffn(self.n_embd)
        if self.tm_lora_rank is None:
            self.tm_lora_rank = 64 if big else 32
        if self.decay_lora_rank is None:
            self.decay_lora_rank = 128 if big else 64
        if self.version == "goldfinch":
            self._resolve_goldfinch()
            return
        if self.gate is None:
            self.gate = True
        if self.version == "6" and not self.gate:
            raise ConfigError("gate", self.gate, "true for Finch (gate=false exists only for Eagle, "
                                                 "as in RWKV-5.0 files)")

    def _reject_other_families_fields(self) -> None:
        """ConfigError on a field set that only another family uses."""
        foreign = {"goldfinch": (_GOLDFINCH_FIELDS, "a GoldFinch option", "version='goldfinch'"),
                   "7": (_GOOSE_FIELDS, "a Goose option", "version='7'")}
        for family, (names, what, fix) in foreign.items():
            given = [name for name in names if getattr(self, name) is not None]
            if given and family != self.version:
                raise ConfigError(given[0], getattr(self, given[0]),
                                  f"null: {what}, and this config is version={self.version!r} "
                                  f"(set {fix} to use it)")

    def _resolve_goose(self) -> None:
        """Defaults and checks of a Goose config: F = 4·D, the gate, the four LoRA widths."""
        if self.gate is False:
            raise ConfigError("gate", self.gate, "true: every Goose (x070) block has its gate "
                                                 "LoRA (att.g1/g2)")
        self.gate = True
        self.tm_lora_rank = self.decay_lora_rank = None  # Finch's: unused
        if self.dim_ffn is None:
            self.dim_ffn = 4 * self.n_embd
        for name, width in goose_lora_ranks(self.n_embd).items():
            if getattr(self, name) is None:
                setattr(self, name, width)

    def _resolve_goldfinch(self) -> None:
        """Defaults and checks of the GoldFinch-only fields."""
        L, D = self.n_layer, self.n_embd
        if self.gate:
            raise ConfigError("gate", self.gate, "false: GoldFinch's Finch-C2 time mix has no gate")
        self.gate = False
        if L < 2:
            raise ConfigError("n_layer", L, "an int >= 2: GoldFinch needs at least 2 layers "
                                            "(Finch-C2 below, GOLD on top)")
        if self.n_gold_layer is None:
            self.n_gold_layer = L - (2 * L) // 3
        try:
            check_int(self, "n_gold_layer", min=1, max=L - 1)
        except ConfigError as err:
            raise ConfigError("n_gold_layer", self.n_gold_layer, f"{err.expected} (at least one "
                              "Finch-C2 layer must produce the cache)") from None
        if self.key_cache_dim is None:
            self.key_cache_dim = max(D // 16, 1)
        if self.gold_lora_rank is None:
            self.gold_lora_rank = max(D // 16, 64)
        for name in ("key_cache_dim", "gold_lora_rank"):
            check_int(self, name, min=1)
        if self.rope_base is not None:
            if self.head_size % 2:
                raise ConfigError("rope_base", self.rope_base, f"null: RoPE needs an even head_size, "
                                                               f"got {self.head_size}")
            check_float(self, "rope_base", gt=1.0)
            self.rope_base = float(self.rope_base)

    @property
    def n_head(self) -> int:
        """H = D / N."""
        return self.n_embd // self.head_size

    @property
    def is_goldfinch(self) -> bool:
        return self.version == "goldfinch"

    @property
    def is_goose(self) -> bool:
        return self.version == "7"

    @property
    def family(self) -> str:
        """The family's name: "Eagle", "Finch", "Goose" or "GoldFinch"."""
        return FAMILY_NAMES[self.version]

    @property
    def first_gold_layer(self) -> int:
        """GoldFinch: index s of the first GOLD layer (layers 0..s-1 are Finch-C2)."""
        if not self.is_goldfinch:  # a bug in the caller, not the user's config
            raise ValueError(f"first_gold_layer: version {self.version!r} has no GOLD layers")
        return self.n_layer - self.n_gold_layer

    @property
    def group_norm_eps(self) -> float:
        """GroupNorm eps on the un-divided WKV output (= 1e-5 on x / head_size_divisor)."""
        return 1e-5 * self.head_size_divisor ** 2

    def state_numel(self) -> int:
        """Recurrent-state floats per sequence: L·(2D + H·N²) (paper Eq. 30 gives 66·D·L for N=64).

        GoldFinch: the fixed-size part only, s·(2D + H·N²) + (L - s)·2D; its key cache grows
        with the context on top of this (see `GoldFinchState.cache_nbytes`)."""
        wkv = self.n_head * self.head_size ** 2
        n_wkv = self.first_gold_layer if self.is_goldfinch else self.n_layer
        return self.n_layer * 2 * self.n_embd + n_wkv * wkv

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON/YAML-safe) of every field this family uses (GoldFinch-only fields only
        for GoldFinch, Goose-only fields only for Goose, which has no Finch LoRA ranks)."""
        values = config_to_dict(self)
        dropped = (() if self.is_goldfinch else _GOLDFINCH_FIELDS) + (
            _FINCH_LORA_FIELDS if self.is_goose else _GOOSE_FIELDS)
        for name in dropped:
            values.pop(name)
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "RWKVConfig":
        """Build from a dict (`to_dict`'s, a file's metadata), strictly: unknown keys and wrong
        types are named (`config_from_dict`)."""
        return config_from_dict(cls, values)
