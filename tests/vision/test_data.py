"""LLaVA JSON loading, bad inputs, the dataset and its collate."""

import json

import pytest
import torch
from PIL import Image

from rwkv_mm.backbone import load_tokenizer
from rwkv_mm.vision.conversation import IGNORE_INDEX, IMAGE_TOKEN_ID
from rwkv_mm.vision.data import (LlavaDataset, LoadReport, SampleError, collate_llava, load_llava_json)
from rwkv_mm.vision.preprocess import ImageProcessor

TOK = load_tokenizer("world")
CONV = [{"from": "human", "value": "<image>\nWhat colour?"}, {"from": "gpt", "value": "Red."}]


@pytest.fixture
def root(tmp_path):
    (tmp_path / "img").mkdir()
    Image.new("RGB", (40, 20), (255, 0, 0)).save(tmp_path / "img" / "red.png")
    (tmp_path / "img" / "broken.png").write_bytes(b"not a png")
    (tmp_path / "outside.png").write_bytes(b"")
    return tmp_path


def _write(root, items):
    path = root / "data.json"
    path.write_text(json.dumps(items))
    return path


def test_good_samples_and_text_only(root):
    path = _write(root, [{"id": "a", "image": "red.png", "conversations": CONV},
                         {"id": "b", "conversations": [{"from": "human", "value": "hi"},
                                                       {"from": "gpt", "value": "hello"}]}])
    records = load_llava_json(path, root / "img")
    ds = LlavaDataset(records, TOK, 3, ImageProcessor(16, pad_to_square=True), ctx_len=64)
    a, b = ds[0], ds[1]
    assert a["pixels"].shape == (3, 16, 16)
    assert int((a["input_ids"] == IMAGE_TOKEN_ID).sum()) == 3
    assert "pixels" not in b
    batch = collate_llava([a, b])
    T = max(len(a["input_ids"]), len(b["input_ids"]))
    assert batch["input_ids"].shape == batch["targets"].shape == (2, T)
    assert batch["images"].shape == (1, 3, 16, 16)
    n_b = len(b["input_ids"])
    assert (batch["targets"][1, n_b:] == IGNORE_INDEX).all()
    assert (batch["input_ids"][1, n_b:] == 0).all()


@pytest.mark.parametrize("item,match", [
    ({"id": "m", "image": "missing.png", "conversations": CONV}, "image not found"),
    ({"id": "o", "image": "../outside.png", "conversations": CONV}, "leaves the image root"),
    ({"id": "abs", "image": "/etc/passwd", "conversations": CONV}, "leaves the image root"),
    ({"id": "c", "image": "red.png", "conversations": [{"from": "gpt", "value": "x"}]}, "expected 'human'"),
])
def test_bad_samples_raise_with_id_or_are_counted(root, item, match):
    path = _write(root, [item, {"id": "ok", "image": "red.png", "conversations": CONV}])
    with pytest.raises(ValueError, match=match) as info:
        load_llava_json(path, root / "img")
    assert item["id"] in str(info.value)
    report = LoadReport()
    records = load_llava_json(path, root / "img", on_error="skip", report=report)
    assert [r["id"] for r in records] == ["ok"]
    assert report.skipped == 1 and item["id"] in report.summary()


def test_corrupt_image_raises_or_is_replaced(root):
    path = _write(root, [{"id": "bad", "image": "broken.png", "conversations": CONV},
                         {"id": "good", "image": "red.png", "conversations": CONV}])
    records = load_llava_json(path, root / "img")
    ds = LlavaDataset(records, TOK, 3, ImageProcessor(16), ctx_len=64)
    with pytest.raises(SampleError, match="bad.*broken.png"):
        ds[0]
    ds = LlavaDataset(records, TOK, 3, ImageProcessor(16), ctx_len=64, on_error="skip")
    assert ds[0]["id"] == "good"
    assert ds.report.skipped == 1


def test_context_cutting_the_image_is_an_error(root):
    conv = [{"from": "human", "value": "A long question first " * 5 + "<image>"}, {"from": "gpt", "value": "x"}]
    path = _write(root, [{"id": "long", "image": "red.png", "conversations": conv}])
    ds = LlavaDataset(load_llava_json(path, root / "img"), TOK, 8, ImageProcessor(16), ctx_len=12,
                      image_position="keep")
    with pytest.raises(SampleError, match="long.*cuts the image"):
        ds[0]


def test_pad_to_square_uses_the_mean_colour():
    proc = ImageProcessor(8, pad_to_square=True)
    img = Image.new("RGB", (8, 2), (0, 0, 0))
    pixels = proc(img)
    # the top row is padding: the CLIP mean colour normalises to ~0
    assert pixels[:, 0].abs().max() < 0.02
    assert pixels[:, 4].abs().max() > 1.0


def test_not_a_list_or_bad_json(root):
    (root / "x.json").write_text("{}")
    with pytest.raises(ValueError, match="x.json.*list"):
        load_llava_json(root / "x.json", root)
    (root / "y.json").write_text("[")
    with pytest.raises(ValueError, match="y.json.*JSON"):
        load_llava_json(root / "y.json", root)
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_llava_json(root / "nope.json", root)
