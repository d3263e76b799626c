"""Training the SigLIP-VQ image tokenizer (models/vq.py) with an understanding objective.

As in LLaDA2.0-Uni the tokenizer is trained to keep what an understanding model needs, not to
reconstruct pixels: the mean-pooled *quantized* features feed a linear head that names the digit
(cross entropy with label smoothing, on randomly rotated / zoomed / shifted images, reusing
`train/vision.py`), plus the VQ commitment and codebook losses. Codes unused for `restart_every`
steps are re-initialised to random current features (dead-code restarts), which keeps the codebook
in use; restarts stop for the last `settle` fraction of training so the final codebook settles.

    vq = SiglipVQ(DIGITS_VQ)
    stats = train_tokenizer(vq, pixels, labels, TokenizerTrain(), heldout=(held_pixels, held_labels))
    codes = tokenize_digits(vq, pixels)        # (N, h, w) long
"""

from __future__ import annotations

import time
from dataclasses import dataclass
import torch
from torch import nn

from ..models.vq import SiglipVQ
from .vision import VisionPretrain, pretrain_vision


@dataclass
class TokenizerTrain(VisionPretrain):
    steps: int = 5000
    restart_every: int = 50  # re-initialise codes unused over this many steps (0: never)
    settle: float = 0.1  # no restarts in this last fraction of the steps


class _Quantized(nn.Module):
    """`pretrain_vision`'s feature module: pixels -> quantized features; keeps the last forward's
    VQ losses and features, and which codes were used since the last restart."""

    def __init__(self, vq: SiglipVQ):
        super().__init__()
        self.vq = vq
        self.losses: dict[str, torch.Tensor] = {}
        self.last_z = torch.empty(0, vq.code_dim)
        self.hits = torch.zeros(vq.codebook_size, dtype=torch.long)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        z_q, codes, self.losses = self.vq(pixels)  # (B, h w, code_dim), (B, h w)
        if self.training:
            self.last_z = z_q.detach().flatten(0, 1)  # (B h w, code_dim), equal to z in value
            self.hits += torch.bincount(codes.flatten(), minlength=self.vq.codebook_size)
        return z_q

    def extra_loss(self) -> torch.Tensor:
        return self.losses["commit"] + self.losses["codebook"]

    @torch.no_grad()
    def restart_dead(self, g: torch.Generator) -> int:
        """Move every code unused since the last call onto a random feature of the last batch."""
        dead = (self.hits == 0).nonzero().flatten()
        if len(dead) and len(self.last_z):
            pick = torch.randint(0, len(self.last_z), (len(dead),), generator=g)
            noise = 0.01 * torch.randn(len(dead), self.vq.code_dim, generator=g)
            self.vq.codebook.weight[dead] = self.last_z[pick] + noise
        self.hits.zero_()
        return len(dead)


def train_tokenizer(vq: SiglipVQ, pixels: torch.Tensor, labels, cfg: TokenizerTrain,
                    heldout: tuple[torch.Tensor, object] | None = None, hooks=(), progress: bool = False,
                    out=None) -> dict:
    """Train `vq` on (N, 3, H, W) pixels in [-1, 1]; returns accuracies from quantized features,
    codebook usage on the training images, restarts and seconds. `heldout` is only measured;
    `hooks` (loop, metrics) run after each update, after the dead-code restart."""
    start = time.perf_counter()
    module = _Quantized(vq)
    g = torch.Generator().manual_seed(cfg.seed + 1)
    last_restart = int(cfg.steps * (1 - cfg.settle))
    restarted = 0

    def restart(loop, metrics: dict) -> None:  # a loop hook: after the update of step `loop.step`
        nonlocal restarted
        step = loop.step
        if cfg.restart_every and (step + 1) % cfg.restart_every == 0 and step < last_restart:
            metrics["restarted"] = module.restart_dead(g)
            restarted += metrics["restarted"]

    stats = pretrain_vision(module, pixels, labels, cfg, heldout, module.extra_loss, hooks=[restart, *hooks],
                            progress=progress, out=out, stage="tokenizer")
    stats["usage"] = vq.usage(tokenize_digits(vq, pixels))
    stats["restarted"] = restarted
    stats["seconds"] = round(time.perf_counter() - start, 1)
    return stats


@torch.no_grad()
def tokenize_digits(vq: SiglipVQ, pixels: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """(N, 3, H, W) pixels in [-1, 1] -> (N, h, w) long codes, `batch` images at a time."""
    return torch.cat([vq.encode(pixels[i:i + batch]) for i in range(0, len(pixels), batch)])
