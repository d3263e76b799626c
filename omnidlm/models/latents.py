"""Image latents for the generation expert (LLaDA-o, docs/published/lladao.md): the VAE, latent patches and
the small modules that carry latents into and out of the backbone.

- `build_vae(cfg)`: a `diffusers.AutoencoderKL` built from a config dict, never downloaded.
  `FLUX_VAE` is the 16-channel, downsample-8 config of published checkpoints; `TINY_VAE` a
  4-channel, downsample-2 one for tests and the shipped digits model.
- `encode_latents` / `decode_latents`: images in [-1, 1] <-> normalised latents
  z = (mean - shift) * scale (FLUX: scale 0.3611, shift 0.1159).
- `patchify` / `unpatchify`: (B, C, H, W) latents <-> (B, h * w, p * p * C) tokens, patch p = 2,
  channels last inside a patch (the published layout).
- `TimestepEmbedder` (sinusoidal, 256 frequencies -> MLP), `PositionEmbedding` (frozen 2D sin-cos
  table indexed by row * max_side + col), `flat_position_ids`.

    vae = build_vae(TINY_VAE)
    z = encode_latents(vae, images)           # (B, 4, H/2, W/2)
    tokens = patchify(z, 2)                   # (B, H/4 * W/4, 16)
"""

from __future__ import annotations

import math

import torch
from torch import nn

FLUX_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=16,
    down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
    block_out_channels=[128, 256, 512, 512], layers_per_block=2, norm_num_groups=32, act_fn="silu",
    sample_size=1024, scaling_factor=0.3611, shift_factor=0.1159,
    use_quant_conv=False, use_post_quant_conv=False, mid_block_add_attention=True,
)

TINY_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4,
    down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
    block_out_channels=[8, 16], layers_per_block=1, norm_num_groups=4, act_fn="silu",
    sample_size=16, scaling_factor=1.0, shift_factor=0.0,
    use_quant_conv=False, use_post_quant_conv=False, mid_block_add_attention=True,
)


def build_vae(cfg: dict):
    """A randomly initialised `AutoencoderKL` from a config dict (weights are loaded separately)."""
    from diffusers import AutoencoderKL  # imported here: diffusers is slow to import

    return AutoencoderKL(**cfg)


def vae_downsample(cfg: dict) -> int:
    """Pixels per latent cell along a side: 2 ** (number of down blocks - 1)."""
    return 2 ** (len(cfg["block_out_channels"]) - 1)


def _scale_shift(vae) -> tuple[float, float]:
    cfg = vae.config
    return float(cfg.scaling_factor), float(cfg.shift_factor if cfg.shift_factor is not None else 0.0)


def encode_latents(vae, images: torch.Tensor, sample: bool = False, generator=None) -> torch.Tensor:
    """Images (B, 3, H, W) in [-1, 1] -> normalised latents (B, C, H/f, W/f); the mean unless `sample`."""
    f = vae_downsample(vae.config)
    if images.dim() != 4 or images.shape[-1] % f or images.shape[-2] % f:
        raise ValueError(f"images must be (B, 3, H, W) with H and W multiples of {f}, got {tuple(images.shape)}")
    dist = vae.encode(images.to(vae.dtype)).latent_dist
    z = dist.sample(generator) if sample else dist.mean
    scale, shift = _scale_shift(vae)
    return (z - shift) * scale


def decode_latents(vae, z: torch.Tensor) -> torch.Tensor:
    """Normalised latents (B, C, h, w) -> images (B, 3, h f, w f), roughly in [-1, 1]."""
    scale, shift = _scale_shift(vae)
    return vae.decode(z.to(vae.dtype) / scale + shift).sample


def patchify(z: torch.Tensor, p: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, (H/p) (W/p), p p C): row-major patches, channels last inside a patch."""
    B, C, H, W = z.shape
    if H % p or W % p:
        raise ValueError(f"latent size {H}x{W} is not a multiple of the latent patch size {p}")
    x = z.reshape(B, C, H // p, p, W // p, p)
    return torch.einsum("bchpwq->bhwpqc", x).reshape(B, (H // p) * (W // p), p * p * C)


def unpatchify(tokens: torch.Tensor, h: int, w: int, p: int) -> torch.Tensor:
    """(B, h w, p p C) -> (B, C, h p, w p): the inverse of `patchify`."""
    B, N, D = tokens.shape
    if N != h * w or D % (p * p):
        raise ValueError(f"cannot unpatchify {tuple(tokens.shape)} into a {h}x{w} grid of {p}x{p} patches")
    C = D // (p * p)
    x = tokens.reshape(B, h, w, p, p, C)
    return torch.einsum("bhwpqc->bchpwq", x).reshape(B, C, h * p, w * p)


def flat_position_ids(h: int, w: int, max_side: int, device=None) -> torch.Tensor:
    """Row-major ids into a (max_side x max_side) table for an h x w grid: row * max_side + col. (h w,)."""
    if h > max_side or w > max_side:
        raise ValueError(f"a {h}x{w} grid of patches exceeds the position table ({max_side} per side)")
    rows = torch.arange(h, device=device)[:, None] * max_side
    return (rows + torch.arange(w, device=device)[None, :]).reshape(-1)


def sincos_2d(dim: int, side: int) -> torch.Tensor:
    """(side * side, dim) 2D sin-cos table, row-major; first half encodes the column, second the row
    (the published table's order; each half is [sin | cos])."""
    if dim % 4:
        raise ValueError(f"a 2D sin-cos embedding needs a dim divisible by 4, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))  # (D/4,)
    grid = torch.arange(side, dtype=torch.float64)

    def one_axis(pos):  # (side * side,) -> (side * side, D/2)
        out = pos[:, None] * omega[None]
        return torch.cat([out.sin(), out.cos()], dim=1)

    rows = grid[:, None].expand(side, side).reshape(-1)
    cols = grid[None, :].expand(side, side).reshape(-1)
    return torch.cat([one_axis(cols), one_axis(rows)], dim=1).float()


class PositionEmbedding(nn.Module):
    """A frozen 2D sin-cos table (max_side^2, D) indexed by flat position ids."""

    def __init__(self, max_side: int, hidden: int):
        super().__init__()
        self.max_side = max_side
        self.register_buffer("pos_embed", sincos_2d(hidden, max_side))

    def forward(self, position_ids: torch.Tensor) -> torch.Tensor:
        return self.pos_embed[position_ids]  # (*, D)


class TimestepEmbedder(nn.Module):
    """t in [0, 1] -> sinusoidal features (cos | sin, 256) -> Linear, SiLU, Linear -> (N, D)."""

    def __init__(self, hidden: int, frequencies: int = 256, max_period: float = 10000.0):
        super().__init__()
        self.frequencies, self.max_period = frequencies, max_period
        self.mlp = nn.Sequential(nn.Linear(frequencies, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def features(self, t: torch.Tensor) -> torch.Tensor:
        half = self.frequencies // 2
        freqs = torch.exp(-math.log(self.max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
        args = t.float()[:, None] * freqs[None]  # (N, half)
        return torch.cat([args.cos(), args.sin()], dim=-1)  # (N, 2 half)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        feats = self.features(t).to(self.mlp[0].weight.dtype)
        return self.mlp(feats)  # (N, D)
