"""ABC music: byte tokenizer, tune corpora (IrishMAN JSON, .abc files), generation, scoring.

Importing this package registers the byte tokenizer as ``"abc-bytes"`` with
``rwkv_mm.backbone.load_tokenizer``. The corpus (torch) and scoring (music21) modules are
imported only when used. `cli` holds `rwkv-mm music ...`; `modality` declares the modality
(CLI group, quickstart part; see `rwkv_mm.modalities`).
"""

from .tokenizer import BEGIN_ID, END_ID, PAD_ID, VOCAB_SIZE, ByteStats, ByteTokenizer, register

register()

__all__ = ["BEGIN_ID", "END_ID", "PAD_ID", "VOCAB_SIZE", "ByteStats", "ByteTokenizer", "register"]
