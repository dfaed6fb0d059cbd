"""Constants shared by several parts of rwkv_mm (front ends, datasets, training), defined once.

A constant lives here when modules of more than one package need it; this module imports
nothing, so a front end can use it without pulling in training or recipe code. A constant of one
package stays in that package (`rwkv_mm.vision.conversation.IMAGE_TOKEN_ID`,
`rwkv_mm.music.tokenizer.BEGIN_ID`).
"""

__all__ = ["IGNORE_INDEX"]

#: Target id of a position without loss (padding, prompt and image tokens): `targets` [B, T]
#: hold it where no next token is predicted. torch's cross_entropy default, as LLaVA and
#: RWKV-LM use it.
IGNORE_INDEX = -100
