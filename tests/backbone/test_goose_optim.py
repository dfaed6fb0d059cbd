"""Goose's decay base trains at 2x the learning rate, as RWKV-LM's x070 trainer sets it
(`att.w0` in its lr_2x group); its LoRA matrices w1/w2 stay at 1x."""

from rwkv_mm.backbone import RWKVConfig, build_backbone, param_groups


def test_goose_decay_base_is_in_the_2x_group():
    model = build_backbone(RWKVConfig(version="7", n_layer=2, n_embd=64, head_size=16, vocab_size=32))
    names = {id(p): n for n, p in model.named_parameters()}
    groups = {g["name"]: {names[id(p)] for p in g["params"]} for g in param_groups(model, lr=1e-3)}
    assert groups["decay_2x"] == {"blocks.0.att.w0", "blocks.1.att.w0"}
    assert "blocks.0.att.w1" in groups["other_1x"] and "blocks.0.att.w2" in groups["other_1x"]
