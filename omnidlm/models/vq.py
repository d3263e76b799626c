"""The SigLIP-VQ image tokenizer of LLaDA2.0-Uni (docs/published/uni.md): images -> discrete image tokens.

SigLIP features on the (h, w) patch grid -> a 1x1 convolution to `code_dim` -> L2 normalisation ->
the nearest code by cosine in a codebook (16,384 entries published; 64-256 for the digits model).
The codes, offset by the text vocabulary, are what the Uni backbone reads and generates; a separate
diffusion decoder turns them back into pixels, so the tokenizer is trained for understanding (see
`train/vq.py`), never for pixel reconstruction.

The codebook is learned by gradient (no EMA): `quantize` returns the VQ-VAE losses
commit = beta * |z - sg(z_q)|^2 and codebook = |sg(z) - z_q|^2 (means), and passes gradients to the
encoder with the straight-through estimator z + sg(z_q - z).

    vq = SiglipVQ(DIGITS_VQ)
    codes = vq.encode(pixels)                  # (B, h, w) long, pixels (B, 3, H, W) in [-1, 1]
    z_q, codes, losses = vq(pixels)            # training: (B, h w, code_dim), (B, h w), dict
    vecs = vq.embed(codes)                     # (B, h w, code_dim) unit code vectors
    vq.usage(codes)                            # {"used": ..., "fraction": ..., "perplexity": ...}
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from .vision import TINY_VIT, VisionEncoder

# The shipped digits model: 16x16 digits, patch 8 -> a 2x2 grid of 4 image tokens per digit.
DIGITS_VIT = dict(
    hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=2,
    num_channels=3, image_size=16, patch_size=8, hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6,
)
# With `train/vq.py`'s defaults (5000 steps of 64, ~60-90 s on one thread) it names 97.6-98.0% of the
# held-out digits from quantized features (3 seeds), uses ~105 of the 128 codes (perplexity ~55);
# every code belongs to one digit and each digit gets 40-120 distinct 4-code tuples (its styles).
DIGITS_VQ = dict(vit=DIGITS_VIT, codebook_size=128, code_dim=16, beta=1.0)
TINY_VQ = dict(vit=TINY_VIT, codebook_size=16, code_dim=8, beta=0.25)  # for tests


class SiglipVQ(nn.Module):
    """ViT -> 1x1 conv -> L2-normalised nearest code; built from one config dict (`self.config`)."""

    def __init__(self, cfg: dict):
        super().__init__()
        missing = [k for k in ("vit", "codebook_size", "code_dim") if k not in cfg]
        if missing:
            raise ValueError(f"VQ config lacks field(s) {missing}")
        self.config = copy.deepcopy(dict(cfg))  # saved as image_tokenizer/config.json
        self.beta = float(cfg.get("beta", 0.25))
        self.vit = VisionEncoder(cfg["vit"])
        self.proj = nn.Conv2d(self.vit.hidden_size, cfg["code_dim"], kernel_size=1)
        self.codebook = nn.Embedding(cfg["codebook_size"], cfg["code_dim"])
        self.codebook_size, self.code_dim = cfg["codebook_size"], cfg["code_dim"]

    @classmethod
    def from_config(cls, cfg: dict) -> "SiglipVQ":
        return cls(cfg)

    def grid(self, height: int, width: int) -> tuple[int, int]:
        """Tokens per side (h, w) for an image, or a ValueError naming the size that does not fit."""
        return self.vit.grid(height, width)

    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, h w, code_dim) unit vectors, before quantization."""
        if pixels.dim() != 4 or pixels.shape[1] != 3:
            raise ValueError(f"pixels must be (B, 3, H, W), got {tuple(pixels.shape)}")
        B = pixels.shape[0]
        h, w = self.grid(pixels.shape[2], pixels.shape[3])
        x = self.vit(pixels)  # (B, h w, vit_hidden)
        x = x.transpose(1, 2).reshape(B, -1, h, w)  # (B, vit_hidden, h, w)
        z = self.proj(x).flatten(2).transpose(1, 2)  # (B, h w, code_dim)
        return F.normalize(z, dim=-1)

    def codes_of(self, z: torch.Tensor) -> torch.Tensor:
        """(..., code_dim) unit vectors -> (...) index of the nearest code by cosine."""
        e = F.normalize(self.codebook.weight, dim=-1)  # (K, code_dim)
        return (z @ e.t()).argmax(-1)

    def quantize(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """(B, N, code_dim) unit vectors -> z_q (straight-through), codes (B, N), VQ losses."""
        if z.shape[-1] != self.code_dim:
            raise ValueError(f"features must end in code_dim {self.code_dim}, got {tuple(z.shape)}")
        codes = self.codes_of(z)  # (B, N)
        zq = self.embed(codes)  # (B, N, code_dim), differentiable w.r.t. the codebook
        losses = {"commit": self.beta * F.mse_loss(z, zq.detach()), "codebook": F.mse_loss(z.detach(), zq)}
        return z + (zq - z).detach(), codes, losses

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        return self.quantize(self.features(pixels))

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, h, w) long image token ids (in eval mode, no grad)."""
        was_training = self.training
        self.eval()
        try:
            codes = self.codes_of(self.features(pixels))  # (B, h w)
        finally:
            self.train(was_training)
        return codes.view(pixels.shape[0], *self.grid(pixels.shape[2], pixels.shape[3]))

    def embed(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, h, w) or (B, h w) codes -> (B, h w, code_dim) unit code vectors."""
        if codes.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"codes must be integer, got {codes.dtype}")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.codebook_size):
            raise ValueError(f"codes must lie in [0, {self.codebook_size}), got "
                             f"[{int(codes.min())}, {int(codes.max())}]")
        return F.normalize(self.codebook(codes.flatten(1)), dim=-1)

    def usage(self, codes: torch.Tensor) -> dict:
        """Codebook usage of any tensor of codes: distinct codes, their fraction, and perplexity
        exp(entropy of the code histogram) (= the number of equally used codes it is worth)."""
        counts = torch.bincount(codes.flatten().long(), minlength=self.codebook_size).double()
        p = counts[counts > 0] / counts.sum()
        used = int((counts > 0).sum())
        return {"used": used, "fraction": used / self.codebook_size,
                "perplexity": math.exp(float(-(p * p.log()).sum()))}
