"""GQA scoring is LLaVA-1.5's protocol, step for step (hand-worked values).

LLaVA: `model_vqa_loader.py` writes `outputs.strip()` as "text"; `convert_gqa_for_eval.py` writes
`text.rstrip('.').lower()` as "prediction"; GQA's `eval.py` counts `prediction == answer`.
"""

import json

import pytest

from rwkv_mm.cli import main
from rwkv_mm.vision.checkpoint import save_visual_rwkv
from rwkv_mm.vision.conversation import ChatTemplate
from rwkv_mm.vision.evaluate import read_answers, write_gqa_predictions
from rwkv_mm.vision.metrics import gqa_accuracy, llava_gqa_prediction, normalize_gqa_answer
from rwkv_mm.vision.synth import build_synthetic_visual
from vision_test_utils import tiny_vision_config, tiny_visual_model


def llava_convert(answers_jsonl: str) -> str:
    """LLaVA's scripts/convert_gqa_for_eval.py, as a function of the answers file's lines."""
    rows = []
    for line in answers_jsonl.splitlines():
        res = json.loads(line)
        rows.append({"questionId": res["question_id"], "prediction": res["text"].rstrip(".").lower()})
    return json.dumps(rows)


# decoded output -> loader's .strip() -> converter's .rstrip('.') -> .lower()
@pytest.mark.parametrize("decoded, prediction, gold, right", [
    ("Yes..", "yes", "yes", True),    # 'Yes..' -> 'Yes..' -> 'Yes' -> 'yes' (every trailing '.')
    ("No...", "no", "no", True),      # 'No...' -> 'No...' -> 'No' -> 'no'
    ("yes .", "yes ", "yes", False),  # 'yes .' -> 'yes .' -> 'yes ' -> 'yes ': the space stays, wrong
    (" no\n", "no", "no", True),      # ' no\n' -> 'no' -> 'no' -> 'no'
    ("no..", "no", "no", True),       # before: 'no.' (one '.' removed), scored wrong
    (" Red. ", "red", "red", True),   # ' Red. ' -> 'Red.' -> 'Red' -> 'red'
    ("A.B.", "a.b", "a.b", True),     # inner periods stay
])
def test_decoded_answers_score_as_in_llava(decoded, prediction, gold, right):
    assert normalize_gqa_answer(decoded) == prediction
    assert (gqa_accuracy([decoded], [gold]) == 1.0) is right


@pytest.mark.parametrize("text, prediction", [
    ("Yes..", "yes"), ("No...", "no"), ("yes .", "yes "), ("no", "no"), (" no\n", " no\n"), ("", ""),
])
def test_converter_alone_on_answers_file_texts(text, prediction):
    """convert_gqa_for_eval.py strips nothing: an unstripped text (which no loader writes) stays."""
    assert llava_gqa_prediction(text) == prediction


def test_accuracy_counts_the_hand_worked_cases():
    # right: Yes.., No..., ' no\n'; wrong: 'yes .' -> 3 / 4
    assert gqa_accuracy(["Yes..", "No...", "yes .", " no\n"], ["yes", "no", "yes", "no"]) == 0.75


def test_gold_answers_are_compared_as_they_are():
    """eval.py compares with the official answer unchanged (it is lowercase there)."""
    assert gqa_accuracy(["yes"], ["Yes"]) == 0.0


def test_predictions_file_is_what_llavas_converter_writes(tmp_path):
    answers = {"1": "Yes..", "2": "No...", "3": "yes .", "4": "no", "5": "A.B."}
    jsonl = "\n".join(json.dumps({"question_id": q, "prompt": "?", "text": t}) for q, t in answers.items())
    write_gqa_predictions(answers, tmp_path / "p.json")
    assert (tmp_path / "p.json").read_text() == llava_convert(jsonl)
    assert json.loads((tmp_path / "p.json").read_text())[1] == {"questionId": "2", "prediction": "no"}


def test_eval_writes_stripped_answers_and_llavas_predictions(tmp_path):
    """End to end: the answers file holds stripped texts (as LLaVA's loader writes them) and
    `_predictions.json` is, byte for byte, LLaVA's converter run on that file."""
    data = build_synthetic_visual(tmp_path / "synth", n_train=2, n_eval=2)
    vision = tiny_vision_config()
    save_visual_rwkv(tiny_visual_model(vision=vision, seed=2), tmp_path / "model", vision, ChatTemplate(), "first")
    ev = data / "eval"
    out = tmp_path / "gqa.jsonl"
    assert main(["eval", "gqa", "--checkpoint", str(tmp_path / "model"), "--images", str(data / "images"),
                 "--questions", str(ev / "llava_gqa_testdev_balanced_questions.jsonl"),
                 "--official", str(ev / "testdev_balanced_questions.json"), "--answers", str(out),
                 "--max-new-tokens", "3"]) == 0
    texts = read_answers(out)
    assert texts and all(t == t.strip() for t in texts.values())
    rows = out.read_text().splitlines()[1:]  # the header line is ours, not an answer
    assert (tmp_path / "gqa_predictions.json").read_text() == llava_convert("\n".join(rows))
