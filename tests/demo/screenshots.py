"""The README's screenshots of `rwkv-mm demo` (docs/demo_vision.png, docs/demo_music.png).

    .venv/bin/python tests/demo/screenshots.py --runs runs/quickstart --image runs/data/visual_synth/images/eval_01002.png

Starts the demo on the quickstart's models in headless chromium (as the browser test does),
chats about the image, writes a tune, and saves the two pages as small palette PNGs.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from demo_browser import (click, css, free_port, open_tab, serving, start_browser, text_of,  # noqa: E402
                          type_into, upload, wait_for)

from robustness.cli_utils import spawn_cli  # noqa: E402


def small_png(source: Path, dest: Path, colours: int = 96) -> Path:
    """`source` as a palette PNG of `colours` colours (a UI screenshot loses nothing visible), the
    blank space below the page cut off."""
    from PIL import Image

    import numpy as np

    with Image.open(source) as image:
        rgb = image.convert("RGB")
    rows = np.flatnonzero((np.asarray(rgb) < 250).any(axis=(1, 2)))  # rows with more than white
    rgb = rgb.crop((0, 0, rgb.width, min(rgb.height, int(rows[-1]) + 24))) if rows.size else rgb
    rgb.quantize(colours, method=Image.Quantize.MEDIANCUT).save(dest, optimize=True)
    return dest


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="runs/quickstart", help="the quickstart's folder")
    parser.add_argument("--image", required=True, help="the image to chat about")
    parser.add_argument("--questions", nargs="+", default=["What shape is it?", "Where is it?"])
    parser.add_argument("--seed", default="0", help="the tune's seed")
    parser.add_argument("--out", default="docs")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    server = spawn_cli("demo", "--runs", args.runs, "--port", port, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
    browser = None
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_for(lambda: serving(url, server), 240, "the demo")
        browser = start_browser(1180, 1040)
        browser.get(url)
        upload(browser, "#vision-image", Path(args.image))
        wait_for(lambda: css(browser, "#vision-preview img"), 60, "the preview")
        for turn, question in enumerate(args.questions, 1):
            type_into(browser, "#vision-question", question)
            click(browser, "#vision-send")
            wait_for(lambda: f"turn {turn}:" in text_of(browser, "#vision-stats"), 180, f"turn {turn}")
        time.sleep(1)
        browser.execute_script("window.scrollTo(0, 0)")
        browser.save_screenshot(str(out / "raw_vision.png"))
        open_tab(browser, "Music")
        type_into(browser, "#music-prompt", "")
        click(browser, "#music-generate")
        wait_for(lambda: css(browser, "#music-score-svg svg"), 240, "the score")
        time.sleep(1)
        browser.execute_script("window.scrollTo(0, 0)")
        browser.save_screenshot(str(out / "raw_music.png"))
    finally:
        if browser is not None:
            browser.quit()
        server.send_signal(signal.SIGTERM)
        server.wait(30)
    for name in ("vision", "music"):
        small_png(out / f"raw_{name}.png", out / f"demo_{name}.png")
        (out / f"raw_{name}.png").unlink()
        print(f"wrote {out / f'demo_{name}.png'} ({(out / f'demo_{name}.png').stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
