"""Runner `visual_rwkv`: one VisualRWKV training stage (paper §10.2), then an optional quick eval.

Stage 1 trains only the projector (`proj.*`); stage 2 trains the projector and the language
model with the embedding and the CLIP tower frozen (with `train.state_tuning`: the projector and
the LM's initial states, every LM weight frozen). The runner enforces each, whatever the
recipe's `train.freeze`/`train_only` add. The language model is the recipe's `backbone:` (an
RWKVConfig): fresh, from `backbone_weights` (an official RWKV-5/6 World .pth or a GoldFinch
file), or — stage 2 — with the whole model from stage 1's output folder (`init_from`). The
result is saved as `<run_dir>/model/` (backbone.pth, projector.pth, visual_rwkv.json); with
`eval` files set, GQA-format accuracy and POPE-format F1 are reported.

Every config section checks its values when built (a recipe names the dotted key and file).
Bad samples (`data.on_error`) and unreadable evaluation images (`eval.on_error`) stop the run
with an error naming the sample/question and file, or are skipped and counted in the summary.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rwkv_mm.backbone import RWKVConfig
from rwkv_mm.errors import ConfigError, check_choice, check_int
from rwkv_mm.runners import register_stage
from rwkv_mm.training.backbone_section import backbone_from, check_backbone, require_shape
from rwkv_mm.training.config import TrainConfig
from rwkv_mm.training.freezing import with_stage_rules
from rwkv_mm.training.segments import check_max_len, sample_len
from rwkv_mm.training.state_tuning import STATE_FILE, write_state_file
from rwkv_mm.training.trainer import Trainer
from rwkv_mm.vision.conversation import IMAGE_POSITIONS, ChatTemplate
from rwkv_mm.vision.data import ON_ERROR
from rwkv_mm.vision.tower import VisionConfig


@dataclass
class VisualModelConfig:
    """How the image span runs through the language model (the LM itself is `backbone:`).
    `reverse_image_odd_layers`: VisualRWKV-6's bidirectional image span (Eagle/Finch only)."""

    reverse_image_odd_layers: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.reverse_image_odd_layers, bool):
            raise ConfigError("reverse_image_odd_layers", self.reverse_image_odd_layers, "true or false")


@dataclass
class VisualDataConfig:
    """LLaVA JSON + image root. `synthetic`: generate the bundled shapes set into `synthetic_root`
    when missing (tiny recipes). `max_len`: with `train.segment_len`, the longest sample
    (0/null: `ctx_len`)."""

    data_path: str = "playground/data/LLaVA-Pretrain/blip_laion_cc_sbu_558k.json"
    image_root: str = "playground/data/LLaVA-Pretrain/images"
    ctx_len: int = 1024
    max_len: int | None = None
    image_position: str = "first"  # first | middle | last | keep
    on_error: str = "raise"  # raise | skip (bad samples are counted and reported)
    cache_features: bool = False  # compute each image's tower features once (frozen tower)
    max_samples: int = 0  # 0 = all
    synthetic: bool = False
    synthetic_root: str = "runs/data/visual_synth"

    def __post_init__(self) -> None:
        check_int(self, "ctx_len", min=1)
        check_int(self, "max_len", min=0, optional=True)
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
    """`init_from`: a previous stage's model folder or a released VisualRWKV .pth (the whole
    model); `backbone`: the LM (null = the shape of the weights); `backbone_weights`: an LM file
    to start a fresh fusion model from."""

    stage: int = 1
    init_from: str = ""
    backbone: RWKVConfig | None = field(default_factory=RWKVConfig)
    backbone_weights: str = ""
    model: VisualModelConfig = field(default_factory=VisualModelConfig)
    vision: VisionConfig = field(default_factory=VisionConfig)
    template: ChatTemplate = field(default_factory=ChatTemplate)
    data: VisualDataConfig = field(default_factory=VisualDataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: VisualEvalConfig = field(default_factory=VisualEvalConfig)

    def __post_init__(self) -> None:
        check_choice(self, "stage", tuple(STAGE_RULES))
        require_shape(self.backbone, init_from=self.init_from, backbone_weights=self.backbone_weights)
        check_max_len(self.data.max_len, self.train.segment_len)
        if self.init_from and self.backbone_weights:
            raise ConfigError("backbone_weights", self.backbone_weights,
                              "empty when init_from is set (the whole model, LM included, comes from there)")
        if self.train.state_tuning and self.stage == 1:
            raise ConfigError("train.state_tuning", True, "false in stage 1, which trains only the projector "
                                                          "(the state-tuned stage is stage 2: states + projector)")
        if self.model.reverse_image_odd_layers and self.backbone is not None and self.backbone.is_goldfinch:
            raise ConfigError("model.reverse_image_odd_layers", True, "false with backbone.version goldfinch "
                              "(GOLD layers share one key cache in sequence order)")


#: what each stage trains, whatever the recipe's train.freeze / train.train_only say
STAGE_RULES = {1: {"train_only": ["proj.*"], "freeze": ["vit.*"], "what": "stage 1 trains only the projector"},
               2: {"train_only": [], "freeze": ["vit.*", "rwkv.emb.*"], "what": "stage 2"}}


def stage_train_config(cfg: VisualRunConfig) -> TrainConfig:
    """`cfg.train` with the stage's freezing rules merged in."""
    rules = STAGE_RULES[cfg.stage]
    train = with_stage_rules(cfg.train, rules["freeze"], rules["train_only"], rules["what"])
    if train.state_tuning:  # the state-tuned stage 2 trains the LM's initial states and the projector
        train = dataclasses.replace(train, train_only=list(dict.fromkeys([*train.train_only, "proj.*"])))
    return train


def build_visual_model(cfg: VisualRunConfig) -> nn.Module:
    """The fusion model: from `init_from`, or the backbone (fresh or `backbone_weights`) with the
    tower and a fresh projector (seeded with `train.seed`)."""
    from rwkv_mm.vision.checkpoint import load_visual_rwkv
    from rwkv_mm.vision.model import VisualRWKV
    from rwkv_mm.vision.projector import build_projector
    from rwkv_mm.vision.tower import build_vision_tower

    if cfg.init_from:
        model, _ = load_visual_rwkv(cfg.init_from, with_tower=False)
        check_backbone(cfg.backbone, model.rwkv.config, f"init_from={cfg.init_from}")
        model.vit = build_vision_tower(cfg.vision)
        model.reverse_image_odd_layers = cfg.model.reverse_image_odd_layers
        return model
    torch.manual_seed(cfg.train.seed)
    rwkv = backbone_from(cfg.backbone, cfg.backbone_weights, cfg.train.seed)
    tower = build_vision_tower(cfg.vision)
    proj = build_projector(cfg.vision.projector, tower.hidden_size, rwkv.config.n_embd)
    return VisualRWKV(rwkv, tower, proj, cfg.model.reverse_image_odd_layers)


@register_stage("visual_rwkv", config=VisualRunConfig,
                description="VisualRWKV stage 1 (projector) or 2 (projector + LM) on LLaVA JSON",
                outputs=("model/backbone.pth", "model/projector.pth", "model/visual_rwkv.json", "model/state.pth"))
class VisualStage:
    """Train one stage on LLaVA-format samples; export `<run_dir>/model/` and a quick eval."""

    def __init__(self, cfg: VisualRunConfig, run_dir: Path) -> None:
        self.cfg, self.run_dir = cfg, run_dir

    def setup(self) -> Trainer:
        """The samples (checked before a possibly multi-GB model is built), the model, the trainer."""
        from rwkv_mm.backbone import load_tokenizer
        from rwkv_mm.vision.data import FeatureCache, LlavaDataset, LoadReport, collate_llava, load_llava_json
        from rwkv_mm.vision.model import vlm_loss
        from rwkv_mm.vision.preprocess import ImageProcessor

        cfg, d = self.cfg, self.cfg.data
        if d.synthetic:
            from rwkv_mm.vision.synth import build_synthetic_visual
            build_synthetic_visual(d.synthetic_root)
        train_cfg = stage_train_config(cfg)
        self.report = LoadReport()
        records = load_llava_json(d.data_path, d.image_root, d.on_error, self.report)
        records = records[:d.max_samples] if d.max_samples > 0 else records
        model = self.build_model()
        tower = model.vit
        self.tokenizer = load_tokenizer("world")
        self.processor = ImageProcessor(tower.image_size, cfg.vision.pad_to_square)
        features = FeatureCache(tower, self.processor) if d.cache_features else None
        length = sample_len(d.ctx_len, d.max_len, cfg.train.segment_len)
        dataset = LlavaDataset(records, self.tokenizer, tower.num_tokens, self.processor, features, length,
                               cfg.template, d.image_position, d.on_error, self.report)
        print(f"stage {cfg.stage}: {len(records)} samples from {d.data_path} ({self.report.summary()}); "
              f"{tower.num_tokens} image tokens per image")
        self.trainer = Trainer(model, train_cfg, self.run_dir, dataset, collate_llava, loss_fn=vlm_loss)
        counts = self.trainer.param_counts
        print(f"parameters: {counts['trainable']:,} trainable, {counts['frozen']:,} frozen")
        return self.trainer

    def build_model(self) -> nn.Module:
        return build_visual_model(self.cfg)

    def export(self, model: nn.Module) -> dict[str, Any]:
        """Save `<run_dir>/model/`, then the quick GQA/POPE-format eval when files are set."""
        from rwkv_mm.vision.checkpoint import save_visual_rwkv

        cfg, report = self.cfg, self.report
        model = model.cpu().eval()
        model_dir = self.run_dir / "model"
        save_visual_rwkv(model, model_dir, cfg.vision, cfg.template, cfg.data.image_position)
        out: dict[str, Any] = {"stage": cfg.stage, "model_dir": str(model_dir), "skipped_samples": report.skipped,
                               "trainable_params": self.trainer.param_counts["trainable"],
                               **write_state_file(model.rwkv, model_dir / STATE_FILE)}  # state tuning
        if report.skipped:
            out["skipped_report"] = report.summary()
            print(f"bad samples: {report.summary()}")
        out.update(quick_eval(model, self.tokenizer, self.processor, cfg))
        return out


run = VisualStage.run  # the registered runner function: run(cfg, run_dir, resume=False) -> summary


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
