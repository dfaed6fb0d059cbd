"""Tests for rwkv_mm.backbone.tokenizer (World tokenizer + streaming decode)."""

from __future__ import annotations

import importlib.util
import random
import sys
from pathlib import Path

import pytest

from rwkv_mm.backbone import tokenizer as tokmod
from rwkv_mm.backbone.tokenizer import (
    StreamDecoder,
    Tokenizer,
    WorldTokenizer,
    load_tokenizer,
    read_world_vocab,
    register_tokenizer,
)


def _load_reference_module():
    # Load by path so this works under any pytest import mode.
    path = Path(__file__).with_name("trie_reference.py")
    spec = importlib.util.spec_from_file_location("_rwkv_mm_trie_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------- #
# fixtures


@pytest.fixture(scope="module")
def tok() -> WorldTokenizer:
    return WorldTokenizer()


@pytest.fixture(scope="module")
def ref(tok):
    return _load_reference_module().ReferenceTrieTokenizer(tok.vocab_path)


MULTILINGUAL = [
    "",
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.\n",
    "你好，世界！这是一个测试。",
    "日本語のテキスト、カタカナとひらがな。",
    "한국어 문장입니다.",
    "مرحبا بالعالم",
    "Здравствуй, мир!",
    "Ελληνικά και עברית",
    "emoji 😀🎉👍🏽 👨‍👩‍👧‍👦 🇯🇵",
    "def f(x):\n\tif x:\n\t\treturn x  # comment\r\n    else:\n\t\treturn None\n",
    "a\x00b\x00\x00c",
    "\x00",
    "\x7f\x01\x1b[31mred\x1b[0m",
    "  leading and trailing spaces   ",
    " " * 300,
    "\n" * 50,
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ℌ𝔞𝔯𝔡 \U0010fffd \ufeff BOM",
    "e\u0301 combining, ﬁ ligature, Å vs A\u030a",
    "\u200b\u200c\u200d zero-width",
    "1234567890 3.14159 -42 1e-9",
    "https://example.com/path?q=1&r=2#frag",
    "<|endoftext|> is just text here",
    "\ud7ff\ue000\uffff edges of the BMP",
]


def _random_strings(tok: WorldTokenizer, ref, n: int, seed: int = 1234) -> list[str]:
    """Random unicode mixed with vocabulary pieces (fixed seed)."""
    rng = random.Random(seed)
    valid_pieces = []
    for piece in ref.pieces.values():
        try:
            valid_pieces.append(piece.decode("utf-8"))
        except UnicodeDecodeError:
            pass
    ranges = [
        (0x00, 0x7F),  # ASCII incl. controls
        (0x80, 0x24F),  # Latin-1 / Latin extended
        (0x370, 0x3FF),  # Greek
        (0x400, 0x4FF),  # Cyrillic
        (0x600, 0x6FF),  # Arabic
        (0x3040, 0x30FF),  # Kana
        (0x4E00, 0x9FFF),  # CJK
        (0xAC00, 0xD7A3),  # Hangul
        (0xE000, 0xF8FF),  # private use
        (0x1F300, 0x1FAFF),  # emoji
        (0x10000, 0x10FFFF),  # anything astral
    ]
    out = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(0, 12)):
            kind = rng.random()
            if kind < 0.45:
                parts.append(rng.choice(valid_pieces))
            elif kind < 0.9:
                lo, hi = rng.choice(ranges)
                parts.append("".join(chr(rng.randint(lo, hi)) for _ in range(rng.randint(1, 6))))
            else:
                parts.append(rng.choice([" ", "\n", "\t", "  ", "\r\n", "\x00"]))
        out.append("".join(parts))
    return out


# --------------------------------------------------------------------------- #
# vocabulary


def test_vocab_file_shape(tok, ref):
    assert ref.line_count == 65529
    assert len(ref.pieces) == 65529
    assert min(ref.pieces) == 1 and max(ref.pieces) == 65529
    for b in range(256):  # ids 1..256 are the single bytes, in order
        assert ref.pieces[b + 1] == bytes([b])
    assert tok.max_token_id == 65529
    assert tok.vocab_size == 65536
    assert tok.eos_id == 0


def test_decode_table_matches_every_token(tok, ref):
    ids = sorted(ref.pieces)
    assert tok.decode_bytes(ids) == b"".join(ref.pieces[i] for i in ids)
    for i in (1, 129, 257, 33155, 65529):
        assert tok.token_bytes(i) == ref.pieces[i]


def test_is_tokenizer_protocol(tok):
    assert isinstance(tok, Tokenizer)


# --------------------------------------------------------------------------- #
# encoding / decoding


@pytest.mark.parametrize("text", MULTILINGUAL)
def test_round_trip_and_reference(tok, ref, text):
    ids = tok.encode(text)
    assert all(isinstance(i, int) for i in ids)
    assert 0 not in ids
    assert tok.decode(ids) == text
    assert tok.decode_bytes(ids) == text.encode("utf-8")
    assert ids == ref.encode(text)


def test_empty_string(tok):
    assert tok.encode("") == []
    assert tok.decode([]) == ""
    assert tok.decode_bytes([]) == b""


def test_greedy_longest_match_examples(tok, ref):
    # 128 spaces is a single token (the last id in the file).
    assert tok.encode(" " * 128) == [65529]
    assert tok.encode(" " * 129) == [65529, ref.encode(" ")[0]]
    assert tok.encode("\x00") == [1]


def test_random_strings_match_reference(tok, ref):
    texts = _random_strings(tok, ref, 400)
    got = tok.encode_batch(texts)
    for text, ids in zip(texts, got):
        assert ids == ref.encode(text), repr(text)
        assert tok.decode(ids) == text
    assert got == [tok.encode(t) for t in texts]


@pytest.mark.slow
def test_matches_rwkv_package_trie_tokenizer(tok, ref):
    rwkv_tokenizer = pytest.importorskip("rwkv.rwkv_tokenizer")
    vocab = Path(rwkv_tokenizer.__file__).with_name("rwkv_vocab_v20230424.txt")
    if not vocab.is_file():
        pytest.skip("rwkv package ships no vocabulary file")
    blink = rwkv_tokenizer.TRIE_TOKENIZER(str(vocab))  # ~3 s, ~300 MB
    texts = MULTILINGUAL + _random_strings(tok, ref, 300, seed=99)
    for text in texts:
        assert tok.encode(text) == blink.encode(text), repr(text)


def test_decode_lenient_on_partial_utf8(tok):
    # id 129 is the lone byte 0x80: not valid UTF-8 on its own.
    assert tok.decode([129]) == "\ufffd"
    e_acute = "é".encode("utf-8")  # two byte tokens
    ids = [e_acute[0] + 1, e_acute[1] + 1]
    assert tok.decode(ids) == "é"
    assert tok.decode(ids[:1]) == "\ufffd"


def test_decode_accepts_arrays(tok):
    np = pytest.importorskip("numpy")
    torch = pytest.importorskip("torch")
    ids = tok.encode("array input 你好")
    assert tok.decode(np.array(ids)) == "array input 你好"
    assert tok.decode(torch.tensor(ids)) == "array input 你好"
    assert tok.decode(tuple(ids)) == "array input 你好"
    assert tok.decode(iter(ids)) == "array input 你好"
    assert tok.decode(torch.tensor(ids[0])) == tok.decode(ids[:1])
    with pytest.raises(TypeError, match="integers"):
        tok.decode([33, 1.5])


@pytest.mark.parametrize("bad", [-1, 65530, 65535, 65536, 10**9])
def test_decode_rejects_unknown_ids(tok, bad):
    with pytest.raises(ValueError, match=str(bad)):
        tok.decode([33, bad, 34])


def test_decode_eos(tok):
    with pytest.raises(ValueError, match="token id 0"):
        tok.decode([33, 0])
    hi = tok.encode("hi")
    assert tok.decode(hi + [0] + hi, skip_eos=True) == "hihi"


def test_encode_type_and_surrogates(tok):
    with pytest.raises(TypeError):
        tok.encode(b"bytes")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        tok.encode_batch(["ok", 3])  # type: ignore[list-item]
    with pytest.raises(UnicodeEncodeError):
        tok.encode("lone \ud800 surrogate")


def _write_tiny_vocab(path: Path, extra: list[str], newline: str = "\n") -> None:
    # Same line format as the real file: str literals for ASCII, bytes literals otherwise.
    lines = [
        f"{b + 1} {chr(b)!r} 1" if b < 0x80 else f"{b + 1} {bytes([b])!r} 1" for b in range(256)
    ]
    path.write_bytes((newline.join(lines + extra) + newline).encode("utf-8"))


def test_explicit_vocab_path(tok, tmp_path):
    vocab = tmp_path / "tiny.txt"
    _write_tiny_vocab(vocab, ["257 'ab' 2", "258 'abc' 3", "259 '你' 3", "261 b'\\xe4\\xbd' 2"], "\r\n")
    table = read_world_vocab(vocab)
    assert table[1] == b"\x00" and table[129] == b"\x80" and table[261] == b"\xe4\xbd"
    assert len(table) == 260
    tiny = WorldTokenizer(vocab, vocab_size=512)
    assert tiny.vocab_path == vocab and tiny.max_token_id == 261 and tiny.vocab_size == 512
    ids = tiny.encode("abcab你x")
    assert ids == [258, 257, 259, ord("x") + 1]
    assert tiny.decode(ids) == "abcab你x"
    assert tiny.decode([261, 0xA0 + 1]) == "你"
    with pytest.raises(ValueError, match="260"):  # a hole in the id range
        tiny.decode([260])
    with pytest.raises(ValueError, match="vocab_size"):
        WorldTokenizer(vocab, vocab_size=261)
    with pytest.raises(FileNotFoundError):
        WorldTokenizer(tmp_path / "missing.txt")
    unparsable = tmp_path / "bytes_ascii.txt"
    unparsable.write_text("1 b'a' 1\n", encoding="utf-8")
    with pytest.raises(ValueError, match="could not load"):
        WorldTokenizer(unparsable)


@pytest.mark.parametrize(
    "bad_line, message",
    [("257 'ab' 3", "has 2 bytes"), ("256 'ab' 2", "duplicate"), ("257 ab 2", "malformed")],
)
def test_read_world_vocab_rejects_bad_lines(tmp_path, bad_line, message):
    vocab = tmp_path / "bad.txt"
    _write_tiny_vocab(vocab, [bad_line])
    with pytest.raises(ValueError, match=message):
        read_world_vocab(vocab)


def test_every_text_token_encodes_to_itself(tok, ref):
    # Checks that the Rust backend parsed every entry: the longest match for a
    # token's own text is the token itself.
    items = []
    for token_id, piece in ref.pieces.items():
        try:
            items.append((token_id, piece.decode("utf-8")))
        except UnicodeDecodeError:
            pass
    assert len(items) > 65000
    got = tok.encode_batch([text for _, text in items])
    assert got == [[token_id] for token_id, _ in items]


def test_missing_backend_message(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyrwkv_tokenizer", None)
    with pytest.raises(ImportError, match="pip install pyrwkv-tokenizer"):
        WorldTokenizer()


# --------------------------------------------------------------------------- #
# streaming


def _stream(tok, ids) -> tuple[str, list[str]]:
    dec = StreamDecoder(tok)
    chunks = [dec.push(i) for i in ids]
    tail = dec.flush()
    return "".join(chunks) + tail, chunks


@pytest.mark.parametrize("text", MULTILINGUAL)
def test_stream_decoder_matches_full_decode(tok, text):
    ids = tok.encode(text)
    streamed, _ = _stream(tok, ids)
    assert streamed == tok.decode(ids) == text


def test_stream_decoder_holds_back_split_character(tok):
    # A rare CJK-extension character is not a token, so it is split into byte tokens.
    char = "\U0002a6a5"
    ids = tok.encode(char)
    assert len(ids) == 4 and all(1 <= i <= 256 for i in ids)
    dec = StreamDecoder(tok)
    assert [dec.push(i) for i in ids[:3]] == ["", "", ""]
    assert dec.pending == char.encode("utf-8")[:3]
    assert dec.push(ids[3]) == char
    assert dec.flush() == ""


def test_stream_decoder_random_ids(tok, ref):
    # Arbitrary id sequences (often invalid UTF-8) must stream to the same text
    # as a one-shot decode with errors="replace".
    rng = random.Random(7)
    byte_ids = list(range(1, 257))
    for _ in range(200):
        ids = [
            rng.choice(byte_ids) if rng.random() < 0.5 else rng.randint(1, 65529)
            for _ in range(rng.randint(0, 20))
        ]
        streamed, _ = _stream(tok, ids)
        assert streamed == tok.decode(ids)


def test_stream_decoder_random_texts(tok, ref):
    for text in _random_strings(tok, ref, 100, seed=5):
        streamed, _ = _stream(tok, tok.encode(text))
        assert streamed == text


def test_stream_decoder_flush_and_reuse(tok):
    dec = StreamDecoder(tok)
    e_acute = "é".encode("utf-8")
    assert dec.push(e_acute[0] + 1) == ""
    assert dec.flush() == "\ufffd"  # incomplete tail is replaced, state reset
    assert dec.push_many(tok.encode("ok ✓")) == "ok ✓"
    with pytest.raises(ValueError):
        dec.push(0)


# --------------------------------------------------------------------------- #
# factory


def test_load_tokenizer():
    assert isinstance(load_tokenizer(" World "), WorldTokenizer)
    assert "world" in tokmod.available_tokenizers()
    with pytest.raises(ValueError, match="unknown tokenizer"):
        load_tokenizer("nope")
    with pytest.raises(ValueError, match="already registered"):
        register_tokenizer("world", WorldTokenizer)
