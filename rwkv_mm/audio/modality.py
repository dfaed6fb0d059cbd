"""AudioRWKV as an rwkv_mm modality: `rwkv-mm audio ...` and the quickstart's audio part."""

from rwkv_mm.modalities import Modality, QuickstartPart

MODALITY = Modality(
    name="audio",
    summary="audio tagging (AudioRWKV): stats, average, tag, synth",
    cli="rwkv_mm.audio.cli",
    quickstart=(QuickstartPart("audio/synth_tiny",
                               "AudioRWKV (Q-Shift bidirectional Finch) sound-event tagging",
                               keys=("train_loss", "mAP", "AUC")),),
    order=30,
)
