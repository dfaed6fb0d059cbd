"""Tokenizers for the language backbone.

The RWKV "World" tokenizer (vocabulary ``rwkv_vocab_v20230424``) is a greedy
longest-match tokenizer over UTF-8 *bytes*: at every position it emits the
longest vocabulary entry that is a prefix of the remaining bytes.  Ids 1..256
are the 256 single bytes (so every byte string is encodable), id 0 is
end-of-text and is never produced by ``encode``.  The vocabulary file holds
65,529 entries (ids 1..65529); models pad the embedding/head to 65,536 rows.

Encoding uses the Rust implementation from ``pyrwkv-tokenizer``.  Decoding is
done here in Python from the vocabulary file (the Rust ``decode`` panics on
byte sequences that are not valid UTF-8 and on unknown ids), so that partial
UTF-8 sequences - common when streaming generated tokens - are handled.
"""

from __future__ import annotations

import ast
import codecs
import importlib
import operator
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "Tokenizer",
    "WorldTokenizer",
    "StreamDecoder",
    "load_tokenizer",
    "register_tokenizer",
    "available_tokenizers",
    "read_world_vocab",
    "WORLD_VOCAB_NAME",
]

WORLD_VOCAB_NAME = "rwkv_vocab_v20230424.txt"
_WORLD_MODEL_VOCAB_SIZE = 65536
_INSTALL_HINT = "pip install pyrwkv-tokenizer"


@runtime_checkable
class Tokenizer(Protocol):
    """What the rest of the code base expects from a tokenizer."""

    eos_id: int

    @property
    def vocab_size(self) -> int:
        """Number of rows the model's embedding / output head must have."""
        ...

    def encode(self, text: str) -> list[int]:
        """Text to token ids (no end-of-text appended)."""
        ...

    def decode(self, ids: Iterable[int]) -> str:
        """Token ids to text."""
        ...

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """Token ids to the raw bytes they stand for."""
        ...


# --------------------------------------------------------------------------- #
# vocabulary file


def read_world_vocab(path: str | Path) -> dict[int, bytes]:
    """Parse an RWKV World vocabulary file into ``{id: token bytes}``.

    Each line is ``<id> <python literal of str or bytes> <byte length>``;
    ``str`` entries stand for their UTF-8 encoding.  The stated byte length is
    checked.  Both LF and CRLF line endings are accepted.

    Raises:
        ValueError: on a malformed line, a length mismatch or a duplicate id.
    """
    table: dict[int, bytes] = {}
    with open(path, encoding="utf-8", newline="") as f:
        for lineno, raw in enumerate(f, 1):
            line = raw.rstrip("\r\n")
            if not line.strip():
                continue
            try:
                first, last = line.index(" "), line.rindex(" ")
                idx = int(line[:first])
                value = ast.literal_eval(line[first + 1 : last])
                length = int(line[last + 1 :])
            except (ValueError, SyntaxError) as e:
                raise ValueError(f"{path}:{lineno}: malformed vocabulary line {line[:80]!r}") from e
            if isinstance(value, str):
                value = value.encode("utf-8")
            if not isinstance(value, bytes):
                raise ValueError(f"{path}:{lineno}: token is neither str nor bytes")
            if len(value) != length:
                raise ValueError(
                    f"{path}:{lineno}: token {idx} has {len(value)} bytes, line says {length}"
                )
            if idx in table:
                raise ValueError(f"{path}:{lineno}: duplicate token id {idx}")
            table[idx] = value
    return table


def _import_fast_backend() -> Any:
    try:
        return importlib.import_module("pyrwkv_tokenizer")
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "WorldTokenizer needs the Rust RWKV tokenizer: "
            f"{_INSTALL_HINT}  (import of 'pyrwkv_tokenizer' failed: {e})"
        ) from e


def _default_vocab_path(module: Any) -> Path:
    for folder in getattr(module, "__path__", []):
        candidate = Path(folder) / WORLD_VOCAB_NAME
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"{WORLD_VOCAB_NAME} was not found in the pyrwkv_tokenizer package; "
        "pass vocab_path= explicitly"
    )


def _max_token_id(path: Path) -> int:
    """Largest id in a vocabulary file (first field of each line), cheaply."""
    best = 0
    with open(path, encoding="utf-8", newline="") as f:
        for line in f:
            head = line.split(" ", 1)[0].strip()
            if head:
                best = max(best, int(head))
    return best


def _as_id_list(ids: Iterable[int] | Any) -> list[int]:
    """Accept lists/tuples of ints, numpy arrays and torch tensors (1-D).

    Lists are passed through unchecked (callers validate while indexing).
    """
    if isinstance(ids, list):
        return ids
    if hasattr(ids, "tolist"):
        ids = ids.tolist()
        return [ids] if isinstance(ids, int) else ids
    return [operator.index(i) for i in ids]


# --------------------------------------------------------------------------- #
# World tokenizer


class WorldTokenizer:
    """RWKV World tokenizer (``rwkv_vocab_v20230424``) on the Rust backend.

    Args:
        vocab_path: vocabulary file; defaults to the copy shipped inside the
            ``pyrwkv_tokenizer`` package.
        vocab_size: rows of the model's embedding/head (65,536 for the World
            models); must exceed the largest token id.

    A custom vocabulary must contain all 256 single bytes (the World one
    does): the Rust backend silently drops bytes it cannot match, and it only
    parses ASCII entries written as ``str`` literals (``'a'``, not ``b'a'``).

    Decoding rules: id 0 (end-of-text) raises ``ValueError`` unless
    ``skip_eos=True`` is passed; any id that has no vocabulary entry
    (negative, > ``max_token_id``, or a padding row such as 65530..65535)
    raises ``ValueError`` naming it.  ``encode`` raises ``UnicodeEncodeError``
    (a ``ValueError``) for strings holding lone surrogates.
    """

    eos_id: int = 0

    def __init__(
        self, vocab_path: str | Path | None = None, *, vocab_size: int = _WORLD_MODEL_VOCAB_SIZE
    ) -> None:
        module = _import_fast_backend()
        path = Path(vocab_path) if vocab_path is not None else _default_vocab_path(module)
        if not path.is_file():
            raise FileNotFoundError(f"vocabulary file not found: {path}")
        self._vocab_path = path
        try:
            self._fast = module.WorldTokenizer(str(path))
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as e:  # the Rust side panics (BaseException) on lines it can't parse
            raise ValueError(f"pyrwkv_tokenizer could not load {path}: {e}") from e
        # (The Rust vocab_size() is "entries + 1", which is not max id + 1 when
        # the id range has holes, so scan the ids ourselves: tens of ms.)
        self._max_token_id = _max_token_id(path)
        if vocab_size <= self._max_token_id:
            raise ValueError(
                f"vocab_size={vocab_size} is too small for token ids up to {self._max_token_id}"
            )
        self._vocab_size = int(vocab_size)
        self._id_to_bytes: list[bytes | None] | None = None  # built on first decode

    # -- properties -------------------------------------------------------- #

    @property
    def vocab_size(self) -> int:
        """Embedding rows the model needs (65,536 for World models)."""
        return self._vocab_size

    @property
    def max_token_id(self) -> int:
        """Largest id with a vocabulary entry (65,529 for rwkv_vocab_v20230424)."""
        return self._max_token_id

    @property
    def vocab_path(self) -> Path:
        """The vocabulary file in use."""
        return self._vocab_path

    def __repr__(self) -> str:
        return f"WorldTokenizer(vocab_path={str(self._vocab_path)!r}, vocab_size={self._vocab_size})"

    # -- encoding ---------------------------------------------------------- #

    def encode(self, text: str) -> list[int]:
        """Encode ``text`` (greedy longest match over its UTF-8 bytes)."""
        if not isinstance(text, str):
            raise TypeError(f"encode expects str, got {type(text).__name__}")
        return self._fast.encode(text)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Encode several strings in one call into the Rust backend."""
        texts = list(texts)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"encode_batch expects str items, item {i} is {type(t).__name__}")
        return self._fast.encode_batch(texts)

    # -- decoding ---------------------------------------------------------- #

    def _table(self) -> list[bytes | None]:
        table = self._id_to_bytes
        if table is None:
            vocab = read_world_vocab(self._vocab_path)
            table = [None] * (max(vocab) + 1 if vocab else 1)
            for idx, piece in vocab.items():
                if idx < 1:
                    raise ValueError(f"{self._vocab_path}: token id {idx} is reserved")
                table[idx] = piece
            self._id_to_bytes = table
        return table

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes of one token (``ValueError`` for 0 / unknown ids)."""
        return self.decode_bytes([token_id])

    def decode_bytes(self, ids: Iterable[int], *, skip_eos: bool = False) -> bytes:
        """Concatenate the bytes of ``ids``.

        Raises:
            ValueError: for id 0 (unless ``skip_eos``) or ids with no entry.
        """
        table = self._table()
        ids = _as_id_list(ids)
        if skip_eos:
            ids = [i for i in ids if i != self.eos_id]
        n = len(table)
        try:
            if ids and (min(ids) < 1 or max(ids) >= n):
                raise IndexError
            return b"".join(map(table.__getitem__, ids))  # type: ignore[arg-type]
        except (IndexError, TypeError):
            pass
        for pos, i in enumerate(ids):  # slow path: name the offending id
            try:
                i = operator.index(i)
            except TypeError:
                raise TypeError(f"token ids must be integers, got {i!r} at position {pos}") from None
            if i == self.eos_id:
                raise ValueError(
                    f"token id 0 (end-of-text) at position {pos} has no text; "
                    "stop before it or pass skip_eos=True"
                )
            if not (0 < i < n) or table[i] is None:
                raise ValueError(f"token id {i} at position {pos} is not in the vocabulary")
        raise AssertionError("unreachable")  # pragma: no cover

    def decode(self, ids: Iterable[int], *, skip_eos: bool = False) -> str:
        """Decode ids to text; invalid UTF-8 becomes U+FFFD (``errors="replace"``)."""
        return self.decode_bytes(ids, skip_eos=skip_eos).decode("utf-8", errors="replace")


# --------------------------------------------------------------------------- #
# streaming


class StreamDecoder:
    """Incremental detokenizer for generation loops.

    ``push(id)`` returns the text that became complete with this token;
    bytes of a multi-byte UTF-8 character split across tokens are held back
    until the character is complete.  Concatenating every ``push`` result and
    the final ``flush()`` equals ``tokenizer.decode(all_ids)``.
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tokenizer = tokenizer
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        """Add one token; return newly completed text (possibly ``""``)."""
        return self._decoder.decode(self._tokenizer.decode_bytes([token_id]))

    def push_many(self, ids: Iterable[int]) -> str:
        """Add several tokens; return newly completed text."""
        return self._decoder.decode(self._tokenizer.decode_bytes(ids))

    @property
    def pending(self) -> bytes:
        """Bytes held back because they end in an incomplete character."""
        return self._decoder.getstate()[0]

    def flush(self) -> str:
        """Emit what is held back (an incomplete tail becomes U+FFFD) and reset."""
        text = self._decoder.decode(b"", final=True)
        self._decoder.reset()
        return text

    def reset(self) -> None:
        """Drop held-back bytes."""
        self._decoder.reset()


# --------------------------------------------------------------------------- #
# factory

_REGISTRY: dict[str, Callable[..., Tokenizer]] = {}


def register_tokenizer(name: str, factory: Callable[..., Tokenizer], *, overwrite: bool = False) -> None:
    """Make ``load_tokenizer(name, **kwargs)`` call ``factory(**kwargs)``."""
    key = name.strip().lower()
    if not key:
        raise ValueError("tokenizer name must be non-empty")
    if key in _REGISTRY and not overwrite:
        raise ValueError(f"tokenizer {name!r} is already registered")
    _REGISTRY[key] = factory


def available_tokenizers() -> list[str]:
    """Names accepted by :func:`load_tokenizer`."""
    return sorted(_REGISTRY)


def load_tokenizer(name: str = "world", **kwargs: Any) -> Tokenizer:
    """Build a tokenizer by name (case-insensitive), e.g. ``"world"``.

    Extra keyword arguments go to the tokenizer's constructor.
    """
    key = name.strip().lower()
    try:
        factory = _REGISTRY[key]
    except KeyError:
        raise ValueError(
            f"unknown tokenizer {name!r}; available: {', '.join(available_tokenizers())}"
        ) from None
    return factory(**kwargs)


register_tokenizer("world", WorldTokenizer)
register_tokenizer("rwkv_vocab_v20230424", WorldTokenizer)
