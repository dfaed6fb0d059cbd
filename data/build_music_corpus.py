"""Build the bundled ABC corpus (IrishMAN format) from the public-domain collections in music21.

    .venv/bin/python data/build_music_corpus.py --out data/music

Reads every .abc file of music21's corpus folk collections (Essen folksongs, O'Neill's 1850,
Ryan's Mammoth, Aird's Airs, the Nottingham dataset, misc. folk), splits multi-tune files at `X:`
lines, transliterates non-ASCII text with the byte tokenizer's policy (counted), drops tunes
without a key or bar lines, removes exact duplicates, computes IrishMAN-style
control codes and writes `train.json` / `validation.json` (a deterministic ~2% split by hash).

Control codes (TunesFormer/IrishMAN): `S:<sections>` then per section `B:<bars>`, and between
consecutive sections `E:<0-10>` similarity. Approximations here: sections are split at `||`,
`|]`, `:|`, `|:` and `::`; bars are the `|`-separated pieces of a section; E is
round(10 · difflib similarity of the two sections' text).
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import json
import re
from pathlib import Path

COLLECTIONS = ("airdsAirs", "essenFolksong", "miscFolk", "nottingham-dataset", "oneills1850", "ryansMammoth")
_SECTION_MARK = re.compile(r"\|\]|\|\||:\||\|:|::")
_FIELD = re.compile(r"^[A-Za-z]:")


def control_codes(abc: str) -> str:
    """IrishMAN-style S/B/E control codes of one tune (see the module docstring)."""
    music = " ".join(l for l in abc.splitlines() if l.strip() and not _FIELD.match(l) and not l.startswith("%"))
    sections = [s for s in _SECTION_MARK.split(music) if s.strip(" |")]
    lines = [f"S:{len(sections)}"]
    for i, sec in enumerate(sections):
        if i > 0:
            sim = difflib.SequenceMatcher(None, sections[i - 1], sec).ratio()
            lines.append(f"E:{round(10 * sim)}")
        lines.append(f"B:{len([b for b in sec.split('|') if b.strip()])}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="data/music")
    parser.add_argument("--validation-every", type=int, default=50, help="1 in N tunes (by hash) to validation")
    args = parser.parse_args()

    import music21

    from rwkv_mm.music.corpus import _problem, split_abc_file, strip_x_line
    from rwkv_mm.music.tokenizer import ByteTokenizer

    tok = ByteTokenizer()  # its non-ASCII policy: transliterate (é → e), drop the rest, count both

    root = Path(music21.__file__).parent / "corpus"
    files = sorted(f for c in COLLECTIONS for f in (root / c).rglob("*.abc"))
    seen, train, valid, dropped = set(), [], [], {}
    n_read = 0
    for file in files:
        for abc in split_abc_file(file.read_text(encoding="utf-8", errors="replace")):
            n_read += 1
            reason = _problem(abc)
            body = tok.decode(tok.encode(strip_x_line(abc)))
            if reason is None and body in seen:
                reason = "duplicate"
            if reason:
                dropped[reason] = dropped.get(reason, 0) + 1
                continue
            seen.add(body)
            item = {"control code": control_codes(body), "abc notation": "X:1\n" + body}
            digest = int(hashlib.md5(body.encode()).hexdigest(), 16)
            (valid if digest % args.validation_every == 0 else train).append(item)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, items in (("train.json", train), ("validation.json", valid)):
        (out / name).write_text(json.dumps(items, ensure_ascii=True, indent=0) + "\n")
    print(f"{len(files)} files, {n_read} tunes read; kept {len(train)} train + {len(valid)} validation; "
          f"dropped {sum(dropped.values())}: {dropped}; non-ASCII characters transliterated "
          f"{tok.stats.replaced}, dropped {tok.stats.dropped}")
    print(f"wrote {out}/train.json ({(out / 'train.json').stat().st_size / 1e6:.1f} MB), "
          f"{out}/validation.json ({(out / 'validation.json').stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
