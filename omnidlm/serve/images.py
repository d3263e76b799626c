"""Images in and out of the server: data URLs / base64 of the formats the API documents (PNG, JPEG,
WebP, GIF), with a pixel limit.

The format is read from the file's first bytes before any decoder runs, and only that format's
decoder may open it (so a BMP, TIFF or ICO never reaches Pillow's parsers for those). A non-image,
a truncated or corrupt file, a PNG whose text chunks decompress to too much (a zTXt bomb), or an
image above `max_pixels` (a decompression bomb) raises `ImageError` with a message that names the
problem (never a Python repr); the app turns it into a 400.
"""

from __future__ import annotations

import base64
import binascii
import io
import re

import numpy as np
from PIL import Image

DEFAULT_MAX_PIXELS = 4096 * 4096
FORMATS = "PNG, JPEG, WebP or GIF"


class ImageError(ValueError):
    pass


def sniff(raw: bytes) -> str | None:
    """The Pillow format name of `raw` from its signature, or None if not an accepted format."""
    if raw.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if raw.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if raw[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if raw[:4] == b"RIFF" and raw[8:12] == b"WEBP":
        return "WEBP"
    return None


def decode_image(url: str, max_pixels: int = DEFAULT_MAX_PIXELS, mode: str = "L"):
    """A `data:image/...;base64,` URL (or bare base64) -> (H, W) grayscale float32 in [0, 1]; with
    another PIL `mode` (LLaDA-V: "RGB"), the PIL image in that mode."""
    if url.startswith("http://") or url.startswith("https://"):
        raise ImageError("image_url must be a data: URL with base64 content; remote URLs are not fetched")
    if url.startswith("data:"):
        header, comma, payload = url.partition(",")
        if not comma:
            raise ImageError("the data: URL has no comma: expected data:image/png;base64,<base64>")
        if not header.endswith(";base64"):
            raise ImageError("the data: URL is not base64: expected data:image/png;base64,<base64>")
    else:
        payload = url
    try:
        raw = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ImageError("image_url is not valid base64") from None
    return open_image(raw, max_pixels) if mode == "L" else open_pil(raw, max_pixels).convert(mode)


def open_image(raw: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Image bytes -> (H, W) grayscale float32 in [0, 1], checking the format and the size before
    decoding pixels."""
    return np.asarray(open_pil(raw, max_pixels).convert("L"), dtype=np.float32) / 255.0


def open_pil(raw: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Image bytes -> the decoded PIL image (its first frame), checking the format and the size
    before decoding pixels."""
    kind = sniff(raw)
    if kind is None:
        raise ImageError(f"not a {FORMATS} image")
    try:
        image = Image.open(io.BytesIO(raw), formats=[kind])
        width, height = image.size
        if width * height > max_pixels:
            raise ImageError(f"image has {width}x{height} pixels, above the limit of {max_pixels}")
        image.load()
        return image
    except ImageError:
        raise
    except Exception as error:  # Pillow raises many kinds (OSError, ValueError, SyntaxError, struct.error, ...)
        raise ImageError(f"not a readable {kind} image ({plain(error)})") from None


def plain(error: BaseException) -> str:
    """An error's message without object reprs such as <_io.BytesIO object at 0x...>."""
    text = re.sub(r"\s*<[^<>]* at 0x[0-9a-fA-F]+>", "", str(error)).strip()
    return (text.splitlines()[0][:200] if text else type(error).__name__)


def encode_png(image: np.ndarray) -> str:
    """(H, W) float in [0, 1] -> base64 PNG string."""
    pil = Image.fromarray(np.clip(image * 255.0, 0, 255).astype(np.uint8), mode="L")
    buffer = io.BytesIO()
    pil.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")
