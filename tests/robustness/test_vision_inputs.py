"""VisualRWKV inputs: image modes decoded to the right intensities, bad images and malformed
LLaVA samples named (or skipped and counted), config values checked when a recipe loads."""

from __future__ import annotations

import json
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from rwkv_mm.backbone import load_tokenizer
from rwkv_mm.recipe import load_recipe
from rwkv_mm.vision.data import LlavaDataset, LoadReport, SampleError, load_llava_json
from rwkv_mm.vision.image_io import ImageReadError, open_image, to_rgb
from rwkv_mm.vision.preprocess import ImageProcessor
from rwkv_mm.vision.tower import build_vision_tower
from robustness.cli_utils import assert_user_error, run_cli
from vision.vision_test_utils import tiny_vision_config  # tests/vision (a namespace package)

CONV = [{"from": "human", "value": "<image>\nWhat colour?"}, {"from": "gpt", "value": "Red."}]


def _mean(image: Image.Image) -> np.ndarray:
    """Per-channel mean of an RGB image, [3]."""
    assert image.mode == "RGB"
    return np.asarray(image, dtype=np.float64).reshape(-1, 3).mean(axis=0)


def _palette_with_transparency(path):
    """Left half palette index 0 (black, transparent via tRNS), right half index 1 (opaque red)."""
    img = Image.new("P", (8, 8), 0)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    img.paste(1, (4, 0, 8, 8))
    img.save(path, transparency=0)


# ------------------------------------------------------------------ image modes
@pytest.mark.parametrize("name,write,expected", [
    # 16-bit gray PNG (opens as I;16): 30000 / 257 = 116.7 (convert("RGB") gave 255, white)
    ("gray16.png", lambda p: Image.fromarray(np.full((8, 8), 30000, np.uint16)).save(p), 30000 / 257),
    # a full 16-bit ramp averages mid-grey
    ("ramp16.png", lambda p: Image.fromarray(np.linspace(0, 65535, 64).astype(np.uint16).reshape(8, 8))
     .save(p), 127.5),
    # float TIFF in [0, 1] (mode F): 0.5 -> 127.5 (convert("RGB") gave 0, black)
    ("half.tiff", lambda p: Image.fromarray(np.full((8, 8), 0.5, np.float32)).save(p), 127.5),
    # float TIFF beyond [0, 1]: scaled by its range [0, 4], so 1.0 -> 63.75
    ("wide.tiff", lambda p: Image.fromarray(np.array([[0.0, 4.0], [1.0, 1.0]], np.float32)).save(p),
     (0 + 255 + 63.75 + 63.75) / 4),
    # 32-bit int TIFF (mode I) with 16-bit values: / 257
    ("int32.tiff", lambda p: Image.fromarray(np.full((8, 8), 51400, np.int32)).save(p), 200.0),
])
def test_high_depth_images_keep_their_intensity(tmp_path, name, write, expected):
    path = tmp_path / name
    write(path)
    mean = _mean(open_image(path))
    assert np.allclose(mean, expected, atol=1.0), (mean, expected)


def test_transparency_composites_onto_white(tmp_path):
    _palette_with_transparency(tmp_path / "p.png")
    # half white (transparent), half red: R 255, G = B = 127.5 (convert("RGB") showed black)
    assert np.allclose(_mean(open_image(tmp_path / "p.png")), [255, 127.5, 127.5], atol=1)
    half_red = Image.new("RGBA", (4, 4), (255, 0, 0, 128))  # 50 % red over white
    assert np.allclose(_mean(to_rgb(half_red)), [255, 127, 127], atol=1)
    assert np.allclose(_mean(to_rgb(Image.new("LA", (4, 4), (0, 0)))), 255)  # fully transparent black
    gray_trns = tmp_path / "l.png"
    Image.new("L", (4, 4), 10).save(gray_trns, transparency=10)  # tRNS colour in an L image
    assert np.allclose(_mean(open_image(gray_trns)), 255)


@pytest.mark.parametrize("mode,value,expected", [  # guards: to_rgb leaves these to Pillow
    ("LAB", (255, 128, 128), (255, 255, 255)),
    ("LAB", (0, 128, 128), (0, 0, 0)),
    ("CMYK", (0, 255, 255, 0), (255, 0, 0)),
    ("YCbCr", (128, 128, 128), (128, 128, 128)),
])
def test_colour_spaces_to_rgb(mode, value, expected):
    assert np.allclose(_mean(to_rgb(Image.new(mode, (4, 4), value))), expected, atol=2)


def test_processor_uses_the_mode_aware_conversion(tmp_path):
    Image.fromarray(np.full((16, 16), 257 * 90, np.uint16)).save(tmp_path / "g16.png")
    Image.new("RGB", (16, 16), (90, 90, 90)).save(tmp_path / "g8.png")
    proc = ImageProcessor(16)
    assert torch.allclose(proc(tmp_path / "g16.png"), proc(tmp_path / "g8.png"))
    with Image.open(tmp_path / "g16.png") as img:  # a PIL image passed in goes the same way
        assert torch.allclose(proc(img), proc(tmp_path / "g8.png"))


# ------------------------------------------------------------------ bad image files
def _png_claiming(width: int, height: int) -> bytes:
    """A 67-byte PNG whose header claims width x height pixels (a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0\0"))
            + chunk(b"IEND", b""))


@pytest.fixture
def root(tmp_path):
    (tmp_path / "img").mkdir()
    Image.new("RGB", (20, 20), (255, 0, 0)).save(tmp_path / "img" / "red.png")
    (tmp_path / "img" / "bomb.png").write_bytes(_png_claiming(100_000, 100_000))
    return tmp_path


def _write(root, items):
    path = root / "data.json"
    path.write_text(json.dumps(items))
    return path


def test_decompression_bomb_is_a_bad_sample(root):
    with pytest.raises(ImageReadError, match="DecompressionBombError.*bomb.png"):
        open_image(root / "img" / "bomb.png")
    path = _write(root, [{"id": "big", "image": "bomb.png", "conversations": CONV},
                         {"id": "ok", "image": "red.png", "conversations": CONV}])
    records = load_llava_json(path, root / "img")
    tok = load_tokenizer("world")
    with pytest.raises(SampleError, match="big.*bomb.png"):
        LlavaDataset(records, tok, 3, ImageProcessor(16), ctx_len=64)[0]
    report = LoadReport()
    ds = LlavaDataset(records, tok, 3, ImageProcessor(16), ctx_len=64, on_error="skip", report=report)
    assert ds[0]["id"] == "ok"  # replaced by the next good sample
    assert report.problems["unreadable image"] == 1
    assert "big" in report.summary() and "bomb.png" in report.summary()


def test_lowered_pixel_limit_is_a_bad_sample_too(root, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # red.png has 400 > 2 x 100
    with pytest.raises(ImageReadError, match="red.png"):
        open_image(root / "img" / "red.png")


# ------------------------------------------------------------------ malformed samples
@pytest.mark.parametrize("image", [None, "", 5, ["red.png"], {"path": "red.png"}])
def test_image_field_that_is_not_a_path(root, image):
    path = _write(root, [{"id": "s7", "image": image, "conversations": CONV},
                         {"id": "ok", "image": "red.png", "conversations": CONV}])
    with pytest.raises(SampleError, match="s7.*'image' is") as info:
        load_llava_json(path, root / "img")
    assert "data.json" in str(info.value)
    report = LoadReport()
    records = load_llava_json(path, root / "img", on_error="skip", report=report)
    assert [r["id"] for r in records] == ["ok"] and report.problems["bad image field"] == 1


@pytest.mark.parametrize("conversations", [None, "hi", [], [{"from": "human"}], {"from": "human"}])
def test_conversations_missing_or_malformed(root, conversations):
    item = {"id": "c3", "image": "red.png"}
    if conversations is not None:
        item["conversations"] = conversations
    path = _write(root, [item])
    with pytest.raises(ValueError, match="c3"):
        load_llava_json(path, root / "img")


def test_image_null_through_training_is_one_line_naming_the_sample(root, tmp_path):
    path = _write(root, [{"id": "n1", "image": None, "conversations": CONV}])
    result = run_cli("train", "visual/stage1_tiny", f"data.data_path={path}", f"data.image_root={root / 'img'}",
                     "data.synthetic=false", "--run-dir", str(tmp_path / "run"), cwd=tmp_path)
    assert_user_error(result, "n1", "'image' is null")


# ------------------------------------------------------------------ config values
@pytest.mark.parametrize("override,key", [
    ("stage=3", "stage"),
    ("data.ctx_len=0", "data.ctx_len"),
    ("data.image_position=top", "data.image_position"),
    ("data.on_error=ignore", "data.on_error"),
    ("data.max_samples=-1", "data.max_samples"),
    ("eval.batch_size=0", "eval.batch_size"),
    ("eval.max_new_tokens=0", "eval.max_new_tokens"),
    ("eval.max_questions=-3", "eval.max_questions"),
    ("eval.on_error=maybe", "eval.on_error"),
    ("backbone.n_layer=0", "backbone.n_layer"),
    ("backbone.version=x080", "backbone.version"),
    ("vision.projector=mlp3", "vision.projector"),
    ("vision.backend=tf", "vision.backend"),
    ("vision.grid_size=-2", "vision.grid_size"),
    ("vision.custom.patch_size=0", "vision.custom.patch_size"),
    ("vision.custom.patch_size=7", "vision.custom.patch_size"),
    ("vision.custom.head_width=48", "vision.custom.head_width"),
])
def test_config_values_are_checked_when_the_recipe_loads(override, key):
    with pytest.raises(ValueError) as info:
        load_recipe("visual/stage1_tiny", [override])
    assert key in str(info.value) and "stage1_tiny.yaml" in str(info.value)


def test_bad_config_value_through_the_cli(tmp_path):
    assert_user_error(run_cli("train", "visual/stage1_tiny", "data.image_position=top",
                              "--run-dir", str(tmp_path / "r"), cwd=tmp_path),
                      "data.image_position", "stage1_tiny.yaml")


def test_tower_layer_outside_the_tower(tmp_path):
    build_vision_tower(tiny_vision_config(layer=-1))  # the tiny tower has 1 block: -1 and 0 exist
    for layer in (1, 5, -2):
        with pytest.raises(ValueError, match="vision.layer"):
            build_vision_tower(tiny_vision_config(layer=layer))
