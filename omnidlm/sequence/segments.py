"""Sequences as lists of segments (LLaDA-o, docs/published/lladao.md): what each token is, where it sits,
which expert it is routed to and what it may attend to.

A sample is a list of `Segment`s; each has a kind (text, ViT image, VAE-latent image), a length
and an attention mode:
- `causal`: sees earlier segments and, inside itself, earlier tokens;
- `full`:   sees earlier segments and all of itself (a clean image, a noised text answer);
- `noise`:  like `full`, but invisible to every other segment (noisy latents being generated), so
            the clean segments before it form a prefix that can be cached.
An image segment may be wrapped in start / end marker tokens (text tokens, understanding expert);
the whole image, markers included, shares ONE RoPE position. Rows hold one or more packed samples
(documents) that never see each other; position ids restart at each document.

    segs = [text(5), vae_image(16, noisy=True), text(3, mode="full")]
    lay = pack([[segs]])              # one row, one document
    lay.mask                          # (1, 1, L, L) bool, True = may attend
    lay.position_ids, lay.kind        # (1, L) each
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .masks import MODES, NOISE, segment_mask

TEXT, VIT, VAE = 0, 1, 2  # token kinds
KINDS = {"text": TEXT, "vit": VIT, "vae": VAE}


@dataclass(frozen=True)
class Segment:
    kind: str  # text | vit | vae
    length: int  # content tokens: text tokens or image patches (markers excluded)
    mode: str = "causal"  # causal | full | noise
    markers: bool = False  # an image wrapped in start / end marker tokens (text kind)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"segment kind must be one of {sorted(KINDS)}, got {self.kind!r}")
        if self.mode not in MODES:
            raise ValueError(f"segment mode must be one of {sorted(MODES)}, got {self.mode!r}")
        if self.length < 0 or (self.length == 0 and not self.markers):
            raise ValueError(f"segment length must be positive, got {self.length}")
        if self.markers and self.kind == "text":
            raise ValueError("only image segments (vit, vae) carry start / end markers")

    @property
    def is_image(self) -> bool:
        return self.kind != "text"

    @property
    def total(self) -> int:
        return self.length + 2 * self.markers

    def kinds(self) -> list[int]:
        """Kind of every token, markers as text."""
        inner = [KINDS[self.kind]] * self.length
        return [TEXT, *inner, TEXT] if self.markers else inner


def text(n: int, mode: str = "causal") -> Segment:
    return Segment("text", n, mode)


def vit_image(n_patches: int, markers: bool = True) -> Segment:
    """An image seen by the understanding expert (ViT features): clean, so `full`."""
    return Segment("vit", n_patches, "full", markers)


def vae_image(n_patches: int, noisy: bool = False, markers: bool = True) -> Segment:
    """An image of VAE latents (generation expert): `noise` while generated, `full` as a clean condition."""
    return Segment("vae", n_patches, "noise" if noisy else "full", markers)


def positions(segments: list[Segment]) -> list[int]:
    """RoPE position per token: text advances by one per token, an image takes one position in all."""
    out, pos = [], 0
    for seg in segments:
        if seg.is_image:
            out += [pos] * seg.total
            pos += 1
        else:
            out += list(range(pos, pos + seg.total))
            pos += seg.total
    return out


@dataclass
class Layout:
    """Per-token tensors of a batch of packed rows, all (B, L)."""

    kind: torch.Tensor  # TEXT / VIT / VAE
    position_ids: torch.Tensor
    split_ids: torch.Tensor  # segment index along the row (padding: its own split)
    split_modes: torch.Tensor  # CAUSAL / FULL / NOISE of the token's segment
    doc_ids: torch.Tensor  # packed document index, -1 for padding
    segments: list[list[list[Segment]]]  # rows -> documents -> segments, as given

    @property
    def mask(self) -> torch.Tensor:
        """(B, 1, L, L) bool attention mask, True = may attend."""
        return segment_mask(self.split_ids, self.split_modes, self.doc_ids)

    @property
    def gen_route(self) -> torch.Tensor:
        """(B, L) bool: tokens routed to the generation expert (VAE latents)."""
        return self.kind == VAE

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.kind.shape)

    def to(self, device) -> "Layout":
        move = {k: getattr(self, k).to(device) for k in ("kind", "position_ids", "split_ids", "split_modes", "doc_ids")}
        return Layout(**move, segments=self.segments)


def _row(documents: list[list[Segment]]) -> dict[str, list[int]]:
    row = {"kind": [], "position_ids": [], "split_ids": [], "split_modes": [], "doc_ids": []}
    split = 0
    for doc, segments in enumerate(documents):
        row["position_ids"] += positions(segments)  # restart at each document
        for seg in segments:
            row["kind"] += seg.kinds()
            row["split_ids"] += [split] * seg.total
            row["split_modes"] += [MODES[seg.mode]] * seg.total
            row["doc_ids"] += [doc] * seg.total
            split += 1
    return row


def pack(rows: list[list[list[Segment]]], pad_to: int | None = None, device=None) -> Layout:
    """Layout of B rows, each a list of documents (lists of segments); rows right-padded to one length.

    Padding tokens form their own `full` split in document -1: they see only each other, so no
    attention row is empty and real tokens never see them.
    """
    built = [_row(docs) for docs in rows]
    length = max(len(r["kind"]) for r in built)
    if pad_to is not None:
        if pad_to < length:
            raise ValueError(f"pad_to={pad_to} is shorter than the longest row ({length} tokens)")
        length = pad_to
    fill = {"kind": TEXT, "position_ids": 0, "split_modes": MODES["full"], "doc_ids": -1}
    for r in built:
        n = length - len(r["kind"])
        last = r["split_ids"][-1] + 1 if r["split_ids"] else 0
        r["split_ids"] += [last] * n
        for key, value in fill.items():
            r[key] += [value] * n
    tensors = {k: torch.tensor([r[k] for r in built], dtype=torch.long, device=device) for k in built[0]}
    return Layout(**tensors, segments=rows)


def single(segments: list[Segment], device=None) -> Layout:
    """Layout of one row holding one sample."""
    return pack([[segments]], device=device)


def dense_mask(segments: list[Segment]) -> torch.Tensor:
    """(L, L) mask of one sample written token by token from the rules: the oracle for `segment_mask`."""
    spans, start = [], 0
    for seg in segments:
        spans.append((start, start + seg.total, seg.mode))
        start += seg.total
    mask = torch.zeros(start, start, dtype=torch.bool)
    for qi, (q0, q1, q_mode) in enumerate(spans):
        for q in range(q0, q1):
            for ki, (k0, k1, k_mode) in enumerate(spans):
                for k in range(k0, k1):
                    if ki == qi:
                        mask[q, k] = q_mode != "causal" or k <= q
                    elif ki < qi:
                        mask[q, k] = k_mode != "noise"
    return mask


__all__ = ["Segment", "Layout", "text", "vit_image", "vae_image", "positions", "pack", "single", "dense_mask",
           "TEXT", "VIT", "VAE", "NOISE"]
