"""`rwkv-mm vision chat` (alias `rwkv-mm chat`): talk about an image. The image and the first
prompt are prefilled once; every answer token then costs one recurrent step, and later turns
continue from the same state.

`ChatModel` is a loaded model with what every conversation about it shares (tokenizer,
template, image processor); `ImageChat` is one conversation, holding the recurrent state between
turns. The command line and the web demo (`rwkv-mm demo`) both talk through them.

The image is decoded (mode-aware, `image_io.open_image`) before the model loads: a missing or
unreadable file is an error naming it, at once."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from rwkv_mm.backbone import (GoldFinchState, RWKVState, Sampler, SamplingConfig, StreamDecoder,
                              load_tokenizer)

from .checkpoint import load_visual_rwkv
from .conversation import ChatTemplate, encode_conversation
from .image_io import open_image
from .model import VisualRWKV
from .preprocess import ImageProcessor


@dataclass
class TurnStats:
    """What one turn cost: the prompt tokens prefilled (the image's too on the first turn) and
    the answer tokens sampled, with their wall times."""

    prefill_tokens: int = 0
    prefill_s: float = 0.0
    tokens: int = 0
    decode_s: float = 0.0
    with_image: bool = False

    @property
    def tokens_per_s(self) -> float:
        """Answer tokens per second of decoding (0 before the first one)."""
        return self.tokens / self.decode_s if self.decode_s > 0 else 0.0


class ImageChat:
    """A conversation about one image, holding the recurrent state between turns."""

    def __init__(self, model: VisualRWKV, tokenizer, template: ChatTemplate, image_position: str,
                 processor: ImageProcessor, image: Path | Image.Image | None, sampling: SamplingConfig,
                 max_tokens: int = 256, seed: int | None = None) -> None:
        self.model, self.tokenizer, self.template = model, tokenizer, template
        self.image_position, self.processor, self.image = image_position, processor, image
        self.max_tokens = max_tokens
        self.set_sampling(sampling, seed)
        self.state: RWKVState | GoldFinchState | None = None
        self.turns = 0
        self.last_turn = TurnStats()

    def set_sampling(self, sampling: SamplingConfig, seed: int | None = None) -> None:
        """Sample the next answers with `sampling` (the conversation's state is kept)."""
        self.sampler = Sampler(sampling, self.model.rwkv.config.vocab_size, seed=seed)

    @torch.inference_mode()
    def reply(self, prompt: str) -> Iterator[str]:
        """Stream the answer to `prompt` as text pieces; the state then includes the answer.
        `last_turn` counts the tokens and times of this turn as it goes."""
        first = self.state is None
        has_image = first and self.image is not None
        stats = self.last_turn = TurnStats(with_image=has_image)
        self.turns += 1
        start = time.perf_counter()
        ids, _ = encode_conversation([{"from": "human", "value": prompt}], self.tokenizer,
                                     self.model.num_image_tokens if has_image else 0, self.template,
                                     self.image_position, has_image=has_image, add_generation_prompt=True)
        pixels = self.processor(self.image).unsqueeze(0) if has_image else None
        logits, self.state = self.model(torch.tensor([ids]), images=pixels, state=self.state, last_only=True)
        logits = logits[0, -1].float()
        stats.prefill_tokens, stats.prefill_s = len(ids), time.perf_counter() - start
        tick = time.perf_counter()  # decoding time counts; the consumer's time between pieces does not
        decoder = StreamDecoder(self.tokenizer)
        text = ""
        end = self.template.turn_end
        for _ in range(self.max_tokens):
            token = int(self.sampler(logits))
            stats.tokens += 1
            if token == 0:
                break
            piece = decoder.push(token)
            text += piece
            if end and end in text:  # the turn is over: show the text before the turn end
                _, self.state = self.model(torch.tensor([[token]]), state=self.state)
                stats.decode_s += time.perf_counter() - tick
                yield piece.split(end)[0].rstrip("\n")
                return
            stats.decode_s += time.perf_counter() - tick
            yield piece
            tick = time.perf_counter()
            out, self.state = self.model(torch.tensor([[token]]), state=self.state)
            logits = out[0, -1].float()
        # the answer ended without the turn end: close the turn so the next prompt lines up
        if end:
            _, self.state = self.model(torch.tensor([self.tokenizer.encode(end)]), state=self.state)
        stats.decode_s += time.perf_counter() - tick


@dataclass
class ChatModel:
    """A loaded VisualRWKV and what every conversation about it shares."""

    model: VisualRWKV
    tokenizer: object
    template: ChatTemplate
    image_position: str
    processor: ImageProcessor

    @classmethod
    def load(cls, checkpoint: str | Path, adapter: str | Path | None = None) -> ChatModel:
        """A model folder (a stage's `<run>/model`) or a released VisualRWKV `.pth`; `adapter`: a
        train.peft run's adapter folder run on top of it (unmerged)."""
        from rwkv_mm.training.adapter_cli import apply_adapter

        model, meta = load_visual_rwkv(checkpoint)
        model = apply_adapter(model, adapter)
        processor = ImageProcessor(model.vit.image_size, meta["vision"].pad_to_square)
        return cls(model, load_tokenizer("world"), meta["template"], meta["image_position"], processor)

    def chat(self, image: Path | Image.Image | None, sampling: SamplingConfig, max_tokens: int = 256,
             seed: int | None = None) -> ImageChat:
        """A new conversation about `image` (None: text only)."""
        return ImageChat(self.model, self.tokenizer, self.template, self.image_position, self.processor,
                         image, sampling, max_tokens, seed)


def _cmd_chat(args: argparse.Namespace) -> int:
    from rwkv_mm.cpu import tune_malloc

    tune_malloc()
    image = open_image(Path(args.image)) if args.image else None  # fail before the model loads
    sampling = SamplingConfig(temperature=args.temperature, top_p=args.top_p, top_k=args.top_k)
    chat = ChatModel.load(args.checkpoint, args.adapter).chat(image, sampling, args.max_tokens, args.seed)

    def answer(prompt: str) -> None:
        for piece in chat.reply(prompt):
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")

    if args.prompt:
        answer(args.prompt)
        return 0
    print("Chat about the image; an empty line or Ctrl-D ends.", file=sys.stderr)
    while True:
        try:
            prompt = input("User: ").strip()
        except EOFError:
            break
        if not prompt:
            break
        sys.stdout.write("Assistant: ")
        answer(prompt)
    return 0
