"""Answering questions about images: prefill once, recurrent greedy decoding, batched, with
image-state caching.

A prompt is split after its image span: the prefix (template start + image tokens, plus any text
before the image) depends on the image only when the image comes first, so its recurrent state
can be computed once per image and reused for every question about it (POPE asks ~6 questions
per image, GQA testdev ~30). The question suffix is then prefilled from a copy of that state,
and all questions of a batch decode together (B > 1), one token per step.

Eagle/Finch states are fixed-size, so a whole batch decodes together. A GoldFinch state carries
a key cache that grows with the sequence and GOLD attention has no padding mask, so GoldFinch
questions decode together only with others whose prompts are equally long (exact, no padding).

`answer_in_batches` is the loop every benchmark runner shares: batches of questions, and what
to do with a question whose image cannot be read (raise a UserError naming the question and
the image, or skip every question about that image and list them).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from rwkv_mm.backbone import GoldFinchState, RWKVState, SamplingConfig, sample_logits
from rwkv_mm.errors import UserError

from .conversation import IMAGE_TOKEN_ID, ChatTemplate, encode_conversation
from .image_io import ImageReadError
from .model import VisualRWKV

_GREEDY = SamplingConfig(temperature=0.0)

State = RWKVState | GoldFinchState


@dataclass
class Question:
    """One question; `image` is a path (or None for a text-only question)."""

    qid: str
    image: Path | None
    text: str


@dataclass
class SkippedQuestion:
    """A question left out because its image could not be read."""

    qid: str
    image: str
    reason: str

    def to_json(self) -> dict:
        return {"question_id": self.qid, "image": self.image, "reason": self.reason}


class VisualAnswerer:
    """Greedy answers from a VisualRWKV model.

    Args:
        model: the fusion model (eval mode).
        tokenizer: the World tokenizer.
        processor: image path -> pixels [3, S, S].
        template, image_position: as in training.
        max_new_tokens: answer length limit; decoding stops earlier at the template's turn end
            or the end-of-text token.
        cache_images: reuse the state after each image prefix (LRU over `cache_size` images).
    """

    def __init__(self, model: VisualRWKV, tokenizer, processor, template: ChatTemplate | None = None,
                 image_position: str = "first", max_new_tokens: int = 16, cache_images: bool = True,
                 cache_size: int = 64) -> None:
        self.model, self.tokenizer, self.processor = model, tokenizer, processor
        self.template = template or ChatTemplate()
        self.image_position, self.max_new_tokens = image_position, max_new_tokens
        self.cache_images, self.cache_size = cache_images, cache_size
        self._cache: OrderedDict[tuple, tuple[State, torch.Tensor]] = OrderedDict()
        self.stats = {"prefix_computed": 0, "prefix_reused": 0}
        self.device = model.rwkv.emb.weight.device

    def prompt_ids(self, question: Question) -> list[int]:
        """Token ids of the whole prompt (image placeholders included), ending at `Assistant:`."""
        conv = [{"from": "human", "value": question.text}]
        ids, _ = encode_conversation(conv, self.tokenizer, self.model.num_image_tokens, self.template,
                                     self.image_position, has_image=question.image is not None,
                                     add_generation_prompt=True, sample_id=question.qid)
        return ids

    def _run(self, ids: list[int], state: State | None, image: Path | None):
        tokens = torch.tensor([ids], dtype=torch.long, device=self.device)
        pixels = self.processor(image).unsqueeze(0).to(self.device) if image is not None else None
        logits, state = self.model(tokens, images=pixels, state=state, last_only=True)
        return state, logits[0, -1].float()

    def _prefilled(self, question: Question) -> tuple[State, torch.Tensor]:
        """(state, logits of the last prompt token) for one question, using the image cache."""
        ids = self.prompt_ids(question)
        if question.image is None or not self.cache_images:
            return self._run(ids, None, question.image)
        split = max(i for i, t in enumerate(ids) if t == IMAGE_TOKEN_ID) + 1
        prefix, suffix = ids[:split], ids[split:]
        key = (str(question.image), tuple(prefix))
        hit = self._cache.get(key)
        if hit is None:
            hit = self._run(prefix, None, question.image)
            self.stats["prefix_computed"] += 1
            self._cache[key] = hit
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        else:
            self.stats["prefix_reused"] += 1
            self._cache.move_to_end(key)
        state, logits = hit
        if not suffix:
            return state.clone(), logits
        return self._run(suffix, state.clone(), None)

    @torch.inference_mode()
    def answer(self, questions: Sequence[Question]) -> list[str]:
        """Greedy answers for a batch of questions (decoded together, see the module notes)."""
        if not questions:
            return []
        prefilled = [self._prefilled(q) for q in questions]
        answers: list[str] = [""] * len(questions)
        for group in decode_groups([s for s, _ in prefilled]):
            texts = self._decode([prefilled[i] for i in group])
            for i, text in zip(group, texts):
                answers[i] = text
        return answers

    def _decode(self, prefilled: list[tuple[State, torch.Tensor]]) -> list[str]:
        """Greedy decoding of B prefilled questions that can share one batched state."""
        state = cat_states([s for s, _ in prefilled], self.model.rwkv.emb)
        logits = torch.stack([lg for _, lg in prefilled])  # [B, V]
        B = len(prefilled)
        out: list[list[int]] = [[] for _ in range(B)]
        done = [False] * B
        end = self.template.turn_end
        for t in range(self.max_new_tokens):
            next_tokens = sample_logits(logits, _GREEDY, step=t + 1)  # [B]; non-finite logits raise
            for b in range(B):
                if done[b]:
                    continue
                tok = int(next_tokens[b])
                if tok == 0:
                    done[b] = True
                    continue
                out[b].append(tok)
                if end and end in self.tokenizer.decode(out[b][-8:]):
                    done[b] = True
            if all(done):
                break
            step_logits, state = self.model(next_tokens.view(B, 1), state=state)
            logits = step_logits[:, -1].float()
        texts = [self.tokenizer.decode(ids) for ids in out]
        return [t.split(end)[0].strip() if end else t.strip() for t in texts]


def decode_groups(states: Sequence[State]) -> list[list[int]]:
    """Indices of the states that can decode as one batch: all of them for Eagle/Finch, those of
    equal sequence length for GoldFinch (its key caches cannot be padded)."""
    groups: dict[int, list[int]] = {}
    for i, state in enumerate(states):
        length = state.length if isinstance(state, GoldFinchState) else 0
        groups.setdefault(length, []).append(i)
    return list(groups.values())


def cat_states(states: Sequence[State], emb: torch.nn.Embedding) -> State:
    """One batched state from B single-sequence states of the same backbone."""
    if isinstance(states[0], GoldFinchState):
        return GoldFinchState.cat(list(states), emb)
    return RWKVState.cat(list(states))


def answer_in_batches(answerer: VisualAnswerer, questions: Sequence[Question], batch_size: int,
                      on_error: str = "raise", skipped: list[SkippedQuestion] | None = None
                      ) -> Iterator[list[tuple[Question, str]]]:
    """(question, answer) pairs, one list per batch of up to `batch_size` questions.

    A question whose image cannot be read (missing, corrupt, a decompression bomb) raises a
    UserError naming the question id and the image with `on_error="raise"`; with "skip", it and
    every later question about the same image are left out and appended to `skipped`."""
    if on_error not in ("raise", "skip"):
        raise UserError(f"on_error={on_error!r}: expected raise or skip")
    skipped = skipped if skipped is not None else []
    bad: dict[Path, str] = {}  # unreadable image -> reason

    def usable(q: Question) -> bool:
        if q.image is not None and Path(q.image) in bad:
            skipped.append(SkippedQuestion(q.qid, str(q.image), bad[Path(q.image)]))
            return False
        return True

    for start in range(0, len(questions), batch_size):
        batch = list(questions[start:start + batch_size])
        while True:
            batch = [q for q in batch if usable(q)]
            try:
                texts = answerer.answer(batch)
                break
            except ImageReadError as err:
                culprit = next((q for q in batch if q.image is not None and Path(q.image) == err.path), None)
                if culprit is None:
                    raise
                if on_error == "raise":
                    raise UserError(f"question {culprit.qid}: cannot read image ({err.reason})",
                                    where=str(err.path),
                                    fix="fix or replace the file, or rerun with --on-error skip to leave "
                                        "its questions out of the score (they are listed)") from None
                bad[err.path] = err.reason
        if batch:
            yield list(zip(batch, texts))
