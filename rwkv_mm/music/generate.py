"""Generating ABC tunes with a byte-level model (begin 2 → bytes → end 3)."""

from __future__ import annotations

from collections.abc import Callable

from rwkv_mm.backbone import SamplingConfig, generate_tokens
from rwkv_mm.errors import UserError

from .tokenizer import ByteTokenizer

#: ChatRWKV's music defaults: top-k 8, top-p 0.8, temperature 1.
MUSIC_SAMPLING = SamplingConfig(temperature=1.0, top_p=0.8, top_k=8)


def generate_tunes(model, n_tunes: int, prompt: str = "", sampling: SamplingConfig | None = None,
                   max_bytes: int = 1024, seed: int = 0,
                   on_tune: Callable[[int, str], None] | None = None) -> list[str]:
    """Sample `n_tunes` tunes, each starting from the begin token + `prompt` (control codes
    and/or an ABC header) and ending at the end token or after `max_bytes` bytes.

    Returns the texts, prompt included; the end token itself is never part of a text. Tune i
    uses seed `seed + i` (reproducible one by one). Non-finite logits raise the backbone's
    NonFiniteLogitsError (a UserError)."""
    if isinstance(n_tunes, bool) or not isinstance(n_tunes, int) or n_tunes < 0:
        raise UserError(f"n_tunes={n_tunes!r}: expected an int >= 0")
    tok = ByteTokenizer()
    prompt_ids = [tok.begin_id] + tok.encode(prompt)
    tunes = []
    for i in range(n_tunes):
        ids = list(generate_tokens(model, prompt_ids, max_tokens=max_bytes,
                                   sampling=sampling or MUSIC_SAMPLING, seed=seed + i,
                                   stop_tokens=(tok.end_id, tok.pad_id, tok.begin_id)))
        text = prompt + tok.decode(ids)
        tunes.append(text)
        if on_tune:
            on_tune(i, text)
    return tunes

