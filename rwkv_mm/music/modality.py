"""ABC music as an rwkv_mm modality: `rwkv-mm music ...` and the quickstart's first part."""

from rwkv_mm.modalities import Modality, QuickstartPart

MODALITY = Modality(
    name="music",
    summary="ABC music: generate tunes, loss vs position",
    cli="rwkv_mm.music.cli",
    quickstart=(QuickstartPart("music/abc_tiny", "ABC music (byte-level Eagle)",
                               keys=("train_loss", "val_loss", "parse_rate", "tunes_dir")),),
    order=10,
)
