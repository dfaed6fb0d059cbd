"""The `train.peft` section: parameter-efficient tuning through Hugging Face `peft`."""

from __future__ import annotations

from dataclasses import dataclass, field

from rwkv_mm.errors import ConfigError, check_choice, check_float, check_int

PEFT_METHODS = ("lora", "pissa", "dora")
#: the time-mix and channel-mix projections of every backbone family (Eagle/Finch/Goose/GoldFinch
#: blocks name them so): fnmatch patterns over module names
DEFAULT_PEFT_TARGETS = ["*.att.receptance", "*.att.key", "*.att.value", "*.att.output", "*.att.gate",
                        "*.ffn.key", "*.ffn.receptance", "*.ffn.value"]


@dataclass
class PeftConfig:
    """Adapters in place of full fine-tuning (`train.peft:`; absent or null = full fine-tuning).

    Attributes:
        method: "lora" (Hu et al.), "pissa" (LoRA initialised from the principal singular vectors;
            the model's output is unchanged at step 0) or "dora" (weight-decomposed LoRA).
        r: adapter rank.
        alpha: scaling numerator (the update is alpha / r · B A).
        dropout: dropout on the adapter's input.
        target_modules: fnmatch patterns of the `nn.Linear` module names that get adapters
            (default: every time-mix and channel-mix projection; never the LM head).
        modules_to_save: fnmatch patterns of module names kept fully trainable beside the adapters
            (e.g. VisualRWKV's projector, "proj"); saved with the adapter.
        pissa_niter: PiSSA only: 0 = the exact SVD of each adapted weight; N > 0 = a fast
            randomized SVD with N subspace iterations (peft's "pissa_niter_N"; for 7B-scale
            weights, where the exact SVDs take minutes). Either way the output is unchanged at step 0.
    """

    method: str = "lora"
    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: list(DEFAULT_PEFT_TARGETS))
    modules_to_save: list[str] = field(default_factory=list)
    pissa_niter: int = 0

    def __post_init__(self) -> None:
        check_choice(self, "method", PEFT_METHODS)
        check_int(self, "r", min=1)
        check_int(self, "pissa_niter", min=0)
        if self.pissa_niter and self.method != "pissa":
            raise ConfigError("pissa_niter", self.pissa_niter, "0 unless method is pissa")
        check_float(self, "alpha", gt=0)
        check_float(self, "dropout", min=0, max=0.99)
        for name in ("target_modules", "modules_to_save"):
            patterns = getattr(self, name)
            if not (isinstance(patterns, (list, tuple)) and all(isinstance(p, str) and p for p in patterns)):
                raise ConfigError(name, patterns, "a list of module-name patterns")
        if not self.target_modules:
            raise ConfigError("target_modules", self.target_modules, "at least one module-name pattern")
