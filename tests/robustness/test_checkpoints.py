"""Checkpoint loading (issue 13, items 4, 5 and 8): the project reads its own single-head files,
every unreadable or hostile file is one `rwkv-mm: error:` line naming it (exit 2), nothing in a
file runs code, and no memory or time is spent on sizes a file merely claims."""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path

import pytest
import torch

from rwkv_mm.backbone import checkpoint as backbone_checkpoint
from rwkv_mm.backbone import (CheckpointError, RWKVConfig, detect_version, load_model, save_model)
from rwkv_mm.errors import ConfigError
from robustness.cli_utils import assert_user_error, run_cli
from rwkv_test_utils import tiny_model

NOT_READABLE = "truncated or not a torch/safetensors file"
PYTHON_OBJECTS = "contains Python objects that are not tensors (refused: loading them could run code)"
# torch's advice to retry with weights_only=False (its wordings): never shown
TORCH_HINTS = ("Re-running `torch.load`", "`weights_only`", "weights_only=False")


def no_torch_hint(text: str) -> bool:
    return not any(hint in text for hint in TORCH_HINTS)


class Payload:
    """Unpickling this creates `marker` (open(marker, "w")): what a hostile checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def hostile(path: Path, marker: Path, legacy: bool = False) -> Path:
    """A checkpoint-looking dict (tensors plus the payload) saved with torch.save."""
    torch.save({"emb.weight": torch.zeros(4, 8), "model": {"w": torch.zeros(2)}, "x": Payload(marker)}, path,
               _use_new_zipfile_serialization=not legacy)
    return path


def tiny(version: str = "6", **kwargs):
    kwargs = {"n_layer": 2, "n_embd": 32, "head_size": 16, "vocab_size": 128, **kwargs}
    return tiny_model(version=version, **kwargs)


def saved_state_dict(tmp_path: Path, sd: dict, name: str = "bad.pth") -> Path:
    torch.save(sd, tmp_path / name)
    return tmp_path / name


@pytest.fixture
def guard_layers(monkeypatch):
    """Fail fast (instead of hanging) if the loader builds a model of more layers than a test's
    file holds: the sizes a file claims must be checked before anything is built."""
    real = backbone_checkpoint.build_backbone

    def build(config, **kwargs):
        assert config.n_layer <= 4, f"built a model of {config.n_layer} layers before checking the keys"
        return real(config, **kwargs)

    monkeypatch.setattr(backbone_checkpoint, "build_backbone", build)


# ----------------------------------------------------------------------------- item 4: single head
@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
@pytest.mark.parametrize("version", ["5", "6", "goldfinch"])
def test_single_head_model_round_trips_through_the_cli(tmp_path, version, suffix):
    """Before: `init --head-size 64 --n-embd 64` then `info` was refused for Eagle (the [1, 64]
    time_decay was squeezed to [64] and the file taken for RWKV-5.0/5.1)."""
    out = tmp_path / f"m{suffix}"
    made = run_cli("init", "--version", version, "--n-embd", "64", "--head-size", "64", "--n-layer", "2",
                   "--vocab-size", "128", "--out", out)
    assert made.rc == 0, made.err
    info = run_cli("info", out)
    assert info.rc == 0, info.err
    assert "head_size          64" in info.out and f"version            {version}" in info.out
    gen = run_cli("generate", "--checkpoint", out, "--tokenizer", "abc-bytes", "--prompt", "X:1",
                  "--max-tokens", "2", "--temperature", "0")
    assert gen.rc == 0, gen.err


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
@pytest.mark.parametrize("version", ["5", "6", "goldfinch"])
def test_single_head_weights_and_config_survive_save_and_load(tmp_path, version, suffix):
    model = tiny(version, n_layer=2, n_embd=32, head_size=32)  # H = 1
    loaded = load_model(save_model(model, tmp_path / f"m{suffix}"))
    assert loaded.config == model.config
    tokens = torch.tensor([[1, 5, 9, 100]])
    with torch.no_grad():
        assert torch.equal(loaded(tokens)[0], model(tokens)[0])


def test_single_head_music_model_loads_back(tmp_path):
    """Before: a music run with model.n_embd=32 (head_size 32) saved a model.pth it could not read."""
    from rwkv_mm.runners.lm_music import MusicRunConfig, build_model

    model = build_model(MusicRunConfig(backbone=RWKVConfig(version="5", n_layer=1, n_embd=32, head_size=32,
                                                           vocab_size=128)))
    loaded = load_model(save_model(model, tmp_path / "model.pth"))
    assert loaded.config == model.config and loaded.config.n_head == 1


@pytest.mark.parametrize("decay_shape,gate,version", [
    ((1, 64), True, "5.2"),      # Eagle (x052) with one head: per-channel decay [H, N]
    ((4, 16), True, "5.2"),
    ((1,), False, "5.0"),        # RWKV-5.0/5.1: one decay per head [H], even with one head
    ((1,), True, "5.1"),
    ((4,), True, "5.1"),
    ((4, 1, 1), False, "5.0"),   # per-head decay with trailing unit axes
])
def test_rwkv5_generations_are_told_apart_by_the_decay_shape(decay_shape, gate, version):
    """BlinkDL's runtime: 5.2 when time_decay has a second axis longer than 1; 5.1 = 5.0 + gate."""
    sd = {"emb.weight": torch.zeros(8, 64), "blocks.0.att.ln_x.weight": torch.zeros(64),
          "blocks.0.att.time_decay": torch.zeros(decay_shape)}
    if gate:
        sd["blocks.0.att.gate.weight"] = torch.zeros(64, 64)
    assert detect_version(sd) == version


# ----------------------------------------------------------------------------- item 5: layer count
def test_a_stray_layer_index_is_refused_before_any_model_is_built(tmp_path, guard_layers):
    """Before: one extra key `blocks.999999.x` made the loader build a million-layer model (hang)."""
    sd = tiny().state_dict()
    sd["blocks.999999.x"] = torch.zeros(1)
    assert_user_error(run_cli("info", saved_state_dict(tmp_path, sd)), "bad.pth", "blocks.999999.x")


def test_a_gap_in_the_layers_names_the_key_after_it(tmp_path, guard_layers):
    sd = {k: v for k, v in tiny(n_layer=3).state_dict().items() if not k.startswith("blocks.1.")}
    with pytest.raises(CheckpointError, match=r"key 'blocks\.2\.\S+' is in layer 2 but layer 1 has no keys"):
        load_model(saved_state_dict(tmp_path, sd))


def test_safetensors_config_metadata_must_match_the_tensors(tmp_path, guard_layers):
    """The config in a .safetensors' metadata is checked against the keys before it is built."""
    from safetensors.torch import save_file

    model = tiny()
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    claim = {**model.config.to_dict(), "n_layer": 10**6}
    save_file(sd, tmp_path / "claims.safetensors", metadata={"rwkv_mm_config": json.dumps(claim)})
    assert_user_error(run_cli("info", tmp_path / "claims.safetensors"), "claims.safetensors", "n_layer=1000000")
    for text in ("{not json", "[1, 2]", '{"n_layer": "two"}'):
        save_file(sd, tmp_path / "garbled.safetensors", metadata={"rwkv_mm_config": text})
        assert_user_error(run_cli("info", tmp_path / "garbled.safetensors"), "garbled.safetensors",
                          "rwkv_mm_config")


def test_legacy_rwkv5_decay_of_another_size_is_named(tmp_path):
    """RWKV-5.0 files hold one decay per head; a layer with another count is named (before: a
    reshape RuntimeError)."""
    sd = {}
    for key, value in tiny("5", gate=False).state_dict().items():
        if key.endswith(("att.time_decay", "att.time_faaaa")):
            value = value[:, 0].clone()  # [H, N] -> [H]
        sd[key] = value
    sd["blocks.1.att.time_decay"] = torch.zeros(3)
    assert detect_version(sd) == "5.0"
    assert_user_error(run_cli("info", saved_state_dict(tmp_path, sd)), "bad.pth", "blocks.1.att.time_decay")


# ----------------------------------------------------------------------------- item 8: unreadable files
def _damaged(tmp_path: Path, damage: str, suffix: str) -> Path:
    good = save_model(tiny(), tmp_path / f"good{suffix}")
    bad = tmp_path / f"bad{suffix}"
    data = good.read_bytes()
    bad.write_bytes({"empty": b"", "truncated": data[: len(data) // 2],
                     "garbage": b"garbage, not a checkpoint\n" * 20}[damage])
    return bad


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
@pytest.mark.parametrize("damage", ["empty", "truncated", "garbage"])
def test_unreadable_checkpoint_is_one_line_naming_the_file(tmp_path, damage, suffix):
    """Before: EOFError, OSError, SafetensorError or UnpicklingError tracebacks (exit 1)."""
    result = run_cli("info", _damaged(tmp_path, damage, suffix))
    assert_user_error(result, f"bad{suffix}", NOT_READABLE)
    assert no_torch_hint(result.err)


def test_generate_names_an_unreadable_checkpoint(tmp_path):
    result = run_cli("generate", "--checkpoint", _damaged(tmp_path, "truncated", ".pth"), "--prompt", "hi")
    assert_user_error(result, "bad.pth", NOT_READABLE)


def test_one_dimensional_embedding_is_named(tmp_path):
    """Before: ValueError 'not enough values to unpack' (exit 1)."""
    sd = tiny().state_dict()
    sd["emb.weight"] = torch.zeros(32)
    assert_user_error(run_cli("info", saved_state_dict(tmp_path, sd)), "bad.pth", "emb.weight", "[32]")


def test_hostile_payload_is_live(tmp_path):
    """The control for the tests below: loaded without weights_only, the payload does create
    its marker, so a marker that stays absent means the loader refused to run it."""
    path = hostile(tmp_path / "evil.pth", tmp_path / "MARKER")
    torch.load(path, weights_only=False)
    assert (tmp_path / "MARKER").exists()


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_hostile_backbone_runs_nothing_and_is_named(tmp_path, legacy):
    marker = tmp_path / "MARKER"
    path = hostile(tmp_path / "evil.pth", marker, legacy=legacy)
    for args in (("info", path), ("generate", "--checkpoint", path, "--prompt", "hi")):
        result = run_cli(*args)
        assert_user_error(result, "evil.pth", PYTHON_OBJECTS)
        assert no_torch_hint(result.err)
    assert not marker.exists()


def test_hostile_training_checkpoint_runs_nothing(tmp_path):
    from rwkv_mm.training.checkpoint import load_training_checkpoint

    marker = tmp_path / "MARKER"
    with pytest.raises(CheckpointError, match="contains Python objects") as err:
        load_training_checkpoint(hostile(tmp_path / "last.pt", marker))
    assert "last.pt" in str(err.value) and no_torch_hint(str(err.value))
    assert not marker.exists()


def test_hostile_tagger_runs_nothing(tmp_path):
    marker = tmp_path / "MARKER"
    result = run_cli("audio", "tag", "clip.wav", "--checkpoint", hostile(tmp_path / "model.pt", marker))
    assert_user_error(result, "model.pt", PYTHON_OBJECTS)
    assert not marker.exists()


def _visual_folder(tmp_path: Path, **meta_changes) -> Path:
    """A VisualRWKV folder as the runner writes it (tiny backbone, linear projector)."""
    from dataclasses import asdict

    from rwkv_mm.vision.tower import CustomViTConfig, VisionConfig

    folder = tmp_path / "model"
    folder.mkdir()
    save_model(tiny(n_embd=32), folder / "backbone.pth")
    torch.save({"weight": torch.randn(32, 16)}, folder / "projector.pth")
    vision = VisionConfig(model_name="custom", pretrained="",
                          custom=CustomViTConfig(image_size=32, patch_size=16, width=16, layers=1, head_width=16))
    meta = {"format": "rwkv_mm.visual_rwkv/1", "backbone": "backbone.pth", "projector": "projector.pth",
            "vision": asdict(vision), "template": {}, "image_position": "first",
            "reverse_image_odd_layers": False, **meta_changes}
    (folder / "visual_rwkv.json").write_text(json.dumps(meta))
    return folder


@pytest.mark.parametrize("target", ["backbone.pth", "projector.pth", "released.pth"])
def test_hostile_visual_rwkv_files_run_nothing(tmp_path, target):
    marker = tmp_path / "MARKER"
    if target == "released.pth":
        checkpoint = hostile(tmp_path / "released.pth", marker)
    else:
        checkpoint = _visual_folder(tmp_path)
        hostile(checkpoint / target, marker)
    result = run_cli("chat", "--checkpoint", checkpoint, "--prompt", "hi")
    assert_user_error(result, target, PYTHON_OBJECTS)
    assert not marker.exists()


def test_garbage_visual_rwkv_json_is_named(tmp_path):
    """Before: a JSONDecodeError traceback."""
    folder = _visual_folder(tmp_path)
    (folder / "visual_rwkv.json").write_text("{garbage")
    assert_user_error(run_cli("chat", "--checkpoint", folder, "--prompt", "hi"), "visual_rwkv.json", "JSON")


def test_bad_setting_in_visual_rwkv_json_names_file_and_key(tmp_path):
    folder = _visual_folder(tmp_path, template={"usr": "Q"})
    assert_user_error(run_cli("chat", "--checkpoint", folder, "--prompt", "hi"), "visual_rwkv.json",
                      "template.usr")


def test_visual_rwkv_json_names_files_inside_its_folder(tmp_path):
    (tmp_path / "outside.pth").write_bytes(b"")
    folder = _visual_folder(tmp_path, backbone="../outside.pth")
    assert_user_error(run_cli("chat", "--checkpoint", folder, "--prompt", "hi"), "visual_rwkv.json",
                      "../outside.pth")


def test_visual_projector_with_nan_is_named(tmp_path):
    folder = _visual_folder(tmp_path)
    torch.save({"weight": torch.full((32, 16), float("nan"))}, folder / "projector.pth")
    assert_user_error(run_cli("chat", "--checkpoint", folder, "--prompt", "hi"), "projector.pth", "'weight'",
                      "NaN")


# ----------------------------------------------------------------------------- dtypes and values
@pytest.mark.parametrize("dtype", [torch.int32, torch.bool, torch.complex64])
def test_non_float_weights_are_refused_by_key(tmp_path, dtype):
    """Before: integer and complex weights were cast to float and loaded (complex silently lost
    its imaginary part), exit 0."""
    sd = tiny().state_dict()
    sd["blocks.1.att.key.weight"] = sd["blocks.1.att.key.weight"].to(dtype)
    assert_user_error(run_cli("info", saved_state_dict(tmp_path, sd)), "bad.pth", "blocks.1.att.key.weight",
                      str(dtype).removeprefix("torch."))


def test_sparse_weights_are_refused_by_key(tmp_path):
    sd = tiny().state_dict()
    sd["blocks.0.ffn.key.weight"] = sd["blocks.0.ffn.key.weight"].to_sparse()
    assert_user_error(run_cli("info", saved_state_dict(tmp_path, sd)), "bad.pth", "blocks.0.ffn.key.weight",
                      "sparse")


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused_by_key(tmp_path, value):
    """Before: NaN weights loaded and sampled garbage with exit 0."""
    sd = tiny().state_dict()
    sd["blocks.1.ffn.value.weight"][3, 4] = value
    result = run_cli("generate", "--checkpoint", saved_state_dict(tmp_path, sd), "--tokenizer", "abc-bytes",
                     "--prompt", "X:1", "--max-tokens", "2")
    assert_user_error(result, "bad.pth", "blocks.1.ffn.value.weight", "NaN or infinite")


def test_non_finite_tagger_weights_are_refused_by_key(tmp_path):
    ckpt = torch.load(_tagger(tmp_path), weights_only=True)
    ckpt["model"]["head.weight"][0, 0] = float("nan")
    torch.save(ckpt, tmp_path / "nan.pt")
    result = run_cli("audio", "tag", "clip.wav", "--checkpoint", tmp_path / "nan.pt")
    assert_user_error(result, "nan.pt", "head.weight", "NaN")


def _tagger(tmp_path: Path) -> Path:
    from rwkv_mm.audio.checkpoint import save_tagger
    from rwkv_mm.audio.fbank import FbankConfig
    from rwkv_mm.audio.features import AudioFeatures, FeatureStats
    from rwkv_mm.audio.model import AudioRWKV, AudioRWKVConfig

    torch.manual_seed(0)
    model = AudioRWKV(AudioRWKVConfig(
        backbone=RWKVConfig(n_layer=1, n_embd=32, head_size=16, dim_ffn=128, tm_lora_rank=4, decay_lora_rank=4),
        num_classes=3, num_mel_bins=32, target_frames=48, patch=(8, 8), stride=(8, 8)))
    features = AudioFeatures(FbankConfig(num_mel_bins=32), 48, FeatureStats(-6.0, 3.0))
    return save_tagger(tmp_path / "model.pt", model, features, ["/m/a", "/m/b", "/m/c"], ["A", "B", "C"])


def test_tagger_config_claiming_more_layers_is_refused_before_building(tmp_path, monkeypatch):
    """Before: the tagger was built at the size its config claims, then the weights compared."""
    import rwkv_mm.audio.checkpoint as audio_checkpoint

    real = audio_checkpoint.AudioRWKV

    def build(config, **kwargs):
        assert config.n_layer <= 4, f"built a {config.n_layer}-layer tagger before checking the weights"
        return real(config, **kwargs)

    monkeypatch.setattr(audio_checkpoint, "AudioRWKV", build)
    ckpt = torch.load(_tagger(tmp_path), weights_only=True)
    ckpt["model_config"]["backbone"]["n_layer"] = 10**6
    torch.save(ckpt, tmp_path / "claims.pt")
    result = run_cli("audio", "tag", "clip.wav", "--checkpoint", tmp_path / "claims.pt")
    assert_user_error(result, "claims.pt", "n_layer=1000000")


# ----------------------------------------------------------------------------- claimed sizes
def _claim_in_safetensors(tmp_path: Path) -> Path:
    """A .safetensors whose header says emb.weight is [10**9, 32] (the data holds [128, 32])."""
    good = save_model(tiny(), tmp_path / "good.safetensors").read_bytes()
    n = struct.unpack("<Q", good[:8])[0]
    header = json.loads(good[8:8 + n])
    header["emb.weight"]["shape"] = [10**9, 32]
    text = json.dumps(header).encode()
    (tmp_path / "claims.safetensors").write_bytes(struct.pack("<Q", len(text)) + text + good[8 + n:])
    return tmp_path / "claims.safetensors"


def _claim_in_zip_pickle(tmp_path: Path) -> Path:
    """A torch zip file whose pickle says emb.weight is [10**9, 32] (its storage holds 12345·32)."""
    sd = tiny().state_dict()
    sd["emb.weight"] = torch.zeros(12345, 32)
    torch.save(sd, tmp_path / "good.pth")
    with zipfile.ZipFile(tmp_path / "good.pth") as src, \
            zipfile.ZipFile(tmp_path / "claims.pth", "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            if name.endswith("data.pkl"):
                old = b"M" + (12345).to_bytes(2, "little")  # BININT2 12345
                assert data.count(old) == 1
                data = data.replace(old, b"J" + (10**9).to_bytes(4, "little"))  # BININT 10**9
            dst.writestr(name, data)
    return tmp_path / "claims.pth"


def _claim_in_legacy_storage(tmp_path: Path) -> Path:
    """A pre-1.6-format torch file whose storage record claims 10**15 floats (4 PB)."""
    torch.save({"emb.weight": torch.zeros(12345, 32)}, tmp_path / "good.pth",
               _use_new_zipfile_serialization=False)
    data = (tmp_path / "good.pth").read_bytes()
    old = b"J" + (12345 * 32).to_bytes(4, "little")  # the storage's numel, BININT
    assert data.count(old) == 1
    claim = (10**15).to_bytes(7, "little")
    (tmp_path / "claims.pth").write_bytes(data.replace(old, b"\x8a" + bytes([len(claim)]) + claim))  # LONG1
    return tmp_path / "claims.pth"


@pytest.mark.parametrize("make", [_claim_in_safetensors, _claim_in_zip_pickle, _claim_in_legacy_storage],
                         ids=["safetensors-header", "zip-pickle", "legacy-storage"])
def test_sizes_claimed_beyond_the_file_are_refused_without_allocating(tmp_path, make):
    """Before: raw SafetensorError / RuntimeError (exit 1); the legacy format tried to allocate
    the claimed 4 PB. The files are memory-mapped (zip, safetensors) or their claims read
    without data first (legacy), so the claim fails against the file's size."""
    path = make(tmp_path)
    result = run_cli("info", path)
    assert_user_error(result, path.name, NOT_READABLE)
    assert "allocate" not in result.err


# ----------------------------------------------------------------------------- configs and training
def test_rwkv_config_errors_name_the_dotted_key():
    """Before: RWKVConfig raised plain ValueErrors ('RWKVConfig.head_size=30: ...'), which the
    recipe reader could not prefix with the section."""
    from rwkv_mm.recipe import RecipeError, build_config

    with pytest.raises(RecipeError, match=r"model\.head_size=30: expected a multiple of 4"):
        build_config(RWKVConfig, {"head_size": 30, "n_embd": 120}, "model")
    with pytest.raises(ConfigError, match="layer_norm_eps=nan"):
        RWKVConfig(layer_norm_eps=float("nan"))
    with pytest.raises(ConfigError, match="rope_base=nan"):
        RWKVConfig(version="goldfinch", n_layer=3, rope_base=float("nan"))


@pytest.mark.parametrize("damage", ["empty", "truncated", "garbage", "list", "no-optimizer"])
def test_damaged_training_checkpoint_is_named_with_the_way_out(tmp_path, damage):
    """Before: raw EOFError/RuntimeError/UnpicklingError tracebacks, or a ValueError."""
    from rwkv_mm.training.checkpoint import load_training_checkpoint

    path = tmp_path / "last.pt"
    full = {"model": {"w": torch.zeros(3)}, "optimizer": {}, "step": 1, "data": {}, "rng": {}}
    if damage in ("truncated", "no-optimizer", "list"):
        torch.save({k: v for k, v in full.items() if k != "optimizer"} if damage == "no-optimizer"
                   else [1, 2] if damage == "list" else full, path)
        if damage == "truncated":
            path.write_bytes(path.read_bytes()[:200])
    else:
        path.write_bytes(b"" if damage == "empty" else b"\x00garbage" * 50)
    with pytest.raises(CheckpointError) as err:
        load_training_checkpoint(path)
    message = str(err.value)
    assert "last.pt" in message and "--overwrite" in message and no_torch_hint(message)
