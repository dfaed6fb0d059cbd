"""VisualRWKV with the GoldFinch backbone (`backbone.version: goldfinch`): both training stages
through the real runner, the saved model folder, batched GoldFinch states, and the settings it
cannot take. (Cached-state answering = uncached: tests/vision/test_answer.py, parametrised.)"""

import pytest
import torch

from rwkv_mm.backbone import GoldFinch, GoldFinchState, read_state_dict
from rwkv_mm.recipe import load_recipe
from rwkv_mm.runners import get_runner
from rwkv_mm.runners.visual_rwkv import build_visual_model
from rwkv_mm.vision.answer import cat_states, decode_groups
from rwkv_mm.vision.checkpoint import load_visual_rwkv
from rwkv_mm.vision.conversation import IGNORE_INDEX, IMAGE_TOKEN_ID
from rwkv_test_utils import gloo_process_group, single_threaded
from vision_test_utils import tiny_visual_model

TINY = ["backbone.version=goldfinch", "backbone.n_layer=3", "backbone.n_embd=32", "backbone.head_size=16",
        "vision.custom.image_size=32", "vision.custom.width=32", "vision.custom.layers=1",
        "vision.custom.head_width=16", "data.max_samples=16", "data.ctx_len=96",
        "train.max_steps=2", "train.batch_size=4", "train.warmup_steps=0", "train.save_every=2",
        "train.log_every=1", "train.lr=1e-3"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Stage 1 then stage 2 of a tiny GoldFinch VisualRWKV (2 Finch-C2 + 1 GOLD layer)."""
    tmp = tmp_path_factory.mktemp("gf_stages")
    data = tmp / "synth"
    from rwkv_mm.vision.synth import build_synthetic_visual
    build_synthetic_visual(data, n_train=16, n_eval=2)
    common = TINY + [f"data.synthetic_root={data}", f"data.image_root={data}"]
    r1 = load_recipe("visual/stage1_tiny", common + [f"data.data_path={data}/stage1_captions.json"])
    s1 = get_runner(r1.runner).fn(r1.config, tmp / "s1", False)
    r2 = load_recipe("visual/stage2_tiny", common + [f"init_from={tmp}/s1/model",
                                                      f"data.data_path={data}/stage2_qa.json",
                                                      "eval.gqa_questions=", "eval.pope_questions="])
    s2 = get_runner(r2.runner).fn(r2.config, tmp / "s2", False)
    return tmp, r1.config, r2.config, s1, s2


def test_recipe_builds_a_goldfinch_backbone(runs):
    _, cfg1, _, _, _ = runs
    model = build_visual_model(cfg1)
    assert isinstance(model.rwkv, GoldFinch)
    assert [b.is_gold for b in model.rwkv.blocks] == [False, False, True]


def test_stage1_updates_only_the_projector(runs):
    tmp, cfg1, _, s1, _ = runs
    start = build_visual_model(cfg1)  # same seed: the model stage 1 started from
    trained = torch.load(tmp / "s1" / "checkpoints" / "last.pt", weights_only=True)["model"]
    changed = {k for k, v in start.state_dict().items() if not torch.equal(v, trained[k])}
    assert changed == {"proj.weight"}
    assert s1["trainable_params"] == start.proj.weight.numel()


def test_stage2_trains_finch_c2_gold_and_key_cache_but_not_the_embedding(runs):
    tmp, _, _, _, _ = runs
    before = read_state_dict(tmp / "s1" / "model" / "backbone.pth")
    after = read_state_dict(tmp / "s2" / "model" / "backbone.pth")
    assert "w_kv_cache_a.weight" in after  # the GoldFinch code's layout
    assert torch.equal(before["emb.weight"], after["emb.weight"])
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert {"head.weight", "w_kv_cache_b.weight"} <= changed
    assert any(k.startswith("blocks.0.att.") for k in changed)  # Finch-C2
    assert "blocks.2.att.query.weight" in changed  # GOLD


def test_saved_folder_reloads_with_identical_logits_and_cached_state(runs):
    tmp, _, cfg2, _, _ = runs
    trained = build_visual_model(cfg2)  # stage 1's folder + tower, then stage 2's final weights
    trained.load_state_dict(torch.load(tmp / "s2" / "checkpoints" / "last.pt", weights_only=True)["model"])
    trained.eval()
    loaded, meta = load_visual_rwkv(tmp / "s2" / "model")
    assert isinstance(loaded.rwkv, GoldFinch) and meta["image_position"] == "first"
    P = loaded.num_image_tokens
    ids = torch.tensor([[11, 12] + [IMAGE_TOKEN_ID] * P + [40, 41, 42, 43]])
    pixels = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        want, _ = trained(ids, images=pixels)
        got, _ = loaded(ids, images=pixels)
        torch.testing.assert_close(got, want, rtol=0, atol=0)
        # prefill the image prefix once (last_only), continue with the text: same last logits
        split = 2 + P
        _, state = loaded(ids[:, :split], images=pixels, last_only=True)
        step, _ = loaded(ids[:, split:], state=state.clone())
    torch.testing.assert_close(step[:, -1], want[:, -1], rtol=1e-5, atol=1e-5)


def test_goldfinch_states_batch_only_with_equal_lengths():
    model = tiny_visual_model("goldfinch", n_layer=3, seed=2)
    ids = [torch.tensor([[5, 6, 7]]), torch.tensor([[8, 9]]), torch.tensor([[3, 4, 2]])]
    with torch.no_grad():
        outs = [model(t) for t in ids]
        states = [s for _, s in outs]
        assert decode_groups(states) == [[0, 2], [1]]
        batched = cat_states([states[0], states[2]], model.rwkv.emb)
        assert isinstance(batched, GoldFinchState) and batched.batch_size == 2
        nxt = torch.tensor([[17], [18]])
        logits, _ = model(nxt, state=batched)
        for b, i in enumerate((0, 2)):
            alone, _ = model(nxt[b:b + 1], state=states[i])
            torch.testing.assert_close(logits[b], alone[0], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="different numbers of positions"):
        GoldFinchState.cat(states)


def test_image_reversal_is_rejected_for_goldfinch():
    with pytest.raises(ValueError, match="model.reverse_image_odd_layers"):
        tiny_visual_model("goldfinch", reverse=True, n_layer=3)
    with pytest.raises(ValueError, match="model.reverse_image_odd_layers"):  # refused when the recipe loads
        load_recipe("visual/stage1_tiny", ["backbone.version=goldfinch", "backbone.n_layer=3",
                                           "backbone.n_embd=32", "backbone.head_size=16",
                                           "model.reverse_image_odd_layers=true",
                                           "vision.custom.image_size=32", "vision.custom.width=32",
                                           "vision.custom.layers=1", "vision.custom.head_width=16"])


def test_shipped_recipe_is_a_fresh_goldfinch_stage2():
    cfg = load_recipe("visual/stage2_goldfinch_tiny").config
    assert cfg.stage == 2 and not cfg.init_from and cfg.backbone.version == "goldfinch"
    model = build_visual_model(cfg)
    assert isinstance(model.rwkv, GoldFinch) and model.rwkv.config.n_gold_layer == 1


def _fsdp_samples(n: int = 8, T: int = 16) -> list[dict]:
    """Token rows with a 5-token image span (precomputed tower features) and answer targets."""
    g = torch.Generator().manual_seed(1)
    samples = []
    for _ in range(n):
        ids = torch.randint(10, 300, (T,), generator=g)
        ids[1:6] = IMAGE_TOKEN_ID
        targets = torch.randint(10, 300, (T,), generator=g)
        targets[:6] = IGNORE_INDEX
        samples.append({"input_ids": ids, "targets": targets,
                        "image_features": torch.randn(1, 5, 32, generator=g)})
    return samples


def _fsdp_collate(samples: list[dict]) -> dict:
    return {"input_ids": torch.stack([s["input_ids"] for s in samples]),
            "targets": torch.stack([s["targets"] for s in samples]),
            "image_features": torch.cat([s["image_features"] for s in samples])}


def _train_visual(out_dir, strategy: str = "ddp"):
    """3 stage-2-like steps of a tiny GoldFinch VisualRWKV; (losses, trainer)."""
    from rwkv_mm.training.config import TrainConfig
    from rwkv_mm.training.trainer import Trainer
    from rwkv_mm.vision.model import vlm_loss

    model = tiny_visual_model("goldfinch", n_layer=3, seed=0).train()
    cfg = TrainConfig(max_steps=3, batch_size=4, micro_batch_size=1, lr=1e-3, warmup_steps=0,
                      save_every=3, eval_every=0, log_every=1, seed=3, strategy=strategy,
                      freeze=["vit.*", "rwkv.emb.*"])
    losses: list[float] = []
    trainer = Trainer(model, cfg, out_dir, _fsdp_samples(), _fsdp_collate, loss_fn=vlm_loss, device="cpu")
    trainer.fit(on_step=lambda t, m: losses.append(m["loss"]))
    return losses, trainer


def _fsdp_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    with gloo_process_group(rank, world, init_file):
        losses, trainer = _train_visual(out_dir, "fsdp")
        assert trainer.sharded
        full = trainer.full_model_state_dict()  # collective; whole on rank 0 only
        if rank == 0:
            torch.save({"losses": losses, "w": full["rwkv.w_kv_cache_b.weight"].detach()},
                       f"{out_dir}/result.pt")


@pytest.mark.slow
def test_fsdp_shards_the_goldfinch_blocks_of_a_visual_model(tmp_path):
    """Two gloo processes (FSDP2 over rwkv.blocks, then the root) train like one process."""
    import torch.multiprocessing as mp

    with single_threaded():
        single, trainer = _train_visual(tmp_path / "single")
    out = tmp_path / "fsdp"
    out.mkdir()
    mp.spawn(_fsdp_worker, args=(2, str(tmp_path / "init"), str(out)), nprocs=2, join=True)
    result = torch.load(out / "result.pt", weights_only=True)
    assert result["losses"] == pytest.approx(single, rel=1e-5)
    torch.testing.assert_close(result["w"], trainer.model.rwkv.w_kv_cache_b.weight.detach(),
                               rtol=0, atol=1e-6)
