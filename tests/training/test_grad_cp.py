"""Activation checkpointing (`train.grad_cp`): with it on, every backbone, the audio encoder and
VisualRWKV give the same loss, gradients and final state as with it off (fp32), keep fewer
activations for backward, and never write a state twice."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from rwkv_mm.audio.model import AudioRWKV, AudioRWKVConfig
from rwkv_mm.backbone import GradCheckpointing, RWKVConfig, run_block, set_grad_checkpointing
from rwkv_test_utils import tiny_model

VERSIONS = ["5", "6", "goldfinch"]


def grads_of(model: nn.Module, run) -> tuple[torch.Tensor, dict[str, torch.Tensor], object]:
    """(loss, {name: grad}, extra) of `run(model) -> (loss, extra)` after loss.backward()."""
    model.zero_grad(set_to_none=True)
    loss, extra = run(model)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, extra


def assert_same(a, b, atol: float = 1e-6) -> None:
    """Equal losses and gradients (fp32: the recomputation runs the same operations)."""
    loss_a, grads_a, _ = a
    loss_b, grads_b, _ = b
    torch.testing.assert_close(loss_a, loss_b, rtol=0, atol=atol)
    assert grads_a.keys() == grads_b.keys() and grads_a
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], rtol=1e-5, atol=atol, msg=name)


def on_and_off(model: nn.Module, run, atol: float = 1e-6):
    """Run with grad_cp off and on (same RNG seed each time); assert the same results."""
    results = []
    for enabled in (False, True):
        assert set_grad_checkpointing(model, enabled) >= 1
        torch.manual_seed(7)
        results.append(grads_of(model, run))
    assert_same(*results, atol=atol)
    return results


def lm_run(tokens: torch.Tensor, weights: torch.Tensor):
    """A loss over logits and over the final state, from a state carried in from a first
    segment (with a gradient): state in, state out."""

    def run(model):
        with torch.no_grad():
            _, state = model(tokens[:, :5])
        for entries in (state.att_x, state.wkv, state.ffn_x):
            for t in entries:
                t.requires_grad_(True)
        logits, new = model(tokens[:, 5:], state)
        loss = (logits * weights).sum() + sum((s * s).sum() for s in (*new.att_x, *new.ffn_x)) \
            + sum(w.sum() for w in new.wkv) * 1e-2
        return loss, (state, new)

    return run


@pytest.mark.parametrize("version", VERSIONS)
def test_backbone_gradients_and_state_equal_with_and_without_grad_cp(version):
    model = tiny_model(version, n_layer=3, n_embd=64, head_size=16, vocab_size=97).train()
    assert isinstance(model, GradCheckpointing) and not model.grad_checkpointing
    tokens = torch.randint(0, 97, (2, 16), generator=torch.Generator().manual_seed(1))
    weights = torch.randn(2, 11, 97, generator=torch.Generator().manual_seed(2))
    off, on = on_and_off(model, lm_run(tokens, weights))
    (state_off, new_off), (state_on, new_on) = off[2], on[2]
    for a, b in zip((*state_off.att_x, *state_off.wkv), (*state_on.att_x, *state_on.wkv)):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-6)  # into the carried state
    for a, b in zip((*new_off.att_x, *new_off.wkv, *new_off.ffn_x), (*new_on.att_x, *new_on.wkv, *new_on.ffn_x)):
        assert torch.equal(a, b)


def test_the_final_state_is_written_once():
    """The recomputation in backward runs each block again: the state the forward pass returned
    must stay the very tensors it returned (not be replaced by the recomputed ones)."""
    model = tiny_model("6", n_layer=2, n_embd=64, head_size=16, vocab_size=97).train()
    model.set_grad_checkpointing(True)
    logits, state = model(torch.randint(0, 97, (2, 9)))
    before = [id(t) for t in (*state.att_x, *state.wkv, *state.ffn_x)]
    values = [t.detach().clone() for t in (*state.att_x, *state.wkv, *state.ffn_x)]
    logits.square().sum().backward()
    assert [id(t) for t in (*state.att_x, *state.wkv, *state.ffn_x)] == before
    assert all(torch.equal(t, v) for t, v in zip((*state.att_x, *state.wkv, *state.ffn_x), values))


def saved_bytes(model: nn.Module, tokens: torch.Tensor) -> int:
    """Bytes the forward pass keeps for backward outside checkpointed blocks."""
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        hidden, _ = model(tokens, return_hidden=True)
    hidden.sum().backward()
    return total


@pytest.mark.parametrize("version", VERSIONS)
def test_grad_cp_keeps_only_the_blocks_inputs(version):
    model = tiny_model(version, n_layer=4, n_embd=64, head_size=16, vocab_size=97).train()
    tokens = torch.randint(0, 97, (2, 64))
    kept = saved_bytes(model, tokens)
    model.set_grad_checkpointing(True)
    assert saved_bytes(model, tokens) < kept / 4


def test_no_recomputation_without_gradients():
    """Under no_grad (evaluation, generation) the switch changes nothing."""
    model = tiny_model("6", n_layer=2, n_embd=64, head_size=16, vocab_size=97)
    tokens = torch.randint(0, 97, (1, 7))
    with torch.no_grad():
        plain, _ = model(tokens)
        model.set_grad_checkpointing(True)
        assert torch.equal(model(tokens)[0], plain)


class ToyStack(GradCheckpointing, nn.Module):
    """A block loop as a new family writes one: Linear + dropout blocks through `run_block`."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(16, 16), nn.GELU(), nn.Dropout(0.3))
                                    for _ in range(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = run_block(block, x, enabled=self.grad_checkpointing)
        return x


def test_bf16_autocast_and_dropout_are_those_of_the_first_run():
    """The recomputation runs under the forward pass's autocast state (bf16 matmuls) and RNG
    state (the same dropout masks); a mismatch would change the gradients (or fail the
    recomputation's shape/dtype check)."""
    torch.manual_seed(0)
    model = ToyStack().train()
    x = torch.randn(4, 16, requires_grad=True)

    def run(m):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = m(x)
        assert y.dtype == torch.bfloat16
        return y.float().square().sum(), None

    x.grad = None
    off, on = on_and_off(model, run, atol=1e-5)
    assert off[1]["blocks.0.0.weight"].abs().sum() > 0


# ----------------------------------------------------------------------------- front ends
def tiny_audio(version: str, drop_path: float) -> AudioRWKV:
    backbone = RWKVConfig(version=version, n_layer=3, n_embd=32, head_size=16, dim_ffn=128,
                          tm_lora_rank=4, decay_lora_rank=4)
    torch.manual_seed(0)
    model = AudioRWKV(AudioRWKVConfig(num_classes=5, num_mel_bins=32, target_frames=48, patch=(8, 8),
                                      stride=(8, 8), drop_path=drop_path, backbone=backbone))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.train()


@pytest.mark.parametrize("version", VERSIONS)
def test_audio_encoder_with_drop_path_equal_with_and_without_grad_cp(version):
    """Stochastic depth draws its masks again in the recomputation: the RNG state is restored."""
    model = tiny_audio(version, drop_path=0.5)
    fbank = torch.randn(3, 48, 32, generator=torch.Generator().manual_seed(4))
    assert set_grad_checkpointing(model) == 1 and model.grad_checkpointing
    on_and_off(model, lambda m: (m(fbank).square().sum(), None))


@pytest.mark.parametrize("version, reverse", [("5", True), ("6", True), ("goldfinch", False)])
def test_visual_rwkv_with_frozen_parts_equal_with_and_without_grad_cp(version, reverse):
    """VisualRWKV runs the LM with its per-layer order (reversed image span in odd layers); the
    tower, the embeddings and block 0 are frozen, so block 0's inputs need no gradient."""
    from rwkv_mm.constants import IGNORE_INDEX
    from rwkv_mm.vision.conversation import IMAGE_TOKEN_ID
    from rwkv_mm.vision.model import vlm_loss
    from vision.vision_test_utils import tiny_visual_model

    model = tiny_visual_model(version, reverse=reverse, n_layer=3).train()
    for name, p in model.named_parameters():
        p.requires_grad_(not name.startswith(("vit.", "rwkv.emb.", "rwkv.blocks.0.")))
    g, P = torch.Generator().manual_seed(5), model.num_image_tokens
    ids = torch.randint(10, 300, (2, 10 + P), generator=g)
    ids[:, 2:2 + P] = IMAGE_TOKEN_ID
    targets = torch.randint(10, 300, (2, 10 + P), generator=g)
    targets[:, :2 + P] = IGNORE_INDEX
    feats = torch.randn(2, P, 32, generator=g)  # tower features [N, P, C]
    batch = {"input_ids": ids, "targets": targets, "image_features": feats}
    off, _ = on_and_off(model, lambda m: (vlm_loss(m, batch)[0], None))
    assert not any(n.startswith(("vit.", "rwkv.emb.", "rwkv.blocks.0.")) for n in off[1])


def test_a_model_without_blocks_has_nothing_to_switch():
    assert set_grad_checkpointing(nn.Linear(3, 3)) == 0
    model = copy.deepcopy(tiny_model("6", n_layer=1, n_embd=64, head_size=16))
    assert set_grad_checkpointing(nn.Sequential(model)) == 1 and model.grad_checkpointing


# ----------------------------------------------------------------------------- the trainer
def test_train_grad_cp_is_checked_and_switches_the_model(tmp_path):
    from rwkv_mm.errors import ConfigError, UserError
    from rwkv_mm.training.trainer import Trainer
    from training.test_trainer import config
    from training.toy_run import collate, make_dataset, make_model

    with pytest.raises(ConfigError, match="grad_cp"):
        config(grad_cp="yes")
    model = make_model()
    Trainer(model, config(grad_cp=True), tmp_path / "a", make_dataset(), collate, device="cpu")
    assert model.grad_checkpointing
    Trainer(model, config(), tmp_path / "b", make_dataset(), collate, device="cpu")
    assert not model.grad_checkpointing  # the recipe's setting, whatever the model had
    with pytest.raises(UserError, match=r"train.grad_cp=true, but Linear .*train.grad_cp: set train.grad_cp: false"):
        Trainer(nn.Linear(3, 3), config(grad_cp=True), tmp_path / "c", make_dataset(), collate, device="cpu")


def _gloo_worker(rank: int, world: int, init_file: str, out_dir: str, strategy: str, version: str) -> None:
    from rwkv_test_utils import gloo_process_group
    from training.test_trainer import config, train
    from training.toy_run import make_model

    with gloo_process_group(rank, world, init_file):
        losses, trainer = train(__import__("pathlib").Path(out_dir),
                                config(max_steps=3, micro_batch_size=1, save_every=3, strategy=strategy,
                                       grad_cp=True), model=make_model(version=version))
        full = trainer.full_model_state_dict()  # collective under FSDP
        if rank == 0:
            torch.save({"losses": losses, "state": {k: v.detach() for k, v in full.items()}},
                       f"{out_dir}/result.pt")


@pytest.mark.slow
@pytest.mark.parametrize("strategy, version", [("ddp", "6"), ("fsdp", "goldfinch")])
def test_grad_cp_under_two_gloo_processes_equals_one_process_without(tmp_path, strategy, version):
    """DDP and FSDP2 (each block sharded, so the recomputation gathers its weights again) with
    grad_cp train exactly like one process without it."""
    import torch.multiprocessing as mp

    from rwkv_test_utils import single_threaded
    from training.test_trainer import config, train
    from training.toy_run import make_model

    with single_threaded():
        single, trainer = train(tmp_path / "single", config(max_steps=3, micro_batch_size=1, save_every=3),
                                model=make_model(version=version))
    out = tmp_path / "two"
    out.mkdir()
    mp.spawn(_gloo_worker, args=(2, str(tmp_path / "init"), str(out), strategy, version), nprocs=2, join=True)
    result = torch.load(out / "result.pt", weights_only=True)
    assert result["losses"] == pytest.approx(single, rel=1e-5)
    for name, p in trainer.model.state_dict().items():  # Adam turns summation-order noise of
        # near-zero gradients into steps of up to ~lr/1000: the same with grad_cp off
        torch.testing.assert_close(result["state"][name], p, rtol=1e-5, atol=2e-5, msg=name)
