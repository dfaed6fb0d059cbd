"""Opening images for the vision tower: every mode to 8-bit RGB as it is meant to look, and every
way a file can fail to decode as one error naming the file.

`convert("RGB")` alone clips 16-bit images to white (a 16-bit PNG opens as mode `I;16`/`I` and
values above 255 saturate), floors float images to black (mode `F` in [0, 1]) and drops alpha
(transparent pixels show whatever colour they happen to store, often black). `to_rgb` instead:

- 16-bit (`I;16*`, and `I` whose values fit in 0..65535): divided by 257, so 65535 -> 255 and an
  8-bit value widened to 16 bits (v * 257) comes back exactly. The encoders store full-range
  samples (PNG scales a 12-bit sensor up to 16 bits; `sBIT` only records the original depth), so a
  fixed scale keeps a dark photo dark; stretching by the image's own range would change each
  image's contrast by its content (and leave a uniform image undefined). Wider `I` images are
  scaled by their own range.
- float (`F`): values in [0, 1] are intensities (x 255). An image reaching outside [0, 1] is
  scaled linearly from min(0, lowest) to max(1, highest) (its actual range, never clipped);
  NaN counts as the low end, +-inf as the ends.
- transparency (`RGBA`, `LA`, `PA`, premultiplied `RGBa`/`La`, and `P`/`L`/`RGB`/`1` with a
  `tRNS` transparent colour): alpha-composited onto white, the page a viewer shows it on (logos
  and stickers in web-crawled caption data were described as seen there). The CLIP mean grey
  that pad-to-square uses would be neutral for the model but shows a black-on-transparent logo
  on grey, a picture nobody described.
- `CMYK`, `YCbCr`, `LAB`, `HSV`, `1`, `L`, `P`, `RGBX`: Pillow's own conversion (its LAB -> RGB
  goes through the L*a*b* -> sRGB transform).
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from rwkv_mm.errors import UserError

WHITE = (255, 255, 255)
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")

# What decoders raise on a bad file: PIL's UnidentifiedImageError and truncation are OSErrors,
# broken PNG chunks a SyntaxError, bad headers ValueError/struct.error/EOFError, a corrupt
# deflate stream zlib.error, and an image larger than 2 x Image.MAX_IMAGE_PIXELS a
# DecompressionBombError (a plain Exception, not an OSError).
DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error, zlib.error,
                 Image.DecompressionBombError)


class ImageReadError(UserError):
    """An image file that cannot be decoded (missing, corrupt, too large). `path` and `reason`
    are kept so callers can name the sample or question it belongs to."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path, self.reason = Path(path), reason
        super().__init__(f"cannot read image ({reason})", where=str(path))


def open_image(path: str | Path, background: tuple[int, int, int] = WHITE) -> Image.Image:
    """Decode `path` completely and return it as 8-bit RGB (see `to_rgb`).

    Raises ImageReadError (a UserError) naming the file for anything a decoder refuses,
    including PIL's DecompressionBombError."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            return to_rgb(img, background)
    except FileNotFoundError:
        raise ImageReadError(path, "file not found") from None
    except DECODE_ERRORS as err:
        raise ImageReadError(path, f"{type(err).__name__}: {err}") from None


def to_rgb(image: Image.Image, background: tuple[int, int, int] = WHITE) -> Image.Image:
    """Any PIL mode -> 8-bit RGB with its intended intensities (rules in the module notes)."""
    mode = image.mode
    if mode == "RGB" and "transparency" not in image.info:
        return image
    if mode in SIXTEEN_BIT_MODES or mode == "I":
        return _gray_to_rgb(_scale_int(np.asarray(image), mode))
    if mode == "F":
        return _gray_to_rgb(_scale_float(np.asarray(image, dtype=np.float64)))
    if mode in ALPHA_MODES or "transparency" in image.info:
        if mode == "La":
            image = image.convert("LA")  # Pillow converts premultiplied La only to LA
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*background, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return image.convert("RGB")


def _scale_int(values: np.ndarray, mode: str) -> np.ndarray:
    """16-bit (or wider int) gray [H, W] -> uint8: / 257 in 0..65535, else by the actual range."""
    values = values.astype(np.float64)
    if mode != "I" or values.size == 0 or (values.min() >= 0 and values.max() <= 65535):
        return np.rint(values / 257.0).clip(0, 255).astype(np.uint8)
    lo, hi = values.min(), values.max()
    return np.rint((values - lo) / max(hi - lo, 1.0) * 255.0).astype(np.uint8)


def _scale_float(values: np.ndarray) -> np.ndarray:
    """Float gray [H, W] -> uint8: [0, 1] x 255; otherwise [min(0, lo), max(1, hi)] -> [0, 255]."""
    finite = np.isfinite(values)
    lo = min(0.0, float(values[finite].min())) if finite.any() else 0.0
    hi = max(1.0, float(values[finite].max())) if finite.any() else 1.0
    values = np.nan_to_num(values, nan=lo, posinf=hi, neginf=lo)
    return np.rint((values - lo) / (hi - lo) * 255.0).clip(0, 255).astype(np.uint8)


def _gray_to_rgb(gray: np.ndarray) -> Image.Image:
    return Image.fromarray(gray, mode="L").convert("RGB")
