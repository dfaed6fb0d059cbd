"""VisualRWKV as an rwkv_mm modality: `rwkv-mm vision chat|eval` (also `rwkv-mm chat|eval`) and
the quickstart's two vision stages."""

from rwkv_mm.modalities import Modality, QuickstartPart

MODALITY = Modality(
    name="vision",
    summary="VisualRWKV: chat about an image, GQA/POPE evaluation",
    cli="rwkv_mm.vision.cli",
    aliases=("chat", "eval"),
    quickstart=(
        QuickstartPart("visual/stage1_tiny", "VisualRWKV stage 1 (projector)",
                       keys=("train_loss", "model_dir")),
        QuickstartPart("visual/stage2_tiny", "VisualRWKV stage 2 (projector + LM) + GQA/POPE-format eval",
                       keys=("train_loss", "gqa_accuracy", "pope_accuracy", "pope_f1", "pope_yes_ratio",
                             "model_dir"),
                       overrides=("init_from={out}/stage1_tiny/model",)),
    ),
    order=20,
)
