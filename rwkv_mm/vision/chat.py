"""`rwkv-mm vision chat` (alias `rwkv-mm chat`): talk about an image. The image and the first
prompt are prefilled once; every answer token then costs one recurrent step, and later turns
continue from the same state.

The image is decoded (mode-aware, `image_io.open_image`) before the model loads: a missing or
unreadable file is an error naming it, at once."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
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


class ImageChat:
    """A conversation about one image, holding the recurrent state between turns."""

    def __init__(self, model: VisualRWKV, tokenizer, template: ChatTemplate, image_position: str,
                 processor: ImageProcessor, image: Path | Image.Image | None, sampling: SamplingConfig,
                 max_tokens: int = 256, seed: int | None = None) -> None:
        self.model, self.tokenizer, self.template = model, tokenizer, template
        self.image_position, self.processor, self.image = image_position, processor, image
        self.sampler = Sampler(sampling, model.rwkv.config.vocab_size, seed=seed)
        self.max_tokens = max_tokens
        self.state: RWKVState | GoldFinchState | None = None

    @torch.inference_mode()
    def reply(self, prompt: str) -> Iterator[str]:
        """Stream the answer to `prompt` as text pieces; the state then includes the answer."""
        first = self.state is None
        has_image = first and self.image is not None
        ids, _ = encode_conversation([{"from": "human", "value": prompt}], self.tokenizer,
                                     self.model.num_image_tokens if has_image else 0, self.template,
                                     self.image_position, has_image=has_image, add_generation_prompt=True)
        pixels = self.processor(self.image).unsqueeze(0) if has_image else None
        logits, self.state = self.model(torch.tensor([ids]), images=pixels, state=self.state, last_only=True)
        logits = logits[0, -1].float()
        decoder = StreamDecoder(self.tokenizer)
        text = ""
        end = self.template.turn_end
        for _ in range(self.max_tokens):
            token = int(self.sampler(logits))
            if token == 0:
                break
            piece = decoder.push(token)
            text += piece
            if end and end in text:  # the turn is over: show the text before the turn end
                yield piece.split(end)[0].rstrip("\n")
                _, self.state = self.model(torch.tensor([[token]]), state=self.state)
                return
            yield piece
            out, self.state = self.model(torch.tensor([[token]]), state=self.state)
            logits = out[0, -1].float()
        # the answer ended without the turn end: close the turn so the next prompt lines up
        if end:
            _, self.state = self.model(torch.tensor([self.tokenizer.encode(end)]), state=self.state)


def _cmd_chat(args: argparse.Namespace) -> int:
    from rwkv_mm.cpu import tune_malloc

    tune_malloc()
    image = open_image(Path(args.image)) if args.image else None  # fail before the model loads
    model, meta = load_visual_rwkv(args.checkpoint)
    processor = ImageProcessor(model.vit.image_size, meta["vision"].pad_to_square)
    sampling = SamplingConfig(temperature=args.temperature, top_p=args.top_p, top_k=args.top_k)
    chat = ImageChat(model, load_tokenizer("world"), meta["template"], meta["image_position"], processor,
                     image, sampling, args.max_tokens, args.seed)

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

