"""Runner `visual_rwkv`: one VisualRWKV training stage (paper §10.2), then an optional quick eval.

Stage 1 trains only the projector (`proj.*`); stage 2 trains the projector and the language
model with the embedding and the CLIP tower frozen. The runner enforces both, whatever the
recipe's `train.freeze`/`train_only` add. Stage 2 starts from stage 1's output folder through
`init_from`. The result is saved as `<run_dir>/model/` (backbone.pth, projector.pth,
visual_rwkv.json); with `eval` files set, GQA-format accuracy and POPE-format F1 are reported.

Every config section checks its values when built (a recipe names the dotted key and file).
Bad samples (`data.on_error`) and unreadable evaluation images (`eval.on_error`) stop the run
with an error naming the sample/question and file, or are skipped and counted in the summary.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from rwkv_mm.backbone import VERSION_ALIASES as _VERSION_ALIASES
from rwkv_mm.errors import ConfigError, UserError, check_choice, check_int
from rwkv_mm.runners import register_runner
from rwkv_mm.training.config import TrainConfig
from rwkv_mm.vision.conversation import IMAGE_POSITIONS, ChatTemplate
from rwkv_mm.vision.data import ON_ERROR
from rwkv_mm.vision.tower import VisionConfig


@dataclass
class VisualModelConfig:
    """The language model: a fresh one of this shape, or the weights of `backbone` (an official
    RWKV-5/6 World .pth, e.g. RWKV-5-World-1B5, or a GoldFinch file) — ignored when `init_from`
    is set. `version`: "5" (Eagle), "6" (Finch) or "goldfinch" (Finch-C2 + GOLD layers; its
    default split, L - int(2L/3) GOLD layers on top)."""

    backbone: str = ""
    version: str = "5"
    n_layer: int = 24
    n_embd: int = 2048
    head_size: int = 64
    vocab_size: int = 65536
    reverse_image_odd_layers: bool = False  # VisualRWKV-6's bidirectional image span

    def __post_init__(self) -> None:
        if str(self.version).strip().lower() not in _VERSION_ALIASES:
            raise ConfigError("version", self.version, "'5' (Eagle), '6' (Finch) or 'goldfinch'")
        for name in ("n_layer", "n_embd", "head_size", "vocab_size"):
            check_int(self, name, min=1)
        canonical = _VERSION_ALIASES[str(self.version).strip().lower()]
        if self.reverse_image_odd_layers and canonical == "goldfinch":
            raise ConfigError("reverse_image_odd_layers", True, "false with version goldfinch (GOLD "
                              "layers share one key cache in sequence order)")


@dataclass
class VisualDataConfig:
    """LLaVA JSON + image root. `synthetic`: generate the bundled shapes set into `synthetic_root`
    when missing (tiny recipes)."""

    data_path: str = "playground/data/LLaVA-Pretrain/blip_laion_cc_sbu_558k.json"
    image_root: str = "playground/data/LLaVA-Pretrain/images"
    ctx_len: int = 1024
    image_position: str = "first"  # first | middle | last | keep
    on_error: str = "raise"  # raise | skip (bad samples are counted and reported)
    cache_features: bool = False  # compute each image's tower features once (frozen tower)
    max_samples: int = 0  # 0 = all
    synthetic: bool = False
    synthetic_root: str = "data/visual_synth"

    def __post_init__(self) -> None:
        check_int(self, "ctx_len", min=1)
        check_choice(self, "image_position", IMAGE_POSITIONS)
        check_choice(self, "on_error", ON_ERROR)
        check_int(self, "max_samples", min=0)


@dataclass
class VisualEvalConfig:
    """Quick evaluation after training (GQA/POPE formats; `rwkv-mm eval` is the full tool)."""

    gqa_questions: str = ""  # llava_gqa_testdev_balanced_questions.jsonl
    gqa_answers: str = ""  # the official testdev_balanced_questions.json
    gqa_images: str = ""
    pope_questions: str = ""  # a coco_pope_*.json file
    pope_images: str = ""  # COCO val2014
    max_questions: int = 200  # per benchmark; 0 = all
    max_new_tokens: int = 8
    batch_size: int = 16
    show: int = 4  # print this many question/answer pairs
    on_error: str = "raise"  # raise | skip (questions with unreadable images, counted and listed)

    def __post_init__(self) -> None:
        check_int(self, "max_questions", min=0)
        check_int(self, "max_new_tokens", min=1)
        check_int(self, "batch_size", min=1)
        check_int(self, "show", min=0)
        check_choice(self, "on_error", ON_ERROR)


@dataclass
class VisualRunConfig:
    stage: int = 1
    init_from: str = ""  # a previous stage's model folder or a released VisualRWKV .pth
    model: VisualModelConfig = field(default_factory=VisualModelConfig)
    vision: VisionConfig = field(default_factory=VisionConfig)
    template: ChatTemplate = field(default_factory=ChatTemplate)
    data: VisualDataConfig = field(default_factory=VisualDataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: VisualEvalConfig = field(default_factory=VisualEvalConfig)

    def __post_init__(self) -> None:
        check_choice(self, "stage", tuple(STAGE_RULES))


STAGE_RULES = {1: {"train_only": ["proj.*"], "freeze": ["vit.*"]},
               2: {"train_only": [], "freeze": ["vit.*", "rwkv.emb.*"]}}


def stage_train_config(cfg: VisualRunConfig) -> TrainConfig:
    """`cfg.train` with the stage's freezing rules merged in."""
    if cfg.stage not in STAGE_RULES:
        raise ConfigError("stage", cfg.stage, "1 (projector only) or 2 (projector + LM)")
    rules = STAGE_RULES[cfg.stage]
    train = TrainConfig(**{**cfg.train.__dict__})
    if rules["train_only"]:
        extra = [p for p in cfg.train.train_only if p not in rules["train_only"]]
        if extra:
            raise UserError(f"stage 1 trains only the projector; train.train_only has {extra}",
                            fix="remove them, or train them in stage 2")
        train.train_only = list(rules["train_only"])
    train.freeze = list(dict.fromkeys([*cfg.train.freeze, *rules["freeze"]]))
    return train


def build_visual_model(cfg: VisualRunConfig):
    """The fusion model: from `init_from`, or a backbone (file or fresh) + a fresh projector."""
    from rwkv_mm.backbone import RWKVConfig, build_backbone, load_model
    from rwkv_mm.vision.checkpoint import load_visual_rwkv
    from rwkv_mm.vision.model import VisualRWKV
    from rwkv_mm.vision.projector import build_projector
    from rwkv_mm.vision.tower import build_vision_tower

    if cfg.init_from:
        model, _ = load_visual_rwkv(cfg.init_from, with_tower=False)
        model.vit = build_vision_tower(cfg.vision)
        model.reverse_image_odd_layers = cfg.model.reverse_image_odd_layers
        return model
    torch.manual_seed(cfg.train.seed)
    m = cfg.model
    if m.backbone:
        rwkv = load_model(m.backbone)
    else:
        rwkv = build_backbone(RWKVConfig(version=m.version, n_layer=m.n_layer, n_embd=m.n_embd,
                                         vocab_size=m.vocab_size, head_size=m.head_size))
    tower = build_vision_tower(cfg.vision)
    proj = build_projector(cfg.vision.projector, tower.hidden_size, rwkv.config.n_embd)
    return VisualRWKV(rwkv, tower, proj, m.reverse_image_odd_layers)


def _resolve(cfg: VisualRunConfig) -> None:
    """Generate the synthetic set when the recipe asks for it."""
    if cfg.data.synthetic:
        from rwkv_mm.vision.synth import build_synthetic_visual
        build_synthetic_visual(cfg.data.synthetic_root)


@register_runner("visual_rwkv", config=VisualRunConfig,
                 description="VisualRWKV stage 1 (projector) or 2 (projector + LM) on LLaVA JSON")
def run(cfg: VisualRunConfig, run_dir: Path, resume: bool = False) -> dict:
    """Train one stage, save `<run_dir>/model/`, optionally evaluate; returns the summary."""
    from rwkv_mm.backbone import load_tokenizer
    from rwkv_mm.training.trainer import Trainer
    from rwkv_mm.vision.checkpoint import save_visual_rwkv
    from rwkv_mm.vision.data import FeatureCache, LlavaDataset, LoadReport, collate_llava, load_llava_json
    from rwkv_mm.vision.model import vlm_loss
    from rwkv_mm.vision.preprocess import ImageProcessor

    run_dir = Path(run_dir)
    _resolve(cfg)
    train_cfg = stage_train_config(cfg)
    report = LoadReport()  # the data is checked before a (possibly multi-GB) model is built
    records = load_llava_json(cfg.data.data_path, cfg.data.image_root, cfg.data.on_error, report)
    if cfg.data.max_samples > 0:
        records = records[:cfg.data.max_samples]
    model = build_visual_model(cfg)
    tower = model.vit
    tokenizer = load_tokenizer("world")
    processor = ImageProcessor(tower.image_size, cfg.vision.pad_to_square)
    features = FeatureCache(tower, processor) if cfg.data.cache_features else None
    dataset = LlavaDataset(records, tokenizer, tower.num_tokens, processor, features, cfg.data.ctx_len,
                           cfg.template, cfg.data.image_position, cfg.data.on_error, report)
    print(f"stage {cfg.stage}: {len(records)} samples from {cfg.data.data_path} ({report.summary()}); "
          f"{tower.num_tokens} image tokens per image")
    trainer = Trainer(model, train_cfg, run_dir, dataset, collate_llava, loss_fn=vlm_loss)
    print(f"parameters: {trainer.param_counts['trainable']:,} trainable, {trainer.param_counts['frozen']:,} frozen")
    summary = trainer.fit(resume=resume)
    if trainer.rank != 0:
        return summary
    model = model.cpu().eval()
    model_dir = run_dir / "model"
    save_visual_rwkv(model, model_dir, cfg.vision, cfg.template, cfg.data.image_position)
    summary.update({"stage": cfg.stage, "model_dir": str(model_dir), "skipped_samples": report.skipped,
                    "trainable_params": trainer.param_counts["trainable"]})
    if report.skipped:
        summary["skipped_report"] = report.summary()
        print(f"bad samples: {report.summary()}")
    summary.update(quick_eval(model, tokenizer, processor, cfg))
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


def quick_eval(model, tokenizer, processor, cfg: VisualRunConfig) -> dict:
    """GQA-format accuracy and POPE-format metrics on the first `max_questions` questions.

    With `eval.on_error: skip`, questions whose image cannot be read are left out of the
    metrics and counted (`gqa_skipped`, `pope_skipped`, with a printed list)."""
    from rwkv_mm.vision.answer import SkippedQuestion, VisualAnswerer, answer_in_batches
    from rwkv_mm.vision.eval_files import read_gqa_questions, read_official_gqa_answers, read_pope_questions
    from rwkv_mm.vision.evaluate import score_gqa, skipped_note
    from rwkv_mm.vision.metrics import pope_metrics

    e = cfg.eval
    out: dict = {}
    if not (e.gqa_questions or e.pope_questions):
        return out
    answerer = VisualAnswerer(model, tokenizer, processor, cfg.template, cfg.data.image_position,
                              e.max_new_tokens)

    def answer_all(questions, name: str) -> tuple[dict[str, str], list[SkippedQuestion]]:
        skipped: list[SkippedQuestion] = []
        answers = {q.qid: a for pairs in answer_in_batches(answerer, questions, e.batch_size, e.on_error,
                                                            skipped) for q, a in pairs}
        out[f"{name}_skipped"] = len(skipped)
        if skipped:
            print(f"  {name.upper()}: {skipped_note(skipped, len(questions))}")
        return answers, skipped

    limit = (lambda xs: xs[:e.max_questions]) if e.max_questions > 0 else (lambda xs: xs)
    if e.gqa_questions:
        questions = limit(read_gqa_questions(e.gqa_questions, e.gqa_images))
        truth = read_official_gqa_answers(e.gqa_answers)
        answers, skipped = answer_all(questions, "gqa")
        out["gqa_accuracy"] = score_gqa(questions, answers, truth, skipped)["accuracy"]
        shown = [q for q in questions if q.qid in answers][:e.show]
        for q in shown:
            print(f"  GQA  {q.text.splitlines()[0]!r} -> {answers[q.qid]!r} (truth {truth[q.qid]!r})")
    if e.pope_questions:
        questions, labels = read_pope_questions(e.pope_questions, e.pope_images)
        questions, labels = limit(questions), limit(labels)
        answers, _ = answer_all(questions, "pope")
        kept = [(q, answers[q.qid], lab) for q, lab in zip(questions, labels) if q.qid in answers]
        metrics = pope_metrics([a for _, a, _ in kept], [lab for _, _, lab in kept])
        out.update({f"pope_{k}": v for k, v in metrics.items() if k in ("accuracy", "f1", "yes_ratio")})
        for q, a, lab in kept[:e.show]:
            print(f"  POPE {q.text!r} -> {a!r} (label {lab})")
    return out
