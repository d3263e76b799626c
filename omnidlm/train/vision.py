"""Pre-training a vision tower with an understanding objective (a stand-in for a pretrained SigLIP).

The published LLaDA-o and LLaDA2.0-Uni start from a SigLIP tower that was pretrained on web images;
nothing can be downloaded here, so the embedded digits models pretrain their tiny tower first: the
tower's patch features, mean-pooled, feed a linear head that names the digit (cross entropy with
label smoothing), on randomly rotated / zoomed / shifted training images. The head is thrown away;
the tower (and, for Uni, the quantizer in between) is what the omni model keeps.

Augmentation is what makes the tower read unseen writers: trained without it, one-token towers
reach 92% on the held-out digits, with it 95-99% (measured in `pretrain_vision`'s log).

    vit = VisionEncoder(cfg)
    stats = pretrain_vision(vit, pixels, labels, VisionPretrain(steps=4000))   # pixels in [-1, 1]
    stats["heldout_accuracy"]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..data.augment import random_affine
from .loop import Loop, Optim, backprop


@dataclass
class VisionPretrain:
    steps: int = 4000
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.05
    label_smoothing: float = 0.1
    degrees: float = 11.0  # random rotation, +- degrees
    zoom: float = 0.1  # random zoom 1 +- zoom
    translate: float = 0.15  # random shift, +- this fraction of the half-width
    seed: int = 0


def pretrain_vision(features: nn.Module, pixels: torch.Tensor, labels, cfg: VisionPretrain,
                    heldout: tuple[torch.Tensor, object] | None = None,
                    extra_loss: Callable[[], torch.Tensor] | None = None, hooks=(), progress: bool = False,
                    out=None, stage: str = "vit") -> dict:
    """Train `features` ((B, 3, H, W) -> (B, N, D)) to name the digit; returns accuracies.

    `extra_loss` (called after each forward) adds a term such as a VQ commitment loss; `heldout`
    (pixels, labels) is only measured, never trained on; `hooks` run after each update (the shared
    loop's, `train/loop.py`: AdamW with weight decay on every tensor, cosine to zero, no warm-up).
    """
    labels = torch.as_tensor(labels)
    g = torch.Generator().manual_seed(cfg.seed)
    with torch.no_grad():
        dim = features(pixels[:1]).shape[-1]
    head = nn.Linear(dim, int(labels.max()) + 1)
    optim = Optim(steps=cfg.steps, lr=cfg.lr, schedule="cosine", weight_decay=cfg.weight_decay, decay_all=True)
    loop = Loop(features, optim, stage, named=[*features.named_parameters(), *head.named_parameters("head")],
                hooks=hooks, out=out, progress=progress, log_every=50)

    def classify(x: torch.Tensor) -> torch.Tensor:
        return head(features(x).mean(1))

    def loss(step: int) -> dict:
        idx = torch.randint(0, len(pixels), (cfg.batch_size,), generator=g)
        x = random_affine(pixels[idx], g, cfg.degrees, cfg.zoom, cfg.translate)
        value = F.cross_entropy(classify(x), labels[idx], label_smoothing=cfg.label_smoothing)
        return {"loss": value + extra_loss() if extra_loss is not None else value}

    features.train()
    loop.run(backprop(loss))
    features.eval()
    stats = {"train_accuracy": accuracy(classify, pixels[:500], labels[:500]), "steps": loop.step}
    if heldout is not None:
        stats["heldout_accuracy"] = accuracy(classify, heldout[0], torch.as_tensor(heldout[1]))
    return stats


@torch.no_grad()
def accuracy(classify: Callable, pixels: torch.Tensor, labels: torch.Tensor) -> float:
    hits = sum(int((classify(pixels[i:i + 256]).argmax(-1) == labels[i:i + 256]).sum())
               for i in range(0, len(pixels), 256))
    return round(hits / len(pixels), 4)
