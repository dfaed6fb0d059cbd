"""Answering questions about images: prefill once, recurrent greedy decoding, batched, with
image-state caching.

A prompt is split after its image span: the prefix (template start + image tokens, plus any text
before the image) depends on the image only when the image comes first, so its recurrent state
can be computed once per image and reused for every question about it (POPE asks ~6 questions
per image, GQA testdev ~30). The question suffixes of a batch are then prefilled together from
those states (`_continue`), and all questions of a batch decode together (B > 1), one token per
step. Unequal suffixes need no padding: the longer ones first run their extra leading tokens (one
call per extra length, no head), then every row runs its last `m` tokens in one call (m = the
shortest suffix), so the [V]-wide head runs once per batch, as in decoding.

Eagle/Finch states are fixed-size, so a whole batch decodes together. A GoldFinch state carries
a key cache that grows with the sequence and GOLD attention has no padding mask, so GoldFinch
questions share a call only with others whose sequences are equally long there (exact, no padding).

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
_FEW_ROWS = 8  # up to this many rows, the CPU head runs as weight @ hiddenᵀ (VisualAnswerer._logits)

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
        self._cache: OrderedDict[tuple, tuple[State, torch.Tensor]] = OrderedDict()  # -> (state, hidden [D])
        self.stats = {"prefix_computed": 0, "prefix_reused": 0}
        self.device = model.rwkv.emb.weight.device

    def prompt_ids(self, question: Question) -> list[int]:
        """Token ids of the whole prompt (image placeholders included), ending at `Assistant:`."""
        conv = [{"from": "human", "value": question.text}]
        ids, _ = encode_conversation(conv, self.tokenizer, self.model.num_image_tokens, self.template,
                                     self.image_position, has_image=question.image is not None,
                                     add_generation_prompt=True, sample_id=question.qid)
        return ids

    def _run(self, ids: list[int], image: Path | None) -> tuple[State, torch.Tensor]:
        """One whole prompt from a fresh state (no cache: the peers' way): (state, logits [1, V])."""
        tokens = torch.tensor([ids], dtype=torch.long, device=self.device)
        hidden, state = self.model(tokens, images=self._pixels(image), last_only=True, return_hidden=True)
        return state, self._logits(hidden[:, -1])

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The LM head on final hidden states [B, D] -> fp32 logits [B, V].

        For 2..8 rows on the CPU it runs as `weight @ hiddenᵀ`: the same values up to float
        rounding, but BLAS splits that [V, D] x [D, B] product over the vocabulary, while F.linear's
        [B, D] x [D, V] order ran 2-6x slower for V=65536 (bench/results/eval_cache.md)."""
        head = self.model.rwkv.head
        if hidden.device.type == "cpu" and 1 < hidden.shape[0] <= _FEW_ROWS:
            return (head.weight @ hidden.t().to(head.weight.dtype)).t().float()  # [B, V]
        return head(hidden).float()

    def _pixels(self, image: Path | None) -> torch.Tensor | None:
        return self.processor(image).unsqueeze(0).to(self.device) if image is not None else None

    def _prefix(self, image: Path, prefix: list[int]) -> tuple[State, torch.Tensor]:
        """(state after the image prefix, final hidden state [D] of its last token), cached.

        The head is not run here: its logits are only needed when a suffix is empty."""
        key = (str(image), tuple(prefix))
        hit = self._cache.get(key)
        if hit is not None:
            self.stats["prefix_reused"] += 1
            self._cache.move_to_end(key)
            return hit
        tokens = torch.tensor([prefix], dtype=torch.long, device=self.device)
        hidden, state = self.model(tokens, images=self._pixels(image), last_only=True, return_hidden=True)
        hit = (state, hidden[0, -1])
        self.stats["prefix_computed"] += 1
        self._cache[key] = hit
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return hit

    def _prefill(self, questions: Sequence[Question]) -> list[Piece]:
        """Every question's state and first logits, as pieces that can each decode as one batch."""
        pieces: list[Piece] = []
        rows, states, suffixes = [], [], []  # questions continuing from a cached image prefix
        for i, q in enumerate(questions):
            ids = self.prompt_ids(q)
            if q.image is None or not self.cache_images:
                pieces.append(Piece([i], *self._run(ids, q.image)))
                continue
            split = max(j for j, t in enumerate(ids) if t == IMAGE_TOKEN_ID) + 1
            state, hidden = self._prefix(q.image, ids[:split])
            if split == len(ids):  # nothing after the image: the prefix's own logits
                logits = self._logits(hidden.unsqueeze(0))  # [1, V]
                pieces.append(Piece([i], state.clone(), logits))
            else:
                rows.append(i)
                states.append(state)
                suffixes.append(ids[split:])
        pieces += self._continue(rows, states, suffixes)
        return merge_pieces(pieces, self.model.rwkv.emb)

    def _continue(self, rows: list[int], states: list[State], suffixes: list[list[int]]) -> list[Piece]:
        """Prefill the non-empty `suffixes` from `states` (left untouched), batched (module notes)."""
        emb, pieces = self.model.rwkv.emb, []
        groups: dict[int, list[int]] = {}  # GoldFinch: equal total length; Eagle/Finch: all
        for j, (state, suffix) in enumerate(zip(states, suffixes)):
            total = length_key(state) + len(suffix) if isinstance(state, GoldFinchState) else 0
            groups.setdefault(total, []).append(j)
        for group in groups.values():
            m = min(len(suffixes[j]) for j in group)
            parts: dict[tuple[int, int], list[int]] = {}  # (state length, extra tokens) -> rows
            for j in group:
                parts.setdefault((length_key(states[j]), len(suffixes[j]) - m), []).append(j)
            order: list[int] = []
            ready: list[State] = []  # the states before each row's last m tokens, in `order`
            for (_, extra), part in parts.items():
                order += part
                if not extra:
                    ready += [states[j] for j in part]
                    continue
                tokens = torch.tensor([suffixes[j][:extra] for j in part], dtype=torch.long, device=self.device)
                _, state = self.model(tokens, state=cat_states([states[j] for j in part], emb),
                                      last_only=True, return_hidden=True)
                ready.append(state)
            tokens = torch.tensor([suffixes[j][-m:] for j in order], dtype=torch.long, device=self.device)
            # cat copies, so the cached prefix states stay as they were
            hidden, state = self.model(tokens, state=cat_states(ready, emb), last_only=True, return_hidden=True)
            pieces.append(Piece([rows[j] for j in order], state, self._logits(hidden[:, -1])))  # [B, V]
        return pieces

    @torch.inference_mode()
    def answer(self, questions: Sequence[Question]) -> list[str]:
        """Greedy answers for a batch of questions (decoded together, see the module notes)."""
        if not questions:
            return []
        answers: list[str] = [""] * len(questions)
        for piece in self._prefill(questions):
            for i, text in zip(piece.rows, self._decode(piece.state, piece.logits)):
                answers[i] = text
        return answers

    def _decode(self, state: State, logits: torch.Tensor) -> list[str]:
        """Greedy decoding of B prefilled questions: batched `state`, first logits [B, V]."""
        B = logits.shape[0]
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
            if all(done) or t == self.max_new_tokens - 1:  # no step whose logits nobody reads
                break
            hidden, state = self.model(next_tokens.view(B, 1), state=state, return_hidden=True)
            logits = self._logits(hidden[:, -1])  # [B, V]
        texts = [self.tokenizer.decode(ids) for ids in out]
        return [t.split(end)[0].strip() if end else t.strip() for t in texts]


@dataclass
class Piece:
    """Questions (their indices in the batch) that share one batched state and their next-token
    logits [B, V]."""

    rows: list[int]
    state: State
    logits: torch.Tensor


def length_key(state: State) -> int:
    """What must be equal for states to share a batch: the sequence length for GoldFinch (its key
    caches cannot be padded), nothing (0) for Eagle/Finch."""
    return state.length if isinstance(state, GoldFinchState) else 0


def decode_groups(states: Sequence[State]) -> list[list[int]]:
    """Indices of the states that can decode as one batch: all of them for Eagle/Finch, those of
    equal sequence length for GoldFinch (its key caches cannot be padded)."""
    groups: dict[int, list[int]] = {}
    for i, state in enumerate(states):
        groups.setdefault(length_key(state), []).append(i)
    return list(groups.values())


def cat_states(states: Sequence[State], emb: torch.nn.Embedding) -> State:
    """One batched state from states (of any batch sizes) of the same backbone."""
    if isinstance(states[0], GoldFinchState):
        return GoldFinchState.cat(list(states), emb)
    return RWKVState.cat(list(states))


def merge_pieces(pieces: Sequence[Piece], emb: torch.nn.Embedding) -> list[Piece]:
    """The pieces joined into as few batches as `decode_groups` allows."""
    merged = []
    for group in decode_groups([p.state for p in pieces]):
        if len(group) == 1:
            merged.append(pieces[group[0]])
            continue
        parts = [pieces[g] for g in group]
        merged.append(Piece([r for p in parts for r in p.rows], cat_states([p.state for p in parts], emb),
                            torch.cat([p.logits for p in parts])))
    return merged


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
