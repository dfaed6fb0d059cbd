"""GQA normalisation and POPE parsing/metrics against hand-computed fixtures."""

import math

import pytest

from rwkv_mm.vision.metrics import gqa_accuracy, normalize_gqa_answer, parse_pope_answer, pope_metrics


@pytest.mark.parametrize("text,expected", [
    ("Red.", "red"), ("  left  ", "left"), ("Yes", "yes"), ("A.B.", "a.b"), ("", ""), ("no..", "no"),
])
def test_gqa_normalisation(text, expected):
    assert normalize_gqa_answer(text) == expected


def test_gqa_accuracy():
    assert gqa_accuracy(["Red.", "blue", "Left"], ["red", "green", "left"]) == pytest.approx(2 / 3)
    assert math.isnan(gqa_accuracy([], []))
    with pytest.raises(ValueError):
        gqa_accuracy(["a"], [])


@pytest.mark.parametrize("text,expected", [
    ("No.", "no"), ("Yes, there is a dog.", "yes"), ("There is not a cat", "no"),
    ("no, not really", "no"), ("", "yes"), ("Yes. No.", "yes"), ("Nope", "yes"), ("NO", "yes"),
    ("I see no cat", "no"), ("Yes", "yes"), ("No, there isn't.", "no"),
])
def test_pope_parsing(text, expected):
    assert parse_pope_answer(text) == expected


def test_pope_metrics_hand_computed():
    preds = ["Yes", "Yes", "No", "No.", "Yes, there is.", "There is not"]
    labels = ["yes", "no", "no", "yes", "yes", "no"]
    # parsed: yes yes no no yes no -> TP=2 (0,4), FP=1 (1), TN=2 (2,5), FN=1 (3)
    m = pope_metrics(preds, labels)
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (2, 1, 2, 1)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["yes_ratio"] == pytest.approx(3 / 6)


def test_pope_all_no_has_zero_f1_and_bad_labels_fail():
    m = pope_metrics(["No"] * 4, ["yes", "no", "yes", "no"])
    assert m["f1"] == 0 and m["yes_ratio"] == 0 and m["accuracy"] == 0.5
    with pytest.raises(ValueError, match="label 0"):
        pope_metrics(["yes"], ["maybe"])


def test_pope_f1_is_the_harmonic_mean_when_precision_and_recall_differ():
    preds = ["Yes", "Yes, there is.", "Yes", "No", "No.", "There is not", "Yes", "No"]
    labels = ["yes", "yes", "yes", "yes", "yes", "yes", "no", "no"]
    # parsed: yes yes yes no no no yes no -> TP=3 (0,1,2), FN=3 (3,4,5), FP=1 (6), TN=1 (7)
    m = pope_metrics(preds, labels)
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (3, 1, 1, 3)
    assert m["precision"] == pytest.approx(3 / 4)
    assert m["recall"] == pytest.approx(3 / 6)
    # F1 = 2PR / (P + R) = 2 * 0.75 * 0.5 / 1.25 = 0.6; the arithmetic mean (0.625) is wrong
    assert m["f1"] == pytest.approx(0.6)
    assert m["accuracy"] == pytest.approx(4 / 8)
    assert m["yes_ratio"] == pytest.approx(4 / 8)
