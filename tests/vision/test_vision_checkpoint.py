"""Our VisualRWKV folders and released VisualRWKV checkpoints (random weights, real layout)."""

import pytest
import torch

from rwkv_mm.backbone import read_state_dict
from rwkv_mm.backbone.checkpoint import CheckpointError
from rwkv_mm.vision.checkpoint import load_released_visual_rwkv, load_visual_rwkv, save_visual_rwkv
from rwkv_mm.vision.conversation import IMAGE_TOKEN_ID, ChatTemplate
from vision_test_utils import tiny_vision_config, tiny_visual_model


def test_save_and_load_our_folder(tmp_path):
    vision = tiny_vision_config()
    model = tiny_visual_model(vision=vision, reverse=True)
    template = ChatTemplate(user="Q", assistant="A")
    save_visual_rwkv(model, tmp_path / "m", vision, template, "last")
    assert {p.name for p in (tmp_path / "m").iterdir()} == {"backbone.pth", "projector.pth", "visual_rwkv.json"}
    # the backbone file is a plain official-layout state dict
    assert "blocks.0.att.time_faaaa" in read_state_dict(tmp_path / "m" / "backbone.pth")
    loaded, meta = load_visual_rwkv(tmp_path / "m")
    assert meta["template"] == template and meta["image_position"] == "last"
    assert loaded.reverse_image_odd_layers
    ids = torch.tensor([[3] + [IMAGE_TOKEN_ID] * 5 + [4, 5]])
    images = torch.randn(1, 3, 32, 32)
    assert torch.allclose(model(ids, images=images)[0], loaded(ids, images=images)[0], atol=1e-6)


def _released_state_dict(model, hf_vit):
    sd = {f"rwkv.{k}": v for k, v in model.rwkv.state_dict().items()}
    # released files were written with transformers 4.x: `vit.vision_model.*`
    sd.update({f"vit.vision_model.{k.removeprefix('vision_model.')}": v for k, v in hf_vit.state_dict().items()})
    sd["proj.weight"] = torch.randn(model.rwkv.config.n_embd, hf_vit.config.hidden_size) * 0.1
    return sd


def _tiny_hf_clip():
    from transformers import CLIPVisionConfig, CLIPVisionModel
    torch.manual_seed(0)
    cfg = CLIPVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=1,
                           image_size=32, patch_size=16, hidden_act="quick_gelu")
    return CLIPVisionModel(cfg).eval()


def test_released_checkpoint_layout_loads_with_its_own_clip(tmp_path):
    model = tiny_visual_model()
    hf = _tiny_hf_clip()
    sd = _released_state_dict(model, hf)
    torch.save(sd, tmp_path / "visualrwkv.pth")
    loaded = load_released_visual_rwkv(tmp_path / "visualrwkv.pth")
    # CLIP features equal transformers' own last hidden state (VisualRWKV-5: last layer, CLS kept)
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = hf(pixel_values=images).last_hidden_state
    assert torch.allclose(loaded.vit(images), ref, atol=1e-5)
    assert loaded.num_image_tokens == 5
    assert torch.equal(loaded.proj.weight, sd["proj.weight"])
    ids = torch.tensor([[3] + [IMAGE_TOKEN_ID] * 5 + [4]])
    x = model.embed(ids, ref[:1] @ sd["proj.weight"].T)
    expected, _ = model.rwkv(inputs_embeds=x)
    got, _ = loaded(ids, images=images[:1])
    assert torch.allclose(got, expected, atol=1e-4)


def test_export_script_pair_loads(tmp_path):
    model = tiny_visual_model()
    sd = _released_state_dict(model, _tiny_hf_clip())
    torch.save({k[5:]: v for k, v in sd.items() if k.startswith("rwkv.")}, tmp_path / "m_rwkv.pth")
    torch.save({k: v for k, v in sd.items() if not k.startswith("rwkv.")}, tmp_path / "m_visual.pth")
    loaded = load_released_visual_rwkv(tmp_path / "m_rwkv.pth", visual_path=tmp_path / "m_visual.pth")
    assert loaded.proj.weight.shape == (32, 64)


def test_not_a_visual_checkpoint(tmp_path):
    torch.save({"emb.weight": torch.zeros(4, 4)}, tmp_path / "x.pth")
    with pytest.raises(CheckpointError, match="rwkv.*proj"):
        load_released_visual_rwkv(tmp_path / "x.pth")
    with pytest.raises(FileNotFoundError, match="visual_rwkv.json"):
        load_visual_rwkv(tmp_path)


def test_visual_folder_keeps_the_backbone_settings_its_weights_do_not_show(tmp_path):
    """Before: rope_base and layer_norm_eps were lost between stage 1 and stage 2."""
    from rwkv_mm.backbone import RWKVConfig, build_backbone
    from rwkv_mm.vision.checkpoint import load_visual_rwkv, read_meta, save_visual_rwkv
    from rwkv_mm.vision.conversation import ChatTemplate
    from rwkv_mm.vision.model import VisualRWKV
    from rwkv_mm.vision.projector import build_projector
    from vision_test_utils import tiny_vision_config

    config = RWKVConfig(version="goldfinch", n_layer=3, n_embd=32, head_size=16, vocab_size=64,
                        rope_base=10000.0, layer_norm_eps=1e-6)
    model = VisualRWKV(build_backbone(config), None, build_projector("linear", 8, 32))
    save_visual_rwkv(model, tmp_path / "m", tiny_vision_config(), ChatTemplate(), "first")
    assert read_meta(tmp_path / "m")["backbone_config"]["rope_base"] == 10000.0
    loaded, _ = load_visual_rwkv(tmp_path / "m", with_tower=False)
    assert loaded.rwkv.config == config
