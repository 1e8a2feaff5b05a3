"""Uploaded bytes to the model's input tensor, rejecting what is not a usable image."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

__all__ = ["MAX_PIXELS", "InvalidImage", "decode_image"]

MAX_PIXELS = 4096 * 4096  # larger images are refused before decoding (decompression bombs)

_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)  # ImageNet statistics, as torchvision's ViTs expect
_STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


class InvalidImage(ValueError):
    """The upload cannot be decoded as an image, or is too large to decode safely."""


def decode_image(data: bytes, size: int, max_pixels: int = MAX_PIXELS) -> torch.Tensor:
    """Decode ``data`` (PNG, JPEG, ...) into a normalised ``(3, size, size)`` float tensor.

    The pixel count is checked from the header, before any pixel is decoded.
    """
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise InvalidImage("the uploaded file is not an image Pillow can read") from None
    except Image.DecompressionBombError as exc:  # Pillow's own, far higher, limit
        raise InvalidImage(str(exc)) from None
    width, height = image.size
    if width * height > max_pixels:
        raise InvalidImage(f"the image is {width}x{height} pixels; the limit is {max_pixels} pixels")
    try:
        rgb = image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
    except (OSError, SyntaxError, ValueError) as exc:  # truncated or corrupt image data
        raise InvalidImage(f"the image could not be decoded: {exc}") from None
    pixels = torch.from_numpy(np.asarray(rgb, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return (pixels - _MEAN) / _STD
