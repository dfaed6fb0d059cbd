"""`rwkv-mm chat`: one-shot answers equal greedy decoding; later turns continue the state."""

import pytest
import torch
from PIL import Image

from rwkv_mm.backbone import SamplingConfig, load_tokenizer
from rwkv_mm.cli import main
from rwkv_mm.vision.answer import Question, VisualAnswerer
from rwkv_mm.vision.chat import ImageChat
from rwkv_mm.vision.checkpoint import save_visual_rwkv
from rwkv_mm.vision.conversation import ChatTemplate
from rwkv_mm.vision.preprocess import ImageProcessor
from vision_test_utils import tiny_vision_config, tiny_visual_model

TOK = load_tokenizer("world")


@pytest.mark.parametrize("version, n_layer", [("5", 2), ("goldfinch", 3)])
def test_chat_reply_equals_greedy_answer_and_keeps_state(tmp_path, version, n_layer):
    model = tiny_visual_model(version, seed=4, n_layer=n_layer)
    img = tmp_path / "a.png"
    Image.new("RGB", (32, 32), (200, 10, 10)).save(img)
    proc = ImageProcessor(32)
    greedy = VisualAnswerer(model, TOK, proc, max_new_tokens=5).answer([Question("q", img, "What?")])[0]
    chat = ImageChat(model, TOK, ChatTemplate(), "first", proc, img, SamplingConfig(temperature=0.0),
                     max_tokens=5)
    assert "".join(chat.reply("What?")).strip() == greedy
    state_after_first = chat.state.clone()
    "".join(chat.reply("And then?"))
    assert not torch.equal(chat.state.wkv[0], state_after_first.wkv[0])  # the second turn moved on


def test_chat_cli_one_shot(tmp_path, capsys):
    from rwkv_mm.vision.checkpoint import load_visual_rwkv
    vision = tiny_vision_config()
    save_visual_rwkv(tiny_visual_model(vision=vision, seed=5), tmp_path / "m", vision, ChatTemplate(), "first")
    img = tmp_path / "a.png"
    Image.new("RGB", (32, 32), (0, 0, 255)).save(img)
    assert main(["chat", "--checkpoint", str(tmp_path / "m"), "--image", str(img), "--prompt", "Colour?",
                 "--max-tokens", "4"]) == 0
    printed = capsys.readouterr().out.strip()
    model, _ = load_visual_rwkv(tmp_path / "m")
    expected = VisualAnswerer(model, TOK, ImageProcessor(32), max_new_tokens=4).answer(
        [Question("q", img, "Colour?")])[0]
    assert printed == expected
    assert main(["chat", "--checkpoint", str(tmp_path / "m"), "--image", str(tmp_path / "nope.png"),
                 "--prompt", "x"]) == 2
    err = capsys.readouterr().err
    assert "nope.png" in err and "not found" in err
