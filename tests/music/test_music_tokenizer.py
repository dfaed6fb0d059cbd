"""ABC byte tokenizer: ids, special tokens, round trip, the counted non-ASCII policy, registry."""

from __future__ import annotations

import pytest

from rwkv_mm.music.tokenizer import ByteTokenizer, to_ascii

TUNE = "L:1/8\nM:4/4\nK:G\n|:GABc dedB|\"Em\"e2ge dBGA|1 B2A2 A4:|2 B2G2 G4|]\n"


def test_special_ids_and_vocab():
    tok = ByteTokenizer()
    assert (tok.vocab_size, tok.pad_id, tok.begin_id, tok.end_id, tok.eos_id) == (128, 0, 2, 3, 3)


def test_round_trip_and_tune_sample():
    tok = ByteTokenizer()
    ids = tok.encode(TUNE)
    assert ids == list(TUNE.encode("ascii")) and all(3 < i < 128 for i in ids)
    assert tok.decode(ids) == TUNE
    sample = tok.encode_tune(TUNE)
    assert sample[0] == 2 and sample[-1] == 3 and sample[1:-1] == ids
    assert tok.decode(sample) == TUNE  # special ids are skipped
    assert tok.decode([0, 2, 75, 58, 71, 3, 0, 200]) == "K:G"
    assert tok.decode_bytes([2, 65, 3]) == b"A"
    assert tok.encode_tune("") == [2, 3]
    assert (tok.stats.replaced, tok.stats.dropped) == (0, 0)


def test_non_ascii_policy_is_counted():
    tok = ByteTokenizer()
    text = "T:Café Straße “x”\x01中\x00\x03\x7f"
    assert tok.decode(tok.encode(text)) == 'T:Cafe Strasse "x"'
    assert tok.stats.replaced == 4  # é ß “ ”
    assert tok.stats.dropped == 5  # \x01 中 \x00 \x03 DEL
    assert tok.stats.replaced_chars["ß"] == 1 and tok.stats.dropped_chars["中"] == 1
    assert "4 characters transliterated, 5 dropped" in tok.stats.summary()
    tok.stats.reset()
    assert (tok.stats.replaced, tok.stats.dropped, len(tok.stats.dropped_chars)) == (0, 0, 0)


def test_line_ends_and_cp437_mojibake():
    tok = ByteTokenizer()
    assert tok.normalize("K:G\r\nAB|\rcd|") == "K:G\nAB|\ncd|"
    assert (tok.stats.dropped, tok.stats.replaced) == (1, 1)  # CR of CRLF dropped; lone CR → LF
    # Essen files: DOS code page 437 bytes read as Latin-1 (\x84 = ä, \x81 = ü, \x99 = Ö)
    assert tok.normalize("M\x84dchen fr\x81h, \x99sterreich") == "Madchen fruh, Osterreich"
    assert to_ascii("\x9e") == ""  # CP437 ₧ has no ASCII form: dropped
    assert to_ascii("é") == "e" and to_ascii("—") == "-" and to_ascii("A") == "A"


def test_tabs_and_newlines_are_text():
    tok = ByteTokenizer()
    assert tok.encode("\tA\n") == [9, 65, 10] and tok.stats.dropped == 0


def test_registered_with_the_backbone_registry():
    pytest.importorskip("rwkv_mm.backbone")
    import rwkv_mm.music  # noqa: F401  (registers "abc-bytes")
    from rwkv_mm.backbone.tokenizer import Tokenizer, available_tokenizers, load_tokenizer

    assert "abc-bytes" in available_tokenizers()
    tok = load_tokenizer("abc-bytes")
    assert isinstance(tok, ByteTokenizer) and isinstance(tok, Tokenizer)
    rwkv_mm.music.register()  # idempotent
