"""AudioRWKV encoder parts: Q-Shift, patch embedding, bidirectional Eagle/Finch blocks."""

from .block import AudioBlock, DropPath
from .patch import PatchEmbed, grid_size
from .qshift import q_shift

__all__ = ["AudioBlock", "DropPath", "PatchEmbed", "grid_size", "q_shift"]
