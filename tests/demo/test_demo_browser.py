"""`rwkv-mm demo` end to end in Debian's chromium (Selenium): the command serves tiny models from a
quickstart-shaped folder; the test uploads an image and chats, uploads a broken image and sees
the error, tags a generated clip and a recording from chromium's fake microphone, and writes a
tune, as a person would. Screenshots go to the test's tmp folder. Skipped without gradio,
selenium, /usr/bin/chromium or chromedriver."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from demo_browser import (click, css, free_port, missing, open_tab, serving, start_browser, text_of, type_into,
                          upload, wait_for)
from demo_test_utils import TUNE, write_clip, write_image, write_models
from robustness.cli_utils import spawn_cli

pytestmark = [pytest.mark.slow, pytest.mark.skipif(missing() is not None, reason=str(missing()))]


def alnum(text: str) -> str:
    """Letters and digits only: what survives the chat's Markdown rendering unchanged."""
    return "".join(ch for ch in text if ch.isalnum())


@pytest.fixture
def demo(tmp_path):
    """`rwkv-mm demo` on a free port of 127.0.0.1 with the tiny models; yields (url, models)."""
    models = write_models(tmp_path / "runs" / "quickstart")
    port = free_port()
    server = spawn_cli("demo", "--runs", tmp_path / "runs" / "quickstart", "--port", port, "--max-upload-mb", "1",
                       cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       env={"GRADIO_ANALYTICS_ENABLED": "False"})
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_for(lambda: serving(url, server), 240, "the demo to serve its page")
        yield url, models
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)


def expected_answers(models, image: Path, questions: list[str]) -> list[str]:
    """What `rwkv-mm chat` answers (greedy, the demo's defaults) to the questions in turn."""
    from rwkv_mm.backbone import SamplingConfig
    from rwkv_mm.vision.chat import ChatModel
    from rwkv_mm.vision.image_io import open_image

    chat = ChatModel.load(models["vision"]).chat(open_image(image), SamplingConfig(top_p=0.0), max_tokens=128)
    return ["".join(chat.reply(q)) for q in questions]


def test_the_demo_in_a_browser(demo, tmp_path):
    url, models = demo
    image = write_image(tmp_path / "red.png")
    clip = write_clip(tmp_path / "tone.wav")
    questions = ["What colour is it?", "Where is the white corner?"]
    answers = expected_answers(models, image, questions)
    browser = start_browser()
    try:
        browser.get(url)
        wait_for(lambda: {"Vision chat", "Audio tagging", "Music"} <= {b.text.strip() for b in
                                                                       css(browser, "button[role=tab]")},
                 120, "the three tabs")

        # vision: upload, ask twice, the answers stream in and the second turn does not re-read the image
        upload(browser, "#vision-image", image)
        wait_for(lambda: css(browser, "#vision-preview img"), 60, "the decoded image's preview")
        for turn, (question, answer) in enumerate(zip(questions, answers), 1):
            type_into(browser, "#vision-question", question)
            click(browser, "#vision-send")
            stats = wait_for(lambda: f"turn {turn}:" in text_of(browser, "#vision-stats")
                             and text_of(browser, "#vision-stats"), 180, f"turn {turn}'s stats")
            assert "tokens/s" in stats
            assert ("image and question" in stats) == (turn == 1) and ("not read again" in stats) == (turn > 1)
            chat = wait_for(lambda: alnum(answer) in alnum(text_of(browser, "#vision-chat"))
                            and text_of(browser, "#vision-chat"), 60, "the streamed answer")
            assert question in chat
        browser.save_screenshot(str(tmp_path / "vision.png"))

        # a file that is no image: the loader's error, in the page
        broken = tmp_path / "broken.png"
        broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
        upload(browser, "#vision-image", broken)
        wait_for(lambda: "cannot read image" in browser.find_element("tag name", "body").text, 60,
                 "the error about broken.png")
        assert "broken.png" in browser.find_element("tag name", "body").text
        browser.save_screenshot(str(tmp_path / "vision_error.png"))

        # audio: upload a generated clip, read the labels
        from rwkv_mm.audio.checkpoint import load_tagger
        from rwkv_mm.audio.tagger import tag_file

        model, features, ckpt = load_tagger(models["audio"])
        top = tag_file(clip, model, features, ckpt["names"], ckpt["mids"], 3)
        open_tab(browser, "Audio tagging")
        upload(browser, "#audio-clip", clip)
        labels = wait_for(lambda: "(/m/" in text_of(browser, "#audio-labels") and text_of(browser, "#audio-labels"),
                          120, "the labels")
        names = re.findall(r"(\w+) \((/m/\w)\)", labels)
        assert names[0] == (top[0][0], top[0][1]) and len(names) >= 3
        wait_for(lambda: css(browser, "#audio-mel img"), 60, "the spectrogram")
        browser.save_screenshot(str(tmp_path / "audio.png"))
        # ... and a recording from the (fake, beeping) microphone
        click(browser, "#audio-clip button[aria-label=Clear]")
        wait_for(lambda: "(/m/" not in text_of(browser, "#audio-labels"), 60, "the labels to clear")
        click(browser, '#audio-clip button[aria-label="Record audio"]')
        click(browser, "#audio-clip button.record-button")
        time.sleep(2)
        click(browser, "#audio-clip button.stop-button")
        wait_for(lambda: "(/m/" in text_of(browser, "#audio-labels"), 120, "the recording's labels")
        browser.save_screenshot(str(tmp_path / "microphone.png"))

        # music: a prompt, generate, the score is drawn and the files are offered
        open_tab(browser, "Music")
        type_into(browser, "#music-prompt", TUNE)
        click(browser, "#music-generate")
        wait_for(lambda: css(browser, "#music-score-svg svg"), 180, "the score drawn by abcjs")
        assert "4 bars" in text_of(browser, "#music-status")
        assert ".mid" in text_of(browser, "#music-midi")
        wait_for(lambda: css(browser, "#music-audio audio") or css(browser, "#music-audio [data-testid]"), 60,
                 "the preview player")
        browser.save_screenshot(str(tmp_path / "music.png"))
    finally:
        browser.quit()
    for name in ("vision.png", "vision_error.png", "audio.png", "microphone.png", "music.png"):
        assert (tmp_path / name).stat().st_size > 10_000
