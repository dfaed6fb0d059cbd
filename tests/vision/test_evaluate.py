"""`rwkv-mm eval gqa|pope` end to end on the synthetic GQA/POPE-format files with a tiny model."""

import json

import pytest

from rwkv_mm.cli import main
from rwkv_mm.vision.checkpoint import save_visual_rwkv
from rwkv_mm.vision.conversation import ChatTemplate
from rwkv_mm.vision.synth import build_synthetic_visual
from vision_test_utils import tiny_vision_config, tiny_visual_model


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("eval")
    data = build_synthetic_visual(tmp / "synth", n_train=2, n_eval=3)
    vision = tiny_vision_config()
    save_visual_rwkv(tiny_visual_model(vision=vision, seed=2), tmp / "model", vision, ChatTemplate(), "first")
    return tmp, data


def _rows(path):
    """(header, answer rows) of an answers file."""
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return rows[0]["rwkv_mm_answers_header"], rows[1:]


def test_gqa_answers_score_and_resume(setup, capsys):
    tmp, data = setup
    ev = data / "eval"
    args = ["eval", "gqa", "--checkpoint", str(tmp / "model"), "--images", str(data / "images"),
            "--questions", str(ev / "llava_gqa_testdev_balanced_questions.jsonl"),
            "--official", str(ev / "testdev_balanced_questions.json"), "--max-new-tokens", "3"]
    out = tmp / "gqa.jsonl"
    assert main(args + ["--answers", str(out), "--batch-size", "4"]) == 0
    header, rows = _rows(out)
    assert header["max_new_tokens"] == 3 and len(header["checkpoint"]["sha256"]) == 64
    n_questions = len((ev / "llava_gqa_testdev_balanced_questions.jsonl").read_text().splitlines())
    assert len(rows) == n_questions
    assert set(rows[0]) == {"question_id", "prompt", "text", "answer_id", "model_id", "metadata"}
    assert "GQA accuracy" in capsys.readouterr().out
    score = json.loads((tmp / "gqa_score.json").read_text())
    assert score["n"] == n_questions and 0 <= score["accuracy"] <= 1
    # a run killed mid-way: keep the header, 5 answers and a torn line; the rerun answers the rest
    lines = out.read_text().splitlines()
    out.write_text("\n".join(lines[:6]) + "\n" + lines[6][:10])
    assert main(args + ["--answers", str(out), "--no-cache", "--batch-size", "1"]) == 0
    from rwkv_mm.vision.evaluate import read_answers
    resumed = read_answers(out)
    assert resumed == {r["question_id"]: r["text"] for r in rows}  # same answers, B=1, no cache
    # the official questions file works directly (answers read from it)
    out2 = tmp / "gqa_official.jsonl"
    assert main(["eval", "gqa", "--checkpoint", str(tmp / "model"), "--images", str(data / "images"),
                 "--questions", str(ev / "testdev_balanced_questions.json"), "--answers", str(out2),
                 "--max-new-tokens", "3"]) == 0
    assert read_answers(out2) == resumed


def test_pope_table_summary_and_chart(setup, capsys):
    tmp, data = setup
    out = tmp / "pope"
    assert main(["eval", "pope", "--checkpoint", str(tmp / "model"), "--images", str(data / "images"),
                 "--questions", str(data / "eval" / "pope"), "--answers", str(out),
                 "--max-new-tokens", "3", "--batch-size", "6"]) == 0
    text = capsys.readouterr().out
    assert "mean F1" in text and "adversarial" in text
    summary = json.loads((out / "pope_summary.json").read_text())
    assert set(summary["splits"]) == {"random", "popular", "adversarial"}
    assert summary["splits"]["random"]["n"] == 3 * 6
    # 3 images, 6 questions each in each split: one image prefill per image serves all 54 questions
    assert summary["cache"]["prefix_computed"] == 3 and summary["cache"]["prefix_reused"] == 51
    assert (out / "pope.png").stat().st_size > 1000


def test_missing_inputs_are_clear_errors(setup, capsys):
    tmp, data = setup
    assert main(["eval", "pope", "--checkpoint", str(tmp / "model"), "--images", str(data / "images"),
                 "--questions", str(tmp / "nope"), "--answers", str(tmp / "o")]) == 2
    assert "nope" in capsys.readouterr().err
