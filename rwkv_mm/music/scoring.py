"""Does a generated tune parse? music21 reads the ABC; a tune counts with >= `min_bars` measures.

music21 is imported inside the functions (its import takes ~0.5-2 s). What music21 needs that a
model's output (or an IrishMAN text) may lack is added by :func:`with_header`:

* IrishMAN control codes (leading ``S:``/``B:``/``E:`` lines with a number) are removed: they
  are not ABC (and ``S:``/``B:`` would be read as the ABC source/book fields);
* ``X:1`` is put first when there is no ``X:`` line (:func:`ensure_x_line`);
* ``L:1/8`` is added when neither ``L:`` nor ``M:`` is given: music21 refuses notes without a
  unit length, and 1/8 is the ABC standard's default without a meter (with an ``M:``, music21
  derives the unit length from the meter itself, as the standard says).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable
from pathlib import Path

_CONTROL_CODE = re.compile(r"^[SBE]:\s*\d+\s*$")


def ensure_x_line(text: str) -> str:
    """`text` with ``X:1`` as its first line unless it already has an ``X:`` line."""
    if re.search(r"^X:", text, re.MULTILINE):
        return text
    return "X:1\n" + text


def strip_control_codes(text: str) -> str:
    """`text` without its leading IrishMAN control-code lines (``S:2``, ``B:8``, ``E:5``)."""
    lines = text.split("\n")
    i = 0
    while i < len(lines) and _CONTROL_CODE.match(lines[i]):
        i += 1
    return "\n".join(lines[i:])


def with_header(text: str) -> str:
    """ABC as music21 wants it (see the module docstring); ends with a newline."""
    body = strip_control_codes(text)
    lines = body.splitlines()
    if not any(l.startswith(("L:", "M:")) for l in lines):
        # after X: (if any), before the rest
        i = next((k + 1 for k, l in enumerate(lines) if l.startswith("X:")), 0)
        lines.insert(i, "L:1/8")
    return ensure_x_line("\n".join(lines) + "\n")


def _parse(text: str):
    """The music21 Score of one tune (the first one if the text holds several)."""
    from music21 import converter, stream

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        score = converter.parse(with_header(text), format="abc")
    if isinstance(score, stream.Opus):
        scores = list(score.scores)
        if not scores:
            raise ValueError("no tune in the text")
        score = scores[0]
    return score


def count_bars(score) -> int:
    """Measures of the longest part (a score without parts: its own measures). music21 makes
    no Measure objects for music with fewer than two bars (``K:G\n|G|``, or text without bar
    lines): notes without measures count as one bar."""
    parts = list(score.parts) or [score]
    bars = max(len(p.getElementsByClass("Measure")) for p in parts)
    return bars if bars or not len(score.flatten().notesAndRests) else 1


def parse_tune(text: str) -> tuple[bool, int, str | None]:
    """``(parsed, number of bars, error)`` for one tune (control codes, X: line optional).

    ``parsed`` is False when music21 raises (malformed ABC) or finds no notes in it; then the
    error says why. Bars are the measures of the longest part (an unterminated last bar
    counts; see :func:`count_bars`). music21 is lenient: any letters a-g read as notes, so
    prose can "parse" — as one bar, which ``min_bars`` then rejects."""
    try:
        score = _parse(text)
        if not len(score.flatten().notesAndRests):
            return False, 0, "no notes"
        return True, int(count_bars(score)), None
    except Exception as err:  # music21 raises many types on malformed ABC
        return False, 0, f"{type(err).__name__}: {str(err)[:120]}"


def parse_rate(texts: Iterable[str], min_bars: int = 4) -> float:
    """Fraction of `texts` that parse into a score with at least `min_bars` bars (nan if none)."""
    texts = list(texts)
    if not texts:
        return float("nan")
    good = 0
    for text in texts:
        ok, bars, _ = parse_tune(text)
        good += ok and bars >= min_bars
    return good / len(texts)


def write_abc_and_midi(text: str, stem: str | Path) -> tuple[Path, Path | None]:
    """Write ``<stem>.abc`` (the text as music21 reads it: control codes removed, X: line
    added) and, when it parses, ``<stem>.mid``; returns both paths (None: no MIDI)."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    abc_path = stem.parent / (stem.name + ".abc")
    abc = with_header(text)
    abc_path.write_text(abc, encoding="utf-8")
    try:
        score = _parse(abc)
        if not len(score.flatten().notes):
            return abc_path, None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            midi_path = Path(score.write("midi", fp=str(stem.parent / (stem.name + ".mid"))))
        return abc_path, midi_path
    except Exception:
        return abc_path, None
