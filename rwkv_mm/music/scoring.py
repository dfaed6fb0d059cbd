"""Does a generated tune parse? music21 reads the ABC; a tune counts with >= min_bars measures."""

from __future__ import annotations

import warnings
from pathlib import Path

_HEADER_DEFAULTS = (("X:", "X:1"), ("L:", "L:1/8"), ("M:", "M:4/4"))


def with_header(text: str) -> str:
    """ABC as music21 wants it: an X: line first; L:/M: defaults when absent; control codes
    (IrishMAN's S:/B:/E: lines, not ABC) removed."""
    lines = [l for l in text.splitlines() if not (len(l) > 1 and l[0] in "SBE" and l[1] == ":")]
    body = "\n".join(lines)
    head = [default for field, default in _HEADER_DEFAULTS if not any(l.startswith(field) for l in lines)]
    return "\n".join(head + [body]) + "\n"


def parse_tune(text: str) -> tuple[bool, int, str | None]:
    """(parsed, number of bars, error) for one tune."""
    from music21 import converter

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            score = converter.parse(with_header(text), format="abc")
        parts = score.parts if score.parts else [score]
        bars = max(len(p.getElementsByClass("Measure")) for p in parts)
        return True, int(bars), None
    except Exception as err:  # music21 raises many types on malformed ABC
        return False, 0, f"{type(err).__name__}: {str(err)[:80]}"


def parse_rate(texts: list[str], min_bars: int = 4) -> float:
    """Fraction of `texts` that parse into a score with at least `min_bars` bars."""
    if not texts:
        return float("nan")
    good = 0
    for text in texts:
        ok, bars, _ = parse_tune(text)
        good += ok and bars >= min_bars
    return good / len(texts)


def write_abc_and_midi(text: str, stem: str | Path) -> tuple[Path, Path | None]:
    """Write `<stem>.abc` and, when it parses, `<stem>.mid`."""
    stem = Path(stem)
    abc_path = stem.with_suffix(".abc")
    abc_path.write_text(with_header(text))
    try:
        from music21 import converter

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            score = converter.parse(abc_path.read_text(), format="abc")
            midi_path = Path(score.write("midi", fp=str(stem.with_suffix(".mid"))))
        return abc_path, midi_path
    except Exception:
        return abc_path, None
