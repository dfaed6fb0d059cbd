"""GoldFinch (arXiv 2407.12077): Finch-C2 layers below, GOLD attention layers on top, one
compressed key cache between them. One family of the backbone, beside the Eagle/Finch core
(`backbone/model.py`), on which it builds:

    model.py       the language model `GoldFinch` and its residual block
    finch_c2.py    Finch-C2, the time mix of the lower layers (a parameterised Finch)
    gold.py        GOLD attention, the time mix of the upper layers
    key_cache.py   the compressed key cache the GOLD layers attend over
    state.py       `GoldFinchState`: shift/WKV states plus the growing cache
    init.py        the GoldFinch code's initialisation
    checkpoint.py  the GoldFinch code's file layout
    encoder.py     bidirectional blocks for encoders (`backbone/encoder.py`)
"""

from .model import GoldFinch, GoldFinchBlock
from .state import GoldFinchState

__all__ = ["GoldFinch", "GoldFinchBlock", "GoldFinchState"]
