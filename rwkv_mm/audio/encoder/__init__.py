"""AudioRWKV's front-end parts: Q-Shift and the patch embedding (the blocks are the backbone's,
see `RWKVEncoder`)."""

from .patch import PatchEmbed, grid_size
from .qshift import q_shift

__all__ = ["PatchEmbed", "grid_size", "q_shift"]
