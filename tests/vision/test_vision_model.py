"""The fusion model: placeholder replacement, image-span reversal, text-only samples."""

import pytest
import torch

from rwkv_mm.vision.conversation import IMAGE_TOKEN_ID
from rwkv_mm.vision.model import image_span_reversal
from vision_test_utils import tiny_visual_model

P = 5  # 4 patches + CLS


def _ids(prefix, suffix, n_img=P):
    return torch.tensor([prefix + [IMAGE_TOKEN_ID] * n_img + suffix])


def test_image_tokens_replace_placeholders_in_order():
    model = tiny_visual_model()
    images = torch.randn(2, 3, 32, 32)
    ids = torch.cat([_ids([5, 6], [7]), _ids([8], [9, 10])])  # [2, 8]
    emb = model.image_embeddings(images)  # [2, P, D]
    x = model.embed(ids, emb)
    assert torch.equal(x[0, 2:2 + P], emb[0])
    assert torch.equal(x[1, 1:1 + P], emb[1])
    assert torch.equal(x[0, 0], model.rwkv.emb.weight[5])
    assert torch.equal(x[1, -1], model.rwkv.emb.weight[10])


def test_fused_forward_equals_backbone_on_the_same_embeddings():
    model = tiny_visual_model()
    images = torch.randn(1, 3, 32, 32)
    ids = _ids([5, 6], [7, 8])
    logits, state = model(ids, images=images)
    x = model.embed(ids, model.image_embeddings(images))
    ref, ref_state = model.rwkv(inputs_embeds=x)
    assert torch.allclose(logits, ref)
    # continuing with text from the returned state equals one pass over everything
    more = torch.tensor([[11, 12]])
    step, _ = model(more, state=state)
    whole, _ = model(torch.cat([ids, more], 1), images=images)
    assert torch.allclose(step, whole[:, -2:], atol=1e-5)


def test_placeholder_count_mismatch_is_an_error():
    model = tiny_visual_model()
    with pytest.raises(ValueError, match="image placeholders"):
        model(_ids([1], [2], n_img=P - 1), images=torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match="image placeholders"):
        model(_ids([1], [2]))


def test_text_only_samples_work():
    model = tiny_visual_model()
    logits, _ = model(torch.tensor([[1, 2, 3]]))
    ref, _ = model.rwkv(torch.tensor([[1, 2, 3]]))
    assert torch.allclose(logits, ref)


def test_span_reversal_index():
    ids = torch.tensor([[1, IMAGE_TOKEN_ID, IMAGE_TOKEN_ID, IMAGE_TOKEN_ID, 2],
                        [IMAGE_TOKEN_ID, IMAGE_TOKEN_ID, 3, 4, 5]])
    perm = image_span_reversal(ids)
    assert perm.tolist() == [[0, 3, 2, 1, 4], [1, 0, 2, 3, 4]]
    assert image_span_reversal(torch.tensor([[1, 2]])) is None


def test_odd_layers_see_the_image_reversed():
    """Reference: run the blocks by hand, flipping the image span around every odd layer."""
    model = tiny_visual_model(reverse=True)
    images = torch.randn(1, 3, 32, 32)
    ids = _ids([5, 6], [7, 8])
    logits, _ = model(ids, images=images)
    x = model.embed(ids, model.image_embeddings(images))
    s = model.rwkv.zero_state(1)
    from rwkv_mm.backbone import RWKVState
    new = RWKVState([None] * 2, [None] * 2, [None] * 2)
    span = slice(2, 2 + P)
    for i, block in enumerate(model.rwkv.blocks):
        if i % 2:
            x = x.clone()
            x[:, span] = x[:, span].flip(1)
        x = block(x, s, new)
        if i % 2:
            x = x.clone()
            x[:, span] = x[:, span].flip(1)
    ref = model.rwkv.head(model.rwkv.ln_out(x))
    assert torch.allclose(logits, ref, atol=1e-6)
    plain, _ = tiny_visual_model(reverse=False)(ids, images=images)
    assert not torch.allclose(plain, logits, atol=1e-4)


def test_tower_is_frozen_and_stays_in_eval_mode():
    model = tiny_visual_model()
    model.train()
    assert not model.vit.training
    assert not any(p.requires_grad for p in model.vit.parameters())


def test_penultimate_layer_without_cls():
    from vision_test_utils import tiny_vision_config
    from rwkv_mm.vision.tower import build_vision_tower
    cfg = tiny_vision_config(layer=-2, keep_cls=False)
    cfg.custom.layers = 2
    tower = build_vision_tower(cfg)
    assert tower.num_tokens == 4
    img = torch.randn(1, 3, 32, 32)
    feats = tower(img)
    assert feats.shape == (1, 4, 32)
    # penultimate = output of block 0: recompute by hand with open_clip's modules
    v = tower.vit
    x = v.conv1(img).flatten(2).transpose(1, 2)
    x = torch.cat([v.class_embedding.expand(1, 1, -1), x], 1) + v.positional_embedding
    x = v.ln_pre(x)
    x = v.transformer.resblocks[0](x)
    assert torch.allclose(feats, x[:, 1:], atol=1e-5)


def test_grid_pooling_averages_patch_quadrants():
    from vision_test_utils import tiny_vision_config
    from rwkv_mm.vision.tower import build_vision_tower
    full = build_vision_tower(tiny_vision_config())
    img = torch.randn(2, 3, 32, 32)
    feats = full(img)  # [2, 1 + 4, C]: CLS then a 2x2 patch grid
    pooled = build_vision_tower(tiny_vision_config(grid_size=1))
    assert pooled.num_tokens == 2
    out = pooled(img)
    assert torch.allclose(out[:, 0], feats[:, 0])
    assert torch.allclose(out[:, 1], feats[:, 1:].mean(1), atol=1e-6)
    cls_only = build_vision_tower(tiny_vision_config(grid_size=0))
    assert cls_only(img).shape == (2, 1, 32)
    with pytest.raises(ValueError, match="divide"):
        build_vision_tower(tiny_vision_config(grid_size=3))
