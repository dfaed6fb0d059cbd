"""Independent pure-Python reference for the RWKV World tokenizer (tests only).

Deliberately written without sharing code with ``backbone/tokenizer.py``: it
parses the vocabulary file itself and tokenizes with a byte trie made of
nested dicts, taking the longest vocabulary entry at each position.
"""

from __future__ import annotations

import ast
from pathlib import Path

_END = -1  # key under which a trie node stores the id of the token ending there


class ReferenceTrieTokenizer:
    """Greedy longest-match tokenizer over bytes, built from a vocabulary file."""

    def __init__(self, vocab_path: str | Path) -> None:
        self.pieces: dict[int, bytes] = {}
        self.line_count = 0
        text = Path(vocab_path).read_bytes().decode("utf-8")
        for line in text.splitlines():
            if not line:
                continue
            self.line_count += 1
            head, _, rest = line.partition(" ")
            literal, _, stated_len = rest.rpartition(" ")
            value = ast.literal_eval(literal)
            piece = value.encode("utf-8") if isinstance(value, str) else value
            assert isinstance(piece, bytes), line
            assert len(piece) == int(stated_len), f"length mismatch on line {line!r}"
            token_id = int(head)
            assert token_id not in self.pieces, f"duplicate id {token_id}"
            self.pieces[token_id] = piece

        self.root: dict[int, dict] = {}
        for token_id, piece in self.pieces.items():
            node = self.root
            for byte in piece:
                node = node.setdefault(byte, {})
            assert _END not in node, f"duplicate piece {piece!r}"
            node[_END] = token_id

    def encode_bytes(self, data: bytes) -> list[int]:
        """Token ids for ``data``: longest vocabulary match at every position."""
        out: list[int] = []
        pos, n = 0, len(data)
        while pos < n:
            node = self.root
            best_id, best_end = None, pos
            cur = pos
            while cur < n:
                node = node.get(data[cur])
                if node is None:
                    break
                cur += 1
                if _END in node:
                    best_id, best_end = node[_END], cur
            if best_id is None:
                raise ValueError(f"byte {data[pos]:#04x} at {pos} has no token")
            out.append(best_id)
            pos = best_end
        return out

    def encode(self, text: str) -> list[int]:
        """Token ids for the UTF-8 encoding of ``text``."""
        return self.encode_bytes(text.encode("utf-8"))

    def decode_bytes(self, ids: list[int]) -> bytes:
        """Concatenated token bytes."""
        return b"".join(self.pieces[i] for i in ids)
