"""Images in and out of the server: data URLs / base64 PNG or JPEG, with a pixel limit.

A non-image, a truncated file or an image above `max_pixels` (a decompression bomb) raises
`ImageError`, which the app turns into a 400 naming the problem.
"""

from __future__ import annotations

import base64
import binascii
import io

import numpy as np
from PIL import Image

DEFAULT_MAX_PIXELS = 4096 * 4096


class ImageError(ValueError):
    pass


def decode_image(url: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """A `data:image/...;base64,` URL (or bare base64) -> (H, W) grayscale float32 in [0, 1]."""
    if url.startswith("http://") or url.startswith("https://"):
        raise ImageError("image_url must be a data: URL with base64 content; remote URLs are not fetched")
    payload = url.split(",", 1)[1] if url.startswith("data:") else url
    try:
        raw = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ImageError("image_url is not valid base64") from None
    return open_image(raw, max_pixels)


def open_image(raw: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Image bytes -> (H, W) grayscale float32 in [0, 1], checking the size before decoding pixels."""
    return np.asarray(open_pil(raw, max_pixels).convert("L"), dtype=np.float32) / 255.0


def open_pil(raw: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Image bytes -> the decoded PIL image, checking the size before decoding pixels."""
    try:
        image = Image.open(io.BytesIO(raw))
        width, height = image.size
        if width * height > max_pixels:
            raise ImageError(f"image has {width}x{height} pixels, above the limit of {max_pixels}")
        image.load()
    except ImageError:
        raise
    except (OSError, Image.DecompressionBombError, SyntaxError) as error:
        raise ImageError(f"not a readable PNG/JPEG image ({error})") from None
    return image


def encode_png(image: np.ndarray) -> str:
    """(H, W) float in [0, 1] -> base64 PNG string."""
    pil = Image.fromarray(np.clip(image * 255.0, 0, 255).astype(np.uint8), mode="L")
    buffer = io.BytesIO()
    pil.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")
