"""Build the bundled ABC corpus (IrishMAN format) from the folk collections shipped in music21.

    .venv/bin/python data/build_music_corpus.py --out data/music

Sources (music21's ``corpus`` folder): Essen folksongs (``essenFolksong``; non-commercial
distribution permitted, see music21/corpus/essenFolksong/license.txt), O'Neill's Music of
Ireland 1850 (``oneills1850``), Ryan's Mammoth Collection (``ryansMammoth``), Aird's Airs
(``airdsAirs``), American fife / Northumbrian minstrelsy (``miscFolk``) and the Nottingham
sample (``nottingham-dataset``): 12,949 tunes. music21's ``josquin`` folder (29 polyphonic
pieces, GPL-licensed, without bar lines) is not used.

Steps, all deterministic (files in sorted order, no randomness):

1. split each file into tunes at ``X:`` lines (:func:`rwkv_mm.music.corpus.split_abc_file`);
2. drop tunes that are empty / have no key / no music / no bar lines (``tune_problem``);
3. quoted-printable debris in Ryan's Mammoth is undone: a line-final ``=20`` (an encoded
   trailing space) is removed and ``=3D`` becomes ``=`` (neither is valid ABC);
   IrishMAN-style cleaning (``clean_abc``): no ``X:``, header reduced to L, M, (P, V), K;
   titles, notes, lyrics and comments removed;
4. the byte tokenizer's non-ASCII policy (transliterate, drop the rest; counted);
5. drop exact duplicates (after cleaning) and, with ``--check-parse``, tunes that music21
   cannot parse (with music21 10.5.1 every kept tune parses, so the check is off by default:
   it takes ~7 minutes on 2 cores);
6. control codes (below); split by the MD5 of the cleaned tune: 1 in ``--validation-every``
   (50 → ~2%) goes to validation;
7. write ``train.json`` / ``validation.json`` as lists of
   ``{"control code": ..., "abc notation": "X:1\\n" + tune}`` (IrishMAN's layout).

Control codes (TunesFormer / IrishMAN): ``S:<number of sections>``, then for each section
``E:<similarity>`` to every earlier section (earliest first; none for the first section)
followed by ``B:<bars in the section>``; e.g. ``S:2\\nB:9\\nE:4\\nB:9\\n``. As computed here:

* bar lines are ``|`` runs with their repeat/end decorations (``|``, ``||``, ``|]``, ``[|``,
  ``|:``, ``:|``, ``::``, ``:||:``, …); a section ends at every bar line other than a plain
  ``|`` — except a ``:|`` directly followed by a second-ending number (``:|2`` / ``:|[2``),
  which stays in the same section (TunesFormer's split would start a 1-bar section there);
* a bar is a piece between bar lines holding at least one note or rest (pickup bars count);
* E = round(10 · (1 − Levenshtein(a, b) / max(|a|, |b|))) over the two sections' music with
  whitespace removed (TunesFormer's edit similarity, quantised to 0..10).
Approximations: inline-field and chord-symbol text counts as music for E; section markers
inside ``"..."`` annotations are not expected and not guarded against.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import time
from collections import Counter
from pathlib import Path

COLLECTIONS = ("airdsAirs", "essenFolksong", "miscFolk", "nottingham-dataset", "oneills1850", "ryansMammoth")
_BARLINE = re.compile(r"[:\[]*\|[\]|:]*|::")
_VOLTA = re.compile(r"^\s*\[?[2-9]")
_NOTE = re.compile(r"[A-Ga-gzxZ]")
_FIELD_LINE = re.compile(r"^[A-Za-z]:")
_QP_SPACE = re.compile(r"=20[ \t]*$", re.MULTILINE)


def undo_quoted_printable(abc: str) -> tuple[str, int]:
    """``abc`` without line-final ``=20`` and with ``=3D`` → ``=``; and how many were fixed."""
    abc, n1 = _QP_SPACE.subn("", abc)
    n2 = abc.count("=3D")
    return abc.replace("=3D", "="), n1 + n2


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insert / delete / substitute, cost 1), bit-parallel (Myers 1999)."""
    if len(a) < len(b):
        a, b = b, a
    m = len(b)
    if m == 0:
        return len(a)
    peq: dict[str, int] = {}
    for i, c in enumerate(b):
        peq[c] = peq.get(c, 0) | (1 << i)
    full = (1 << m) - 1
    top = 1 << (m - 1)
    pv, mv, score = full, 0, m
    for c in a:
        eq = peq.get(c, 0)
        xv = eq | mv
        xh = (((eq & pv) + pv) ^ pv) | eq
        ph = (mv | ~(xh | pv)) & full
        mh = pv & xh
        if ph & top:
            score += 1
        elif mh & top:
            score -= 1
        ph = ((ph << 1) | 1) & full
        mh = (mh << 1) & full
        pv = (mh | ~(xv | ph)) & full
        mv = ph & xv
    return score


def edit_similarity(a: str, b: str) -> int:
    """round(10 · (1 − distance / longer length)): 10 = identical, 0 = nothing in common."""
    n = max(len(a), len(b))
    return 10 if n == 0 else round(10 * (1 - levenshtein(a, b) / n))


def sections_of(tune: str) -> list[list[str]]:
    """The tune's sections, each a list of bars (music text without whitespace)."""
    music = "".join(l for l in tune.splitlines() if l.strip() and not _FIELD_LINE.match(l))
    music = re.sub(r"\s+", "", music.replace("\\", ""))
    sections: list[list[str]] = [[]]
    pos = 0
    for m in [*_BARLINE.finditer(music), None]:
        piece = music[pos: m.start() if m else len(music)]
        if _NOTE.search(piece):
            sections[-1].append(piece)
        if m is None:
            break
        pos = m.end()
        bar = m.group()
        if bar != "|" and sections[-1] and not (":" in bar and _VOLTA.match(music[pos:])):
            sections.append([])
    return [s for s in sections if s]


def control_codes(tune: str) -> str:
    """IrishMAN-style S/B/E control codes of one cleaned tune (see the module docstring)."""
    sections = sections_of(tune)
    texts = ["|".join(s) for s in sections]
    lines = [f"S:{len(sections)}"]
    for i, sec in enumerate(sections):
        lines += [f"E:{edit_similarity(texts[j], texts[i])}" for j in range(i)]
        lines.append(f"B:{len(sec)}")
    return "\n".join(lines) + "\n"


def _parses(tune: str) -> bool:
    from rwkv_mm.music.scoring import parse_tune

    return parse_tune(tune)[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="data/music")
    parser.add_argument("--validation-every", type=int, default=50, help="1 in N tunes (by hash) to validation")
    parser.add_argument("--check-parse", action="store_true",
                        help="also drop tunes music21 cannot parse (~7 min on 2 cores; none are, with music21 10.5)")
    parser.add_argument("--workers", type=int, default=2, help="processes for the music21 parse check")
    args = parser.parse_args(argv)

    import music21

    from rwkv_mm.music.corpus import clean_abc, split_abc_file, tune_problem
    from rwkv_mm.music.tokenizer import ByteTokenizer

    t0 = time.time()
    tok = ByteTokenizer()
    root = Path(music21.__file__).parent / "corpus"
    files = sorted(f for c in COLLECTIONS for f in (root / c).rglob("*.abc"))
    seen: set[str] = set()
    tunes: list[str] = []
    read: Counter = Counter()
    dropped: Counter = Counter()
    qp_fixes = 0
    for file in files:
        collection = file.relative_to(root).parts[0]
        for abc in split_abc_file(file.read_text(encoding="utf-8")):
            read[collection] += 1
            reason = tune_problem(abc)
            if reason is None:
                abc, fixed = undo_quoted_printable(abc)
                qp_fixes += fixed
                tune = tok.normalize(clean_abc(abc))
                reason = "duplicate" if tune in seen else None
            if reason:
                dropped[reason] += 1
                continue
            seen.add(tune)
            tunes.append(tune)

    if args.check_parse:
        if args.workers > 1:
            from multiprocessing import Pool

            with Pool(args.workers) as pool:
                ok = pool.map(_parses, tunes, chunksize=64)
        else:
            ok = [_parses(t) for t in tunes]
        dropped["music21 cannot parse"] = ok.count(False)
        tunes = [t for t, good in zip(tunes, ok) if good]

    train, valid = [], []
    for tune in tunes:
        item = {"control code": control_codes(tune), "abc notation": "X:1\n" + tune}
        digest = int(hashlib.md5(tune.encode()).hexdigest(), 16)
        (valid if digest % args.validation_every == 0 else train).append(item)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, items in (("train.json", train), ("validation.json", valid)):
        (out / name).write_text(json.dumps(items, ensure_ascii=True, indent=0) + "\n")
    sections = Counter(int(i["control code"].split("\n")[0][2:]) for i in train + valid)
    print(f"{len(files)} files, {sum(read.values())} tunes read ({', '.join(f'{c} {n}' for c, n in sorted(read.items()))})")
    print(f"kept {len(train)} train + {len(valid)} validation = {len(train) + len(valid)}; "
          f"dropped {sum(dropped.values())}: {dict(sorted(dropped.items()))}")
    print(f"quoted-printable fixes: {qp_fixes}; non-ASCII policy (after cleaning): {tok.stats.summary()}")
    print(f"sections per tune: {dict(sorted(sections.items()))}")
    for name in ("train.json", "validation.json"):
        print(f"wrote {out / name} ({(out / name).stat().st_size / 1e6:.2f} MB)")
    print(f"{time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
