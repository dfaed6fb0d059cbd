"""Chat template, image placement and the assistant-only loss mask for LLaVA conversations.

A conversation `[{"from": "human", "value": ...}, {"from": "gpt", "value": ...}, ...]` becomes

    User: {human 1}\n\nAssistant: {gpt 1}\n\nUser: {human 2}\n\nAssistant: {gpt 2}\n\n

(VisualRWKV's template; every piece is configurable). Each human turn is encoded together with
the following assistant prefix (`User: ...\n\nAssistant:`), each answer as ` {gpt}\n\n`, so
training sees exactly the token boundaries that inference sees when it prefills up to
`Assistant:` and generates. Loss falls on the answer tokens and their turn end, in every turn.
The `<image>` tag becomes `num_image_tokens` copies of IMAGE_TOKEN_ID, which the fusion model
replaces by the projected CLIP features.
"""

from __future__ import annotations

from dataclasses import dataclass

from rwkv_mm.constants import IGNORE_INDEX
from rwkv_mm.errors import ConfigError, UserError

IMAGE_TAG = "<image>"
IMAGE_TOKEN_ID = -200  # placeholder id in input_ids (as LLaVA); never reaches the embedding
IMAGE_POSITIONS = ("first", "middle", "last", "keep")


@dataclass
class ChatTemplate:
    """`{user}: {human}{turn_end}{assistant}: {gpt}{turn_end}` per turn."""

    user: str = "User"
    assistant: str = "Assistant"
    turn_end: str = "\n\n"

    def __post_init__(self) -> None:
        for name in ("user", "assistant", "turn_end"):
            if not isinstance(getattr(self, name), str):
                raise ConfigError(name, getattr(self, name), "a string")

    def human_turn(self, text: str) -> str:
        """A human turn followed by the assistant prefix that generation continues from."""
        return f"{self.user}: {text}{self.turn_end}{self.assistant}:"

    def answer(self, text: str) -> str:
        return f" {text}{self.turn_end}"


class ConversationError(UserError):
    """A malformed LLaVA conversation (the message names the sample)."""


def place_image(text: str, position: str) -> str:
    """Move the `<image>` tag of a human turn to the start, middle or end (`keep` leaves it)."""
    if position == "keep":
        return text
    if position not in IMAGE_POSITIONS:
        raise ConfigError("image_position", position, "one of " + ", ".join(IMAGE_POSITIONS))
    body = text.replace(IMAGE_TAG + "\n", "").replace("\n" + IMAGE_TAG, "").replace(IMAGE_TAG, "").strip()
    if position == "first":
        return f"{IMAGE_TAG}\n{body}"
    if position == "last":
        return f"{body}\n{IMAGE_TAG}"
    words = body.split(" ")
    half = len(words) // 2
    return f"{' '.join(words[:half])}\n{IMAGE_TAG}\n{' '.join(words[half:])}".strip(" ")


def validate_conversation(conversations, sample_id: str) -> None:
    """Alternating human/gpt turns starting with human, string values; raises ConversationError."""
    if not isinstance(conversations, list) or not conversations:
        raise ConversationError(f"sample {sample_id}: 'conversations' must be a non-empty list")
    for i, turn in enumerate(conversations):
        if not isinstance(turn, dict) or "from" not in turn or not isinstance(turn.get("value"), str):
            raise ConversationError(f"sample {sample_id}: conversations[{i}] must be "
                                    "{\"from\": \"human\"|\"gpt\", \"value\": str}")
        expected = "human" if i % 2 == 0 else "gpt"
        if turn["from"] != expected:
            raise ConversationError(f"sample {sample_id}: conversations[{i}] is from "
                                    f"{turn['from']!r}, expected {expected!r} (turns alternate, human first)")


def _encode_with_image(text: str, tokenizer, num_image_tokens: int, sample_id: str) -> tuple[list[int], int]:
    """Token ids of `text` with `<image>` expanded; returns (ids, number of image tags)."""
    parts = text.split(IMAGE_TAG)
    ids: list[int] = []
    for j, part in enumerate(parts):
        if j:
            ids.extend([IMAGE_TOKEN_ID] * num_image_tokens)
        if part:
            ids.extend(tokenizer.encode(part))
    return ids, len(parts) - 1


def encode_conversation(conversations: list[dict], tokenizer, num_image_tokens: int,
                        template: ChatTemplate | None = None, image_position: str = "first",
                        has_image: bool = True, add_generation_prompt: bool = False,
                        sample_id: str = "?") -> tuple[list[int], list[bool]]:
    """Token ids and a per-token "is an answer token" flag for a whole conversation.

    With `add_generation_prompt` the conversation may end with a human turn (inference: the
    ids then end with the assistant prefix). Image placement applies to the first human turn
    holding `<image>`; a sample with an image but no tag gets the image in its first turn.
    """
    template = template or ChatTemplate()
    if add_generation_prompt and conversations and conversations[-1].get("from") == "human":
        validate_conversation(conversations + [{"from": "gpt", "value": ""}], sample_id)
    else:
        validate_conversation(conversations, sample_id)
        if len(conversations) % 2:
            raise ConversationError(f"sample {sample_id}: the last turn is from 'human' with no answer")
    n_tags = sum(t["value"].count(IMAGE_TAG) for t in conversations)
    if n_tags > 1:
        raise ConversationError(f"sample {sample_id}: {n_tags} {IMAGE_TAG} tags; one image per sample")
    ids: list[int] = []
    is_answer: list[bool] = []
    n_tags = 0
    for i, turn in enumerate(conversations):
        text = turn["value"]
        if turn["from"] == "human":
            if has_image and (IMAGE_TAG in text or (i == 0 and n_tags == 0 and not _any_tag(conversations))):
                text = place_image(text, image_position)
            elif IMAGE_TAG in text:
                raise ConversationError(f"sample {sample_id}: conversations[{i}] has {IMAGE_TAG} "
                                        "but the sample has no image")
            piece, tags = _encode_with_image(template.human_turn(text), tokenizer, num_image_tokens, sample_id)
            n_tags += tags
            flags = [False] * len(piece)
        else:
            piece = tokenizer.encode(template.answer(text))
            flags = [True] * len(piece)
        ids.extend(piece)
        is_answer.extend(flags)
    return ids, is_answer


def _any_tag(conversations: list[dict]) -> bool:
    return any(IMAGE_TAG in t.get("value", "") for t in conversations)


def to_training_pair(ids: list[int], is_answer: list[bool], ctx_len: int) -> tuple[list[int], list[int]]:
    """(input_ids, targets) of equal length <= ctx_len: targets[t] = ids[t+1] where that token is
    an answer token, else IGNORE_INDEX. Truncates at ctx_len + 1 tokens."""
    ids, is_answer = ids[:ctx_len + 1], is_answer[:ctx_len + 1]
    targets = [tok if ans else IGNORE_INDEX for tok, ans in zip(ids[1:], is_answer[1:])]
    return ids[:-1], targets
