"""Image augmentation for the digits models: random rotation, zoom and shift, batched.

Images are (B, C, H, W) in [-1, 1] with a black (-1) background; warped pixels that come from
outside the image are black.

    x = random_affine(pixels, generator, degrees=11, zoom=0.1, translate=0.15)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def affine_warp(pixels: torch.Tensor, angle: torch.Tensor, scale: torch.Tensor, tx: torch.Tensor,
                ty: torch.Tensor) -> torch.Tensor:
    """Rotate by `angle` (radians), sample at `scale` times the distance from the centre (> 1 zooms
    out) and shift by (tx, ty) in units of the half-width; all (B,)."""
    cos, sin = scale * torch.cos(angle), scale * torch.sin(angle)
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)  # (B, 2, 3)
    grid = F.affine_grid(theta.to(pixels.dtype), list(pixels.shape), align_corners=False)
    return F.grid_sample(pixels + 1, grid, mode="bilinear", padding_mode="zeros", align_corners=False) - 1


def random_affine(pixels: torch.Tensor, g: torch.Generator, degrees: float, zoom: float,
                  translate: float) -> torch.Tensor:
    """A random rotation (+- degrees), zoom (1 +- zoom) and shift (+- translate half-widths) per image."""
    B = pixels.shape[0]

    def uniform(span: float) -> torch.Tensor:
        return (torch.rand(B, generator=g) * 2 - 1) * span

    return affine_warp(pixels, uniform(math.radians(degrees)), 1 + uniform(zoom), uniform(translate), uniform(translate))
