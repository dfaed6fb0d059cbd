"""ABC music: byte tokenizer, tune corpora (IrishMAN JSON, .abc files), generation, scoring."""

from .tokenizer import ByteTokenizer

__all__ = ["ByteTokenizer"]
