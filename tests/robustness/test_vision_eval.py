"""`rwkv-mm eval gqa|pope` and `chat` against bad inputs: unreadable images (raise naming the
question, or skip and list), answers files from other settings or checkpoints (refused, not
mixed), duplicate question ids, malformed question rows and out-of-range flags."""

from __future__ import annotations

import json
import os

import pytest
from PIL import Image

from rwkv_mm.vision.answers_file import HEADER_KEY, read_answers
from rwkv_mm.vision.checkpoint import save_visual_rwkv
from rwkv_mm.vision.conversation import ChatTemplate
from rwkv_mm.vision.eval_files import read_gqa_questions
from robustness.cli_utils import assert_user_error, run_cli
from vision.vision_test_utils import tiny_vision_config, tiny_visual_model  # tests/vision

COLOURS = {"a": (250, 10, 10), "b": (10, 250, 10), "c": (10, 10, 250)}


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """A tiny model (and a second one), 3 images (c.png corrupt), POPE and GQA question files."""
    tmp = tmp_path_factory.mktemp("vision_eval")
    vision = tiny_vision_config()
    save_visual_rwkv(tiny_visual_model(vision=vision, seed=2), tmp / "model", vision, ChatTemplate(), "first")
    save_visual_rwkv(tiny_visual_model(vision=vision, seed=3), tmp / "model2", vision, ChatTemplate(), "first")
    images = tmp / "images"
    images.mkdir()
    for name, colour in COLOURS.items():
        Image.new("RGB", (32, 32), colour).save(images / f"{name}.png")
    (images / "c.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    pope = [{"question_id": i, "image": f"{n}.png", "text": f"Is it {n}{k}?", "label": ("yes", "no")[k]}
            for i, (n, k) in enumerate([(n, k) for n in "abc" for k in (0, 1)], 1)]
    _jsonl(tmp / "pope" / "coco_pope_random.json", pope)
    gqa = [{"question_id": f"q{i}", "image": f"{n}.png", "text": f"Colour {i}?"}
           for i, n in enumerate("aabbc")]
    _jsonl(tmp / "gqa.jsonl", gqa)
    (tmp / "gqa_official.json").write_text(json.dumps({q["question_id"]: {"imageId": q["image"][0],
                                                                          "question": q["text"],
                                                                          "answer": "red"} for q in gqa}))
    return tmp


def _jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _pope(bench, out, *extra, questions=None, checkpoint="model"):
    return run_cli("eval", "pope", "--checkpoint", bench / checkpoint, "--images", bench / "images",
                   "--questions", questions or bench / "pope" / "coco_pope_random.json",
                   "--answers", out, "--max-new-tokens", "1", *extra)


def _gqa(bench, out, *extra, questions=None):
    return run_cli("eval", "gqa", "--checkpoint", bench / "model", "--images", bench / "images",
                   "--questions", questions or bench / "gqa.jsonl", "--official", bench / "gqa_official.json",
                   "--answers", out, "--max-new-tokens", "1", *extra)


# ------------------------------------------------------------------ unreadable images
def test_corrupt_image_stops_with_the_question_and_file_named(bench, tmp_path):
    result = _pope(bench, tmp_path / "p")
    assert_user_error(result, "question 5", "c.png", "--on-error skip")
    # what was answered before the failure stays (resumable); nothing about c.png is written
    assert set(read_answers(tmp_path / "p" / "random.jsonl")) <= {"1", "2", "3", "4"}


def test_skip_lists_the_questions_and_leaves_them_out_of_the_denominator(bench, tmp_path):
    result = _pope(bench, tmp_path / "p", "--on-error", "skip")
    assert result.rc == 0, result.err
    assert "2 of 6 questions skipped" in result.err and "excluded from the denominator" in result.err
    summary = json.loads((tmp_path / "p" / "pope_summary.json").read_text())
    split = summary["splits"]["random"]
    assert split["n"] == 4 and split["n_skipped"] == 2
    assert split["tp"] + split["fp"] + split["tn"] + split["fn"] == 4
    skipped = summary["skipped"]["random"]
    assert [s["question_id"] for s in skipped] == ["5", "6"]
    assert all(s["image"].endswith("c.png") and s["reason"] for s in skipped)
    assert "4 (2 skipped, not counted)" in result.out  # the table says so too


def test_gqa_skip_scores_the_rest_and_says_how_many_were_skipped(bench, tmp_path):
    out = tmp_path / "g.jsonl"
    result = _gqa(bench, out, "--on-error", "skip", "--batch-size", "2")
    assert result.rc == 0, result.err
    assert "4 questions; 1 skipped, not counted" in result.out
    score = json.loads((tmp_path / "g_score.json").read_text())
    assert score["n"] == 4 and score["n_skipped"] == 1 and score["skipped"][0]["question_id"] == "q4"
    predictions = json.loads((tmp_path / "g_predictions.json").read_text())
    assert sorted(p["questionId"] for p in predictions) == ["q0", "q1", "q2", "q3"]  # no header row


# ------------------------------------------------------------------ answers files
def test_rerun_with_other_settings_is_refused(bench, tmp_path):
    out = tmp_path / "p"
    assert _pope(bench, out, "--limit", "4").rc == 0
    header = json.loads((out / "random.jsonl").read_text().splitlines()[0])[HEADER_KEY]
    assert header["max_new_tokens"] == 1 and header["benchmark"] == "pope/random"
    before = (out / "random.jsonl").read_bytes()
    result = run_cli("eval", "pope", "--checkpoint", bench / "model", "--images", bench / "images",
                     "--questions", bench / "pope" / "coco_pope_random.json", "--answers", out,
                     "--max-new-tokens", "2", "--limit", "4")
    assert_user_error(result, "random.jsonl", "max_new_tokens", "--answers")
    assert (out / "random.jsonl").read_bytes() == before
    # batch size and the image cache do not change answers: the same file resumes with them
    assert _pope(bench, out, "--limit", "4", "--batch-size", "1", "--no-cache").rc == 0
    assert (out / "random.jsonl").read_bytes() == before


def test_rerun_with_another_checkpoint_is_refused_a_touched_one_is_not(bench, tmp_path):
    out = tmp_path / "p"
    assert _pope(bench, out, "--limit", "2").rc == 0
    assert_user_error(_pope(bench, out, "--limit", "2", checkpoint="model2"), "random.jsonl",
                      "another checkpoint")
    projector = bench / "model" / "projector.pth"
    stat = projector.stat()
    os.utime(projector, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # same content, new mtime
    try:
        assert _pope(bench, out, "--limit", "2").rc == 0
    finally:
        os.utime(projector, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_answers_without_a_header_are_not_mixed_in(bench, tmp_path):
    out = tmp_path / "p"
    _jsonl(out / "random.jsonl", [{"question_id": "1", "prompt": "Is it a0?", "text": "", "answer_id": "x",
                                   "model_id": "x", "metadata": {}}])
    assert_user_error(_pope(bench, out, "--limit", "2"), "random.jsonl", "header")


def test_answers_for_another_prompt_are_refused(bench, tmp_path):
    out = tmp_path / "p"
    assert _pope(bench, out, "--limit", "2").rc == 0
    rows = [dict(q, text=q["text"] + " really") for q in
            map(json.loads, (bench / "pope" / "coco_pope_random.json").read_text().splitlines())]
    _jsonl(tmp_path / "q" / "coco_pope_random.json", rows)
    assert_user_error(_pope(bench, out, "--limit", "2", questions=tmp_path / "q" / "coco_pope_random.json"),
                      "question 1", "random.jsonl")


# ------------------------------------------------------------------ question files
def test_duplicate_question_ids_are_an_error(bench, tmp_path):
    rows = [{"question_id": 1, "image": "a.png", "text": "Red?", "label": "yes"},
            {"question_id": 2, "image": "a.png", "text": "Blue?", "label": "no"},
            {"question_id": "1", "image": "b.png", "text": "Green?", "label": "yes"}]
    _jsonl(tmp_path / "q" / "coco_pope_random.json", rows)
    assert_user_error(_pope(bench, tmp_path / "p", questions=tmp_path / "q" / "coco_pope_random.json"),
                      "'1'", "coco_pope_random.json", "lines 1 and 3")
    _jsonl(tmp_path / "g.jsonl", [{"question_id": "x", "image": "a.png", "text": "?"}] * 2)
    assert_user_error(_gqa(bench, tmp_path / "a.jsonl", questions=tmp_path / "g.jsonl"), "'x'", "g.jsonl")
    (tmp_path / "official.json").write_text('{"7": {"imageId": "a", "question": "?"}, '
                                            '"7": {"imageId": "b", "question": "??"}}')
    with pytest.raises(ValueError, match="'7' appears twice.*official.json"):
        read_gqa_questions(tmp_path / "official.json", bench / "images")


@pytest.mark.parametrize("image", [None, 3, ["a.png"], "../model/visual_rwkv.json"])
def test_question_with_a_bad_image_field(bench, tmp_path, image):
    _jsonl(tmp_path / "q" / "coco_pope_random.json",
           [{"question_id": 1, "image": "a.png", "text": "Red?", "label": "yes"},
            {"question_id": 9, "image": image, "text": "Red?", "label": "no"}])
    assert_user_error(_pope(bench, tmp_path / "p", questions=tmp_path / "q" / "coco_pope_random.json"),
                      "question 9", "coco_pope_random.json, line 2")


# ------------------------------------------------------------------ flags
@pytest.mark.parametrize("flag,value", [("--batch-size", "0"), ("--max-new-tokens", "-1"),
                                        ("--max-new-tokens", "0"), ("--limit", "-3"), ("--on-error", "ignore")])
def test_eval_flags_out_of_range(bench, tmp_path, flag, value):
    result = run_cli("eval", "pope", "--checkpoint", bench / "model", "--images", bench / "images",
                     "--questions", bench / "pope", "--answers", tmp_path / "p", flag, value)
    assert result.rc == 2 and f"argument {flag}" in result.err, result.err
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize("flag,value", [("--max-tokens", "0"), ("--top-k", "-1"), ("--top-p", "1.5"),
                                        ("--temperature", "nan"), ("--seed", "-1")])
def test_chat_flags_out_of_range(bench, flag, value):
    result = run_cli("chat", "--checkpoint", bench / "model", "--prompt", "hi", flag, value)
    assert result.rc == 2 and f"argument {flag}" in result.err, result.err


def test_chat_with_an_unreadable_image_fails_before_loading_the_model(bench, tmp_path):
    result = run_cli("chat", "--checkpoint", tmp_path / "no_model", "--image", bench / "images" / "c.png",
                     "--prompt", "hi")
    assert_user_error(result, "c.png", "cannot read image")


def test_quick_eval_after_training_raises_or_skips_unreadable_images(bench):
    from rwkv_mm.backbone import load_tokenizer
    from rwkv_mm.errors import UserError
    from rwkv_mm.runners.visual_rwkv import VisualEvalConfig, VisualRunConfig, quick_eval
    from rwkv_mm.vision.checkpoint import load_visual_rwkv
    from rwkv_mm.vision.preprocess import ImageProcessor

    model, meta = load_visual_rwkv(bench / "model")
    args = (model, load_tokenizer("world"), ImageProcessor(model.vit.image_size))
    evals = dict(pope_questions=str(bench / "pope" / "coco_pope_random.json"), pope_images=str(bench / "images"),
                 max_new_tokens=1, show=0)
    with pytest.raises(UserError, match="question 5.*c.png"):
        quick_eval(*args, VisualRunConfig(eval=VisualEvalConfig(**evals)))
    out = quick_eval(*args, VisualRunConfig(eval=VisualEvalConfig(**evals, on_error="skip")))
    assert out["pope_skipped"] == 2 and 0 <= out["pope_f1"] <= 1
