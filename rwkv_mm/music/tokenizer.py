"""Byte-level tokenizer of the ABC music models (V=128): id = byte value.

Special ids: pad 0, begin 2, end 3 (ids <= 3 are never text). A training sample is
``[2] + bytes + [3]`` (:meth:`ByteTokenizer.encode_tune`).

Non-ASCII / control-character policy (ABC music is ASCII; titles, notes and lyrics sometimes
are not). Every character that is not printable ASCII (``" "`` .. ``"~"``), ``"\\n"`` or
``"\\t"`` goes through these steps, and each one is counted in :class:`ByteStats`:

1. line ends: ``"\\r\\n"`` becomes ``"\\n"`` (the ``"\\r"`` is counted as *dropped*); a lone
   ``"\\r"`` becomes ``"\\n"`` (counted as *replaced*);
2. C1 control characters U+0080..U+009F never occur in real text; they are what DOS code page
   437 bytes become when a file was once converted as if it were Latin-1 (the Essen folksong
   files in music21 are full of them: ``"M\\x84dchen"`` is ``"Mädchen"``). They are read as CP437
   first (``\\x84`` → ``ä``) and then go through step 3;
3. transliteration: a small table (``ß`` → ``ss``, ``æ`` → ``ae``, curly quotes → straight ones,
   dashes → ``-``, …), else the printable-ASCII part of the NFKD decomposition (``é`` → ``e``,
   ``Ö`` → ``O``); a non-empty result is kept and counted as *replaced*;
4. everything else is *dropped*: other control characters (bytes 0..31 except tab and newline,
   so the special ids 0..3 can never appear as text; DEL 127) and characters with no ASCII form
   (``中``, ``₧``, emoji).

``stats.replaced`` / ``stats.dropped`` count characters; ``stats.replaced_chars`` /
``stats.dropped_chars`` count them by character, for corpus reports.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

VOCAB_SIZE = 128
PAD_ID = 0
BEGIN_ID = 2
END_ID = 3

_EXTRA = {"ß": "ss", "Æ": "AE", "æ": "ae", "Ø": "O", "ø": "o", "Œ": "OE", "œ": "oe", "Ł": "L", "ł": "l",
          "Đ": "D", "đ": "d", "Þ": "Th", "þ": "th", "ð": "d", "ı": "i",
          "‘": "'", "’": "'", "‚": ",", "“": '"', "”": '"', "„": '"', "«": '"', "»": '"', "′": "'", "″": '"',
          "‐": "-", "‑": "-", "–": "-", "—": "-", "…": "...", "\u00a0": " ", "•": "*", "×": "x", "÷": "/"}


def _is_text(ch: str) -> bool:
    return " " <= ch <= "~" or ch == "\n" or ch == "\t"


@dataclass
class ByteStats:
    """What the non-ASCII policy changed: characters transliterated and characters dropped."""

    replaced: int = 0
    dropped: int = 0
    replaced_chars: Counter = field(default_factory=Counter)
    dropped_chars: Counter = field(default_factory=Counter)

    def add(self, other: ByteStats) -> None:
        self.replaced += other.replaced
        self.dropped += other.dropped
        self.replaced_chars.update(other.replaced_chars)
        self.dropped_chars.update(other.dropped_chars)

    def reset(self) -> None:
        self.replaced = self.dropped = 0
        self.replaced_chars.clear()
        self.dropped_chars.clear()

    def summary(self, top: int = 8) -> str:
        def most(c: Counter) -> str:
            return ", ".join(f"{ch!r}×{n}" for ch, n in c.most_common(top))

        text = f"{self.replaced} characters transliterated, {self.dropped} dropped"
        if self.replaced:
            text += f"; transliterated: {most(self.replaced_chars)}"
        if self.dropped:
            text += f"; dropped: {most(self.dropped_chars)}"
        return text


def to_ascii(ch: str) -> str:
    """The ASCII text one character becomes under the policy ('' = dropped); no counting.
    Line ends (step 1) are handled by :meth:`ByteTokenizer.normalize`, not here."""
    if _is_text(ch):
        return ch
    if "\x80" <= ch <= "\x9f":  # step 2: CP437 mojibake
        ch = bytes([ord(ch)]).decode("cp437")
    base = _EXTRA.get(ch)
    if base is None:
        base = "".join(c for c in unicodedata.normalize("NFKD", ch) if " " <= c <= "~")
    return base


class ByteTokenizer:
    """Bytes 4..127 are text; 0 pad, 2 begin, 3 end. ``stats`` accumulates the non-ASCII policy
    over every call (see the module docstring); ``stats.reset()`` starts over.

    Satisfies ``rwkv_mm.backbone.tokenizer.Tokenizer`` (``eos_id`` is the end id), and is
    registered there as ``"abc-bytes"`` when :mod:`rwkv_mm.music` is imported."""

    vocab_size = VOCAB_SIZE
    pad_id = PAD_ID
    begin_id = BEGIN_ID
    end_id = END_ID
    eos_id = END_ID

    def __init__(self) -> None:
        self.stats = ByteStats()

    def __repr__(self) -> str:
        return f"ByteTokenizer(vocab_size={self.vocab_size}, pad={self.pad_id}, begin={self.begin_id}, end={self.end_id})"

    def normalize(self, text: str) -> str:
        """`text` as the ASCII the model sees: the policy applied, and counted in ``stats``."""
        if text.isascii() and all(map(_is_text, text)):
            return text  # fast path: nearly every tune
        out = []
        n = len(text)
        for i, ch in enumerate(text):
            if _is_text(ch):
                out.append(ch)
                continue
            if ch == "\r":
                if i + 1 < n and text[i + 1] == "\n":
                    self.stats.dropped += 1
                    self.stats.dropped_chars[ch] += 1
                else:
                    out.append("\n")
                    self.stats.replaced += 1
                    self.stats.replaced_chars[ch] += 1
                continue
            base = to_ascii(ch)
            if base:
                out.append(base)
                self.stats.replaced += 1
                self.stats.replaced_chars[ch] += 1
            else:
                self.stats.dropped += 1
                self.stats.dropped_chars[ch] += 1
        return "".join(out)

    def encode(self, text: str) -> list[int]:
        """Byte ids of `text` (no begin/end), after the non-ASCII policy: all in 4..127."""
        return list(self.normalize(text).encode("ascii"))

    def encode_tune(self, text: str) -> list[int]:
        """``[begin] + bytes + [end]``: one training sample."""
        return [self.begin_id, *self.encode(text), self.end_id]

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The bytes of the text ids, skipping special ids (<= 3) and anything outside 0..127."""
        return bytes(i for i in map(int, ids) if 3 < i < VOCAB_SIZE)

    def decode(self, ids: Iterable[int]) -> str:
        """Text of the ids, skipping special ids (<= 3) and anything outside 0..127."""
        return self.decode_bytes(ids).decode("ascii")


def register() -> None:
    """Make ``rwkv_mm.backbone.load_tokenizer("abc-bytes")`` build a :class:`ByteTokenizer`
    (idempotent; done by ``import rwkv_mm.music``)."""
    from rwkv_mm.backbone import available_tokenizers, register_tokenizer

    if "abc-bytes" not in available_tokenizers():
        register_tokenizer("abc-bytes", ByteTokenizer)
