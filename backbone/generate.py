"""Text generation: one parallel prefill of the prompt, then O(1)-per-token recurrent decoding.

Works for every backbone with the `logits, state = model(tokens, state)` convention: Eagle/Finch
(`RWKV`, `RWKVState`) and GoldFinch (`GoldFinch`, `GoldFinchState`, whose decoding attends over
its key cache)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from .build import Backbone as Model
from .build import BackboneState as State
from .errors import UserError
from .sampling import Sampler, SamplingConfig


@torch.inference_mode()
def prefill(model: Model, tokens: list[int] | torch.Tensor, state: State | None = None,
            chunk_len: int = 4096) -> tuple[torch.Tensor, State]:
    """Feed a prompt through the model (chunked parallel form, head only at the last position).

    Returns (logits of the last position [V] fp32, state). Long prompts go in pieces of
    `chunk_len` tokens to bound activation memory; the result is identical. An empty prompt or
    a token id outside the model's vocabulary is a UserError.
    """
    ids = torch.as_tensor(tokens, dtype=torch.long, device=model.emb.weight.device).view(1, -1)
    if ids.shape[1] == 0:
        raise UserError("empty prompt", fix="give at least one token")
    vocab = model.config.vocab_size
    lo, hi = int(ids.min()), int(ids.max())
    if lo < 0 or hi >= vocab:
        raise UserError(f"prompt token id {hi if hi >= vocab else lo} is outside the model's "
                        f"vocabulary [0, {vocab})", fix="use the tokenizer the model was trained with")
    logits = None
    for start in range(0, ids.shape[1], chunk_len):
        logits, state = model(ids[:, start:start + chunk_len], state, last_only=True)
    return logits[0, -1].float(), state


@torch.inference_mode()
def generate_tokens(model: Model, prompt_tokens: list[int], max_tokens: int = 200,
                    sampling: SamplingConfig | None = None, seed: int | None = None,
                    stop_tokens: tuple[int, ...] = (0,),
                    state: State | None = None) -> Iterator[int]:
    """Yield up to `max_tokens` sampled token ids after the prompt; stops at any `stop_tokens`
    (0 = end-of-text for the World tokenizer), which is not yielded.

    Non-finite logits (NaN weights, an overflow in this dtype) raise NonFiniteLogitsError (a
    UserError) naming the token, greedy decoding included: they are never read as a stop token."""
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 0:
        raise UserError(f"max_tokens={max_tokens!r}: expected an int >= 0")
    sampler = Sampler(sampling, model.config.vocab_size, seed=seed)
    logits, state = prefill(model, prompt_tokens, state)
    device = model.emb.weight.device
    for _ in range(max_tokens):
        token = int(sampler(logits.cpu()))
        if token in stop_tokens:
            return
        yield token
        out, state = model(torch.tensor([[token]], device=device), state)
        logits = out[0, -1].float()


def generate_text(model: Model, tokenizer, prompt: str, max_tokens: int = 200,
                  sampling: SamplingConfig | None = None, seed: int | None = None,
                  on_text: Callable[[str], None] | None = None) -> str:
    """Generate a continuation of `prompt`; `on_text` receives the text as it is produced
    (whole UTF-8 characters only). Returns the whole continuation."""
    from .tokenizer import StreamDecoder

    decoder = StreamDecoder(tokenizer)
    pieces = []
    for token in generate_tokens(model, tokenizer.encode(prompt), max_tokens, sampling, seed):
        text = decoder.push(token)
        if text:
            pieces.append(text)
            if on_text:
                on_text(text)
    tail = decoder.flush()
    if tail:
        pieces.append(tail)
        if on_text:
            on_text(tail)
    return "".join(pieces)
