"""CLIP image preprocessing (resize the short side, centre crop, normalise), with LLaVA's
pad-to-square option (expand to a square filled with the mean colour before resizing).

Files are decoded by `image_io.open_image` (mode-aware RGB; a bad file is an ImageReadError
naming it), PIL images converted by `image_io.to_rgb`."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from .image_io import open_image, to_rgb
from .tower import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD


class ImageProcessor:
    """PIL image or path -> normalised tensor [3, S, S] (float32); an unreadable file raises
    ImageReadError."""

    def __init__(self, image_size: int, pad_to_square: bool = False,
                 mean: tuple[float, ...] = OPENAI_CLIP_MEAN, std: tuple[float, ...] = OPENAI_CLIP_STD) -> None:
        from torchvision.transforms import InterpolationMode, v2

        self.image_size, self.pad_to_square = image_size, pad_to_square
        self.mean, self.std = mean, std
        self.transform = v2.Compose([
            v2.PILToTensor(),
            v2.Resize(image_size, interpolation=InterpolationMode.BICUBIC, antialias=True),
            v2.CenterCrop(image_size),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean, std),
        ])

    def _square(self, image: Image.Image) -> Image.Image:
        w, h = image.size
        if w == h:
            return image
        side = max(w, h)
        fill = tuple(int(255 * m) for m in self.mean)
        canvas = Image.new("RGB", (side, side), fill)
        canvas.paste(image, ((side - w) // 2, (side - h) // 2))
        return canvas

    def __call__(self, image: Image.Image | str | Path) -> torch.Tensor:
        image = to_rgb(image) if isinstance(image, Image.Image) else open_image(image)
        if self.pad_to_square:
            image = self._square(image)
        return self.transform(image)  # [3, S, S]
