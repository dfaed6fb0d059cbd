"""Goose (RWKV-7, x070; arXiv 2503.14456): the generalised delta rule with vector-valued decay,
an in-context learning rate and a value residual from layer 0. One family of the backbone,
beside the Eagle/Finch core (`backbone/model.py`), whose state type (`RWKVState`) and call
convention it shares:

    model.py        the language model `Goose`, its residual block and the v_first residual
    time_mix.py     the x070 time mix over the kernels' `wkv7` (and its bidirectional form)
    channel_mix.py  the x070 channel mix (ReLU² through 4·D, no receptance)
    init.py         RWKV-LM's x070 initialisation
    checkpoint.py   the official x070 file layout (detection, sizes from shapes, layer-0 v-LoRA)
    encoder.py      bidirectional blocks for encoders (`backbone/encoder.py`)
"""

from .model import Goose, GooseBlock

__all__ = ["Goose", "GooseBlock"]
