"""LLaDA-V's image inputs (LLaVA-OneVision "anyres"): an image becomes tiles, the tiles become
features, and the features are merged into the prompt where its -200 placeholder stands.

Pixels (`image_tiles`), for `image_aspect_ratio` anyres / anyres_max_N:
    1. the best canvas among `image_grid_pinpoints` ([w, h] pairs): the most of the image's own
       pixels kept after fitting it in, then the least canvas wasted;
    2. the image resized to fit the canvas keeping its aspect (the filled side exact, the other
       min(ceil(side * scale), canvas)), pasted centred on black;
    3. the canvas cut row-major into tile x tile crops, after tile 0: the whole image resized to
       tile x tile (not padded);
    4. each tile scaled to [-1, 1] ((x / 255 - 0.5) / 0.5, SigLIP's processor), channels first.

Features (`merge_features`, `mm_patch_merge_type` spatial_unpad): tile 0's s x s features are the
base; tiles 1.. are laid out as one (D, s rows, s cols) map per the grid, the padding rows or
columns are cropped (`unpad`), with anyres_max_N a map larger than N tiles (times = sqrt(h w /
(N s^2)) > 1.1) is downscaled bilinearly to (h // times, w // times), one `image_newline` closes
every row, and the tokens are base first, then the rows.

    tiles = image_tiles(pil_image, spec)                      # (1 + n, 3, tile, tile)
    x, spans = embed_prompt(model, ids_with_minus_200, [pil_image])   # (L, D) inputs embeddings
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

IMAGE_TOKEN_INDEX = -200  # the published placeholder in input_ids
ASPECT = re.compile(r"^anyres(?:_max_(\d+))?$")


@dataclass(frozen=True)
class AnyRes:
    """The image settings of a LLaDA-V config.json (`config.extra` of the loaded model)."""

    pinpoints: tuple[tuple[int, int], ...]  # candidate canvases, (w, h)
    tile: int = 384  # the processor's crop size = the tower's image size
    max_tiles: int | None = None  # anyres_max_N: downscale feature maps larger than N tiles
    merge: str = "spatial_unpad"

    @classmethod
    def from_config(cls, extra: dict, tile: int) -> "AnyRes":
        aspect = str(extra.get("image_aspect_ratio", "anyres_max_4"))
        match = ASPECT.match(aspect)
        if not match:
            raise ValueError(f"unsupported LLaDA-V config: field 'image_aspect_ratio' = {aspect!r} "
                             "(anyres or anyres_max_N are supported)")
        merge = str(extra.get("mm_patch_merge_type", "spatial_unpad"))
        if merge != "spatial_unpad":
            raise ValueError(f"unsupported LLaDA-V config: field 'mm_patch_merge_type' = {merge!r} "
                             "(only spatial_unpad is supported)")
        pins = expand_pinpoints(extra.get("image_grid_pinpoints", "(1x1),...,(6x6)"), tile)
        return cls(pins, tile, int(match.group(1)) if match.group(1) else None, merge)


def expand_pinpoints(pinpoints, tile: int) -> tuple[tuple[int, int], ...]:
    """[[w, h], ...] as given, or the scripts' "(1x1),...,(6x6)" range in tiles -> pixel (w, h) pairs."""
    if isinstance(pinpoints, str):
        found = re.findall(r"\((\d+)x(\d+)\)", pinpoints)
        if not found:
            raise ValueError(f"unreadable config field 'image_grid_pinpoints' {pinpoints!r}")
        (w0, h0), (w1, h1) = map(int, found[0]), map(int, found[-1])
        return tuple((i * tile, j * tile) for i in range(w0, w1 + 1) for j in range(h0, h1 + 1))
    return tuple((int(w), int(h)) for w, h in pinpoints)


# --- pixels -------------------------------------------------------------------------------------------


def best_resolution(size_wh: tuple[int, int], pinpoints) -> tuple[int, int]:
    """The canvas keeping the most of the image's pixels, ties broken by the least waste."""
    W, H = size_wh
    best, kept_best, waste_best = None, 0, math.inf
    for w, h in pinpoints:
        scale = min(w / W, h / H)
        kept = min(int(W * scale) * int(H * scale), W * H)
        waste = w * h - kept
        if kept > kept_best or (kept == kept_best and waste < waste_best):
            best, kept_best, waste_best = (w, h), kept, waste
    return best


def resize_and_pad(image, canvas_wh: tuple[int, int]):
    """Fit the image in the canvas keeping its aspect, centred on black (PIL, bicubic)."""
    from PIL import Image

    (W, H), (w, h) = image.size, canvas_wh
    if w / W < h / H:
        new_w, new_h = w, min(math.ceil(H * (w / W)), h)
    else:
        new_w, new_h = min(math.ceil(W * (h / H)), w), h
    canvas = Image.new("RGB", (w, h), (0, 0, 0))
    canvas.paste(image.resize((new_w, new_h), Image.BICUBIC), ((w - new_w) // 2, (h - new_h) // 2))
    return canvas


def to_pixels(tile) -> torch.Tensor:
    """A tile x tile RGB image -> (3, tile, tile) float32 in [-1, 1] (SigLIP's rescale and normalise)."""
    x = (np.asarray(tile, dtype=np.uint8).astype(np.float64) * (1 / 255)).astype(np.float32)
    return torch.from_numpy((x - np.float32(0.5)) / np.float32(0.5)).permute(2, 0, 1).contiguous()


def image_tiles(image, spec: AnyRes) -> torch.Tensor:
    """A PIL image -> (1 + rows cols, 3, tile, tile): the whole image, then the canvas row-major."""
    from PIL import Image

    image, t = image.convert("RGB"), spec.tile
    canvas = resize_and_pad(image, best_resolution(image.size, spec.pinpoints))
    crops = [canvas.crop((x, y, x + t, y + t)) for y in range(0, canvas.size[1], t) for x in range(0, canvas.size[0], t)]
    tiles = [image.resize((t, t), Image.BICUBIC)] + crops
    return torch.stack([to_pixels(tile) for tile in tiles])


# --- features -----------------------------------------------------------------------------------------


def unpad(features: torch.Tensor, size_wh: tuple[int, int]) -> torch.Tensor:
    """(D, h, w) features of the padded canvas -> the rows / columns that hold the image."""
    W, H = size_wh
    h, w = features.shape[1:]
    if W / H > w / h:  # padded above and below
        pad = (h - int(H * (w / W))) // 2
        return features[:, pad : h - pad, :]
    pad = (w - int(W * (h / H))) // 2
    return features[:, :, pad : w - pad]


def merge_features(feats: torch.Tensor, size_wh: tuple[int, int], spec: AnyRes, newline: torch.Tensor) -> torch.Tensor:
    """(1 + n, s s, D) projected tile features -> (tokens, D): base, then the rows + newlines."""
    n, T, D = feats.shape
    s = math.isqrt(T)
    cols, rows = (side // spec.tile for side in best_resolution(size_wh, spec.pinpoints))
    if n - 1 != rows * cols or s * s != T:
        raise ValueError(f"{n} tiles of {T} features do not make a {rows} x {cols} grid of square tiles")
    grid = feats[1:].view(rows, cols, s, s, D).permute(4, 0, 2, 1, 3).reshape(D, rows * s, cols * s)
    grid = unpad(grid, size_wh)  # (D, h, w)
    h, w = grid.shape[1:]
    times = math.sqrt(h * w / (spec.max_tiles * s * s)) if spec.max_tiles else 0.0
    if times > 1.1:
        grid = F.interpolate(grid[None], size=[int(h // times), int(w // times)], mode="bilinear")[0]
    grid = torch.cat([grid, newline.to(grid.dtype)[:, None, None].expand(D, grid.shape[1], 1)], dim=2)
    return torch.cat([feats[0], grid.flatten(1).T])  # (s s + h' (w' + 1), D)


@torch.no_grad()
def image_features(model, image) -> torch.Tensor:
    """One PIL image -> its (tokens, D) features in the language model's embedding space."""
    spec = AnyRes.from_config(model.config.extra, model.vit.image_size)
    tiles = image_tiles(image, spec).to(model.language_model.device)
    feats = model.mm_projector(model.vit(tiles))  # (1 + n, s s, D)
    return merge_features(feats, image.size, spec, model.image_newline)


@torch.no_grad()
def embed_prompt(model, ids: list[int], images: list) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """Ids holding one -200 per image -> (L, D) inputs embeddings and each image's [start, end)."""
    where = [i for i, t in enumerate(ids) if t == IMAGE_TOKEN_INDEX]
    if len(where) != len(images):
        raise ValueError(f"the prompt holds {len(where)} image placeholder(s) ({IMAGE_TOKEN_INDEX}) "
                         f"but {len(images)} image(s) were given")
    embed, parts, spans, start = model.language_model.embed, [], [], 0
    dev = model.language_model.device
    for pos, image in zip(where + [len(ids)], images + [None]):
        if pos > start:
            parts.append(embed(torch.tensor(ids[start:pos], device=dev)))
        if image is not None:
            at = sum(p.shape[0] for p in parts)
            parts.append(image_features(model, image).to(embed.weight.dtype))
            spans.append((at, at + parts[-1].shape[0]))
        start = pos + 1
    return torch.cat(parts), spans
