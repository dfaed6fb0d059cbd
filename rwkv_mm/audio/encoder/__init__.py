"""AudioRWKV encoder parts: Q-Shift, patch embedding, bidirectional Eagle/Finch/GoldFinch blocks."""

from .block import AudioBlock, AudioGoldBlock, DropPath
from .patch import PatchEmbed, grid_size
from .qshift import q_shift

__all__ = ["AudioBlock", "AudioGoldBlock", "DropPath", "PatchEmbed", "grid_size", "q_shift"]
