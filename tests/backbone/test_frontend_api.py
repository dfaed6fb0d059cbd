"""The backbone's public API for front ends: documented names, per-layer sequence order for
language models, encoders of any family through `RWKVEncoder`, version names."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

import rwkv_mm.backbone as backbone
from rwkv_mm.backbone import (ConfigError, RWKVConfig, RWKVEncoder, build_backbone,
                              normalize_version)
from rwkv_test_utils import tiny_model


def test_every_public_name_exists_and_is_described_in_the_docstring():
    doc = backbone.__doc__
    missing = [name for name in backbone.__all__ if name not in doc or not hasattr(backbone, name)]
    assert missing == []
    assert len(set(backbone.__all__)) == len(backbone.__all__)


def test_importing_the_backbone_imports_nothing_above_it():
    code = ("import sys, rwkv_mm.backbone; print(' '.join(sorted(m for m in sys.modules "
            "if m.startswith('rwkv_mm'))))")
    names = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    above = [n for n in names if n != "rwkv_mm" and not n.startswith(("rwkv_mm.backbone", "rwkv_mm.kernels"))]
    assert "rwkv_mm.backbone" in names and above == []


# ----------------------------------------------------------------------------- layer_order
@pytest.mark.parametrize("version", ["5", "6"])
def test_layer_order_runs_each_block_on_its_permutation(version):
    """Any permutation (here a rotation of odd layers' positions, not its own inverse) is applied
    before the block and undone after it; None leaves the plain forward pass bit for bit."""
    model = tiny_model(version=version, n_layer=3)
    tokens = torch.tensor([[3, 1, 4, 1, 5, 9, 2], [6, 5, 3, 5, 8, 9, 7]])
    T = tokens.shape[1]
    rotate = torch.stack([(torch.arange(T) + 2) % T, (torch.arange(T) + 5) % T])  # [B, T]
    order = lambda layer: rotate if layer % 2 else None  # noqa: E731
    with torch.no_grad():
        logits, state = model(tokens, layer_order=order)
        plain, _ = model(tokens)
        assert torch.equal(model(tokens, layer_order=lambda layer: None)[0], plain)
        x = model.emb(tokens)
        s, new = model.zero_state(2), model.zero_state(2)
        for i, block in enumerate(model.blocks):
            if i % 2:
                y = block(x.gather(1, rotate[..., None].expand_as(x)), s, new)
                x = torch.empty_like(y).scatter_(1, rotate[..., None].expand_as(y), y)
            else:
                x = block(x, s, new)
    torch.testing.assert_close(logits, model.head(model.ln_out(x)), rtol=0, atol=1e-6)
    assert not torch.allclose(logits, plain, atol=1e-4)
    torch.testing.assert_close(state.att_x[1], new.att_x[1], rtol=0, atol=0)  # last position it saw


def test_goldfinch_takes_no_layer_order():
    model = tiny_model(version="goldfinch", n_layer=3)
    assert model.supports_layer_order is False and tiny_model(version="6").supports_layer_order
    with pytest.raises(ValueError, match="layer_order"):
        model(torch.tensor([[1, 2, 3]]), layer_order=lambda layer: None)


# ----------------------------------------------------------------------------- RWKVEncoder
class SequenceEncoder(RWKVEncoder):
    """A 1-D encoder as a new front end would write it: embedding, ln0, blocks, ln_out."""

    def __init__(self, config: RWKVConfig, drop_path: float = 0.0) -> None:
        super().__init__()
        self.emb = nn.Embedding(config.vocab_size, config.n_embd)
        self.ln0 = nn.LayerNorm(config.n_embd)
        self.add_blocks(config, shift=None, drop_path=drop_path)
        self.ln_out = nn.LayerNorm(config.n_embd)
        self.init_block_weights_()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # [B, T] -> [B, T, D]
        return self.ln_out(self.run_blocks(self.ln0(self.emb(tokens))))


def encoder_config(version: str) -> RWKVConfig:
    return RWKVConfig(version=version, n_layer=3, n_embd=32, head_size=16, vocab_size=20,
                      tm_lora_rank=4, decay_lora_rank=4)


@pytest.mark.parametrize("version", ["5", "6", "goldfinch"])
def test_an_encoder_of_every_family_is_bidirectional(version):
    torch.manual_seed(0)
    enc = SequenceEncoder(encoder_config(version)).eval()
    with torch.no_grad():
        for p in enc.parameters():
            p.add_(0.1 * torch.randn_like(p))
    a, b = torch.tensor([[1, 2, 3, 4, 5]]), torch.tensor([[1, 2, 3, 4, 9]])
    with torch.no_grad():
        assert not torch.allclose(enc(a)[0, 0], enc(b)[0, 0])  # the first token reads the last
    assert all(not hasattr(b, "ln0") for b in enc.blocks)  # ln0 belongs to the front end


def test_goldfinch_encoder_keeps_the_language_models_key_cache_names_and_shapes():
    config = encoder_config("goldfinch")
    enc, lm = SequenceEncoder(config), build_backbone(config)
    shapes = lambda m: {k: v.shape for k, v in m.state_dict().items() if k.startswith("w_kv_cache")}  # noqa: E731
    assert shapes(enc) == shapes(lm) and len(shapes(enc)) == 2
    assert enc.first_gold_layer == config.first_gold_layer == 2
    assert SequenceEncoder(encoder_config("6")).first_gold_layer == 3
    assert enc.family_parameter_counts() == {"key_cache": sum(v.numel() for v in shapes(enc).values())}
    assert SequenceEncoder(encoder_config("5")).family_parameter_counts() == {}


def test_drop_path_rises_linearly_to_the_last_block():
    enc = SequenceEncoder(encoder_config("6"), drop_path=0.2)
    assert [b.drop_path.p for b in enc.blocks] == pytest.approx([0.0, 0.1, 0.2])


def test_encoder_blocks_come_from_the_encoder_not_by_name():
    from rwkv_mm.backbone.encoder_block import EncoderBlock

    with pytest.raises(ValueError, match="RWKVEncoder.add_blocks"):
        EncoderBlock(encoder_config("goldfinch"), 0)


# ----------------------------------------------------------------------------- versions
@pytest.mark.parametrize("spelling,canonical", [("Finch", "6"), (" x060 ", "6"), ("5.2", "5"),
                                                ("eagle", "5"), ("GF", "goldfinch"), (6, "6")])
def test_normalize_version(spelling, canonical):
    assert normalize_version(spelling) == canonical
    assert backbone.VERSION_ALIASES[str(spelling).strip().lower()] == canonical


def test_unknown_version_is_a_config_error():
    with pytest.raises(ConfigError, match="version"):
        normalize_version("rwkv-8")
