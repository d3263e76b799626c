"""SPRINT: prune the prompt's cached keys/values after a warm-up (docs/published/uni.md). Opt-in.

After a request's first `warmup` forwards, each cached prompt position i gets the score

    s_i = alpha * knorm_i / mean(knorm) + (1 - alpha) * c_i

with knorm_i the norm of its keys (averaged over layers and heads; RoPE preserves norms) and c_i the
top-1 softmax confidence of the model at position i in the prefill forward. Text and image
positions keep their own top fraction (`keep_text`, `keep_image`); the rest leave the cache, which
is compacted, so every later step attends over fewer keys. Generated blocks are never pruned.

A request with a multimodal prefix (sampling/prefix.py; LLaDA-o's understanding: cache "exact",
block attention) is pruned the same way: the candidates are its prefix slots, then its cached
prompt ids; the prefill forward gives the prefix positions' confidences (the head's top-1
probability there, for ViT features as for text), `Prefix.image_mask` says which are images.
LLaDA-V (full attention, no exact cache) cannot take SPRINT: it refuses cache "approx" and "none".

Its unmasking is non-uniform: every masked position above SPRINT's own `threshold` is committed
(the policy's threshold when None), and at least `min_accept` positions per step.

    cfg = SamplingConfig(cache="exact", sprint=Sprint(keep_text=0.5, warmup=2))
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Sprint:
    keep_text: float = 0.5  # fraction of cached text prompt positions kept
    keep_image: float = 0.3  # fraction of cached image prompt positions kept
    alpha: float = 0.5  # weight of the key norm against the confidence
    warmup: int = 1  # forwards of a request before its prefix is pruned
    threshold: float | None = None  # commit every masked position above this (None: the policy's)
    min_accept: int = 1  # commit at least this many positions per step

    def __post_init__(self):
        for name in ("keep_text", "keep_image", "alpha"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"Sprint.{name} must be in [0, 1], got {getattr(self, name)}")
        if self.threshold is not None and not 0 <= self.threshold <= 1:
            raise ValueError(f"Sprint.threshold must be in [0, 1], got {self.threshold}")
        if self.min_accept < 1:
            raise ValueError(f"Sprint.min_accept must be at least 1, got {self.min_accept}")
        if self.warmup < 1:
            raise ValueError(f"Sprint.warmup must be at least 1 (the prefill), got {self.warmup}")


def prefix_confidence(logits_LV: torch.Tensor, start: int, prompt_len: int) -> torch.Tensor:
    """Top-1 probabilities at prompt positions [start, prompt_len) of one row's forward -> (n,)."""
    n = max(0, min(prompt_len - start, logits_LV.shape[0]))
    return F.softmax(logits_LV[:n].float(), dim=-1).max(-1).values


def note_prefill(rows, logits_NPV: torch.Tensor) -> None:
    """The prefill forward of rows with a prefix (batch row j = rows[j]): their prefix positions'
    confidences, before those of the prompt ids (`note_prompt`)."""
    for row, logits in zip(rows, logits_NPV):
        if row.prefix is not None:
            row.prefix_conf = prefix_confidence(logits, 0, row.prefix.length)


def note_prompt(row, logits_LV: torch.Tensor, start: int) -> None:
    """A row's first denoising forward: the confidences of its prompt ids, after its prefix's."""
    conf = prefix_confidence(logits_LV, start, row.prompt_len)
    row.prefix_conf = conf if row.prefix is None else torch.cat([row.prefix_conf.to(conf.device), conf])


def scores(knorm: torch.Tensor, conf: torch.Tensor, alpha: float) -> torch.Tensor:
    """s_i = alpha * knorm_i / mean(knorm) + (1 - alpha) * c_i."""
    return alpha * knorm / knorm.mean().clamp_min(1e-12) + (1 - alpha) * conf


def keep_positions(score: torch.Tensor, is_image: torch.Tensor, sprint: Sprint) -> torch.Tensor:
    """Indices (ascending) of the candidates kept: the top fraction of each modality by score."""
    kept = []
    for modality, ratio in ((~is_image, sprint.keep_text), (is_image, sprint.keep_image)):
        idx = modality.nonzero().squeeze(1)
        k = math.ceil(ratio * idx.numel())
        if k:
            kept.append(idx[score[idx].topk(k).indices])
    return torch.cat(kept).sort().values if kept else score.new_zeros(0, dtype=torch.long)


def _is_image(row, n_prompt: int, device) -> torch.Tensor:
    """(P + n_prompt,) bool: the prefix's image positions (`Prefix.image_mask`), then the prompt's."""
    prefix = [] if row.prefix is None else \
        ([False] * row.prefix.length if row.prefix.image_mask is None else row.prefix.image_mask.tolist())
    image = row.request.image_mask
    return torch.tensor(prefix + list(image[:n_prompt] if image else [False] * n_prompt), dtype=torch.bool,
                        device=device)


def prune_row(engine, i: int) -> None:
    """Prune row i's prefix slots and cached prompt positions [0, min(prompt_len, cached)) (slots
    [0, P + those): unpruned, slot = P + position) and compact its cache; once per row."""
    row, cache = engine.rows[i], engine.cache
    if row.prefix_conf is None:
        return  # nothing scored yet, or already pruned
    P = 0 if row.prefix is None else row.prefix.length
    n = P + max(0, min(row.prompt_len, row.cached, len(row.prefix_conf) - P))
    if n == 0:
        return
    knorm = torch.stack([k[i, :, :n].float().norm(dim=-1).mean(0) for k in cache.k]).mean(0)  # (n,)
    keep = keep_positions(scores(knorm, row.prefix_conf[:n].to(knorm.device), engine.cfg.sprint.alpha),
                          _is_image(row, n - P, knorm.device), engine.cfg.sprint)
    rest = torch.arange(n, P + row.cached, device=keep.device)  # cached generated positions stay
    row.shift = cache.compact_row(i, torch.cat([keep, rest]), row.cached)
    row.prefix_conf = None
