"""Byte-level tokenizer of the ABC music models (V=128): id = byte value.

Special ids: pad 0, begin 2, end 3 (ids <= 3 are never text). A training sample is
[2] + bytes + [3].

Non-ASCII policy (ABC is ASCII; titles and lyrics sometimes are not): characters are first
decomposed (NFKD) and their ASCII base letter kept (é → e, ß → ss via a small table); anything
still outside printable ASCII, tab and newline is dropped. `ByteStats` counts both, so corpus
preparation can report what was changed.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

_EXTRA = {"ß": "ss", "Æ": "AE", "æ": "ae", "Ø": "O", "ø": "o", "Œ": "OE", "œ": "oe", "Ł": "L", "ł": "l",
          "‘": "'", "’": "'", "“": '"', "”": '"', "–": "-", "—": "-", "…": "..."}


@dataclass
class ByteStats:
    """What `ByteTokenizer.encode` changed: characters transliterated and characters dropped."""

    replaced: int = 0
    dropped: int = 0


class ByteTokenizer:
    """Bytes 4..127 are text; 0 pad, 2 begin, 3 end. `stats` accumulates the non-ASCII policy."""

    vocab_size = 128
    pad_id = 0
    begin_id = 2
    end_id = 3

    def __init__(self) -> None:
        self.stats = ByteStats()

    def _ascii(self, ch: str) -> str:
        if ch in "\n\t" or " " <= ch <= "~":
            return ch
        base = _EXTRA.get(ch)
        if base is None:
            base = "".join(c for c in unicodedata.normalize("NFKD", ch) if " " <= c <= "~")
        if base:
            self.stats.replaced += 1
            return base
        self.stats.dropped += 1
        return ""

    def encode(self, text: str) -> list[int]:
        """Byte ids of `text` (no begin/end), after the non-ASCII policy."""
        if text.isascii() and all(c in "\n\t" or " " <= c <= "~" for c in text):
            return list(text.encode("ascii"))
        return list("".join(self._ascii(c) for c in text).encode("ascii"))

    def encode_tune(self, text: str) -> list[int]:
        """[begin] + bytes + [end]: one training sample."""
        return [self.begin_id, *self.encode(text), self.end_id]

    def decode(self, ids: Iterable[int]) -> str:
        """Text of the ids, skipping special ids (<= 3) and anything outside 0..127."""
        return bytes(i for i in ids if 3 < int(i) < 128).decode("ascii")
