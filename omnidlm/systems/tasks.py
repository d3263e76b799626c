"""What a command hands a system's answerer or drawing sampler, and what comes back.

`omnidlm ask` builds a `Question` and calls `loaded.system.answer(loaded, question)`; `omnidlm
draw` / `edit` build a `Drawing` and call `loaded.system.draw(loaded, drawing)` -> `Drawn`. The
fields are named as the commands' flags' dests, so a command fills them from its parsed flags and
the system never sees argparse (docs/architecture.md, "Systems").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

import numpy as np


@dataclass(frozen=True)
class Question:
    """A question (or its prompt ids) about an image; None knobs mean the system's defaults."""

    text: str | None
    image: object = None  # the PIL image as opened (any mode): the system converts it (`image_as`)
    prompt_ids: list[int] | None = None
    gen_length: int | None = None
    block_length: int | None = None
    steps: int | None = None  # over the whole answer (steps per block = steps x block_length / gen_length)
    policy: str | None = None
    threshold: float | None = None
    cache: str | None = None
    temperature: float = 0.0


@dataclass(frozen=True)
class Drawing:
    """A text prompt to draw `n` images from (an edit when `image` is given). `options` holds the
    drawing flags given (dest -> value, None left out): only those the system's `draw_options` names."""

    prompt: str | None
    image: object = None  # the source image to edit, the PIL image as opened
    n: int = 1
    seed: int = 0
    options: Mapping = field(default_factory=lambda: MappingProxyType({}))
    progress: bool = True  # a progress bar on stderr (the command); the server draws without one


@dataclass(frozen=True)
class Drawn:
    images: object  # (n, H, W) grayscale in [0, 1] or (n, H, W, 3) uint8
    latents: object = None  # the final latents when the sampler has them (LLaDA-o's --save-latent)


def image_as(image, mode: str | None):
    """A PIL image -> (H, W) grayscale float32 in [0, 1] (mode "L"), the PIL image converted to
    another `mode` ("RGB"), or unchanged (None). An array is taken as already read in the mode
    asked (the server reads uploads before they reach a system)."""
    if image is None or mode is None or isinstance(image, np.ndarray):
        return image
    if mode == "L":
        return np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    return image.convert(mode)
