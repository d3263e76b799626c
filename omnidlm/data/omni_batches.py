"""Omni training samples and batches (LLaDA-o, docs/published/lladao.md): digit images, questions, captions.

Two kinds of sample share one batch, each a document of segments (`sequence/segments.py`):

    understanding  [prefix | ViT image | question + assistant header | answer (full)]
                   the answer is masked-diffusion noised; its length varies (adaptive length)
    generation     [prefix | caption + assistant header | VAE latents (noise)]
                   the latents are rectified-flow noised
    editing        [prefix | ViT image | clean VAE latents | instruction + header | VAE latents (noise)]

Condition dropout (for classifier-free guidance) happens here, where the sample is built: the text
condition becomes the empty prompt (p 0.1), the ViT and the clean-VAE copies of a condition image
are dropped (p 0.3 each).

Prompts are the LLaDA chat template over the character tokenizer; an image is wrapped in two
marker tokens (`IMG_START`, `IMG_END`) just past the tokenizer's ids.

    enc = PromptCodec(Tokenizer(build_char_tokenizer()))
    ids = enc.prompt("What digit is shown?")         # before the image / after it, see `split_prompt`
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np
import torch

from ..sequence.chat import BOS, END_HEADER, EOT, START_HEADER
from ..sequence.segments import Segment, text, vae_image, vit_image

IMG_START, IMG_END = 103, 104  # marker ids after the 103 ids of the character tokenizer
OMNI_VOCAB = 105


class PromptCodec:
    """Text <-> ids for omni prompts: [user header] <image> [question, assistant header]."""

    def __init__(self, tokenizer):
        self.tok = tokenizer

    def head(self) -> list[int]:
        """Everything before the (optional) image: BOS and the user header."""
        return self.tok.encode(f"{BOS}{START_HEADER}user{END_HEADER}\n\n")

    def tail(self, question: str) -> list[int]:
        """The user text after the image, the end of turn and the open assistant header."""
        return self.tok.encode(f"{question}{EOT}{START_HEADER}assistant{END_HEADER}\n\n")

    def answer(self, answer: str) -> list[int]:
        return self.tok.encode(answer)

    def decode(self, ids) -> str:
        return self.tok.decode(ids)


def image_tokens(image_size: int, patch: int) -> int:
    return (image_size // patch) ** 2


@dataclass
class Sample:
    """One document: segments, token ids per text token (image slots hold 0), images in order."""

    segments: list[Segment]
    ids: list[int]
    vit: list[torch.Tensor] = field(default_factory=list)  # (3, H, W) each, in [-1, 1]
    clean_latents: list[torch.Tensor] = field(default_factory=list)  # condition latents (C, h, w)
    target_latent: torch.Tensor | None = None  # the latent image to generate (C, h, w)
    answer: tuple[int, int] | None = None  # [start, end) of the answer tokens in `ids`


def _image_ids(seg: Segment) -> list[int]:
    return [IMG_START] + [0] * seg.length + [IMG_END]


def understanding_sample(codec: PromptCodec, pixels: torch.Tensor, n_vit: int, question: str,
                         answer_ids: list[int]) -> Sample:
    """[head | ViT image | question, header | answer (full, noised later)]."""
    head, tail, img = codec.head(), codec.tail(question), vit_image(n_vit)
    segs = [text(len(head)), img, text(len(tail)), text(len(answer_ids), "full")]
    ids = head + _image_ids(img) + tail + list(answer_ids)
    start = len(ids) - len(answer_ids)
    return Sample(segs, ids, vit=[pixels], answer=(start, len(ids)))


def generation_sample(codec: PromptCodec, prompt: str, target: torch.Tensor, n_vae: int,
                      cond_pixels: torch.Tensor | None = None, cond_latent: torch.Tensor | None = None,
                      n_vit: int = 0) -> Sample:
    """[head | (ViT image) | (clean VAE image) | prompt, header | noisy VAE image]."""
    head, tail = codec.head(), codec.tail(prompt)
    segs, ids, vit, clean = [text(len(head))], list(head), [], []
    if cond_pixels is not None:
        seg = vit_image(n_vit)
        segs.append(seg), ids.extend(_image_ids(seg)), vit.append(cond_pixels)
    if cond_latent is not None:
        seg = vae_image(n_vae)
        segs.append(seg), ids.extend(_image_ids(seg)), clean.append(cond_latent)
    noisy = vae_image(n_vae, noisy=True)
    segs += [text(len(tail)), noisy]
    ids += tail + _image_ids(noisy)
    return Sample(segs, ids, vit=vit, clean_latents=clean, target_latent=target)


@dataclass
class Dropout:
    """Condition dropout probabilities (LLaDA-o: text 0.1, ViT 0.3, VAE 0.3)."""

    text: float = 0.1
    vit: float = 0.3
    vae: float = 0.3


def drop_conditions(prompt: str, cond_pixels, cond_latent, p: Dropout, rng: random.Random):
    """Return the (prompt, ViT condition, VAE condition) that survive condition dropout."""
    if rng.random() < p.text:
        prompt = ""
    if cond_pixels is not None and rng.random() < p.vit:
        cond_pixels = None
    if cond_latent is not None and rng.random() < p.vae:
        cond_latent = None
    return prompt, cond_pixels, cond_latent


def to_pixels(images: np.ndarray) -> torch.Tensor:
    """(N, H, W) in [0, 1] -> (N, 3, H, W) in [-1, 1]."""
    x = torch.from_numpy(np.asarray(images, dtype=np.float32)) * 2 - 1
    return x[:, None].expand(-1, 3, -1, -1).contiguous()


def shift_image(pixels: torch.Tensor, rng: random.Random, max_shift: int = 1) -> torch.Tensor:
    """Augmentation: translate (3, H, W) by up to `max_shift` pixels, filling with black (-1)."""
    dy, dx = rng.randint(-max_shift, max_shift), rng.randint(-max_shift, max_shift)
    out = torch.full_like(pixels, -1.0)
    H, W = pixels.shape[-2:]
    ys, yd = (slice(0, H - dy), slice(dy, H)) if dy >= 0 else (slice(-dy, H), slice(0, H + dy))
    xs, xd = (slice(0, W - dx), slice(dx, W)) if dx >= 0 else (slice(-dx, W), slice(0, W + dx))
    out[:, yd, xd] = pixels[:, ys, xs]
    return out


def affine_image(pixels: torch.Tensor, rng: random.Random, degrees: float = 10.0, scale: float = 0.1,
                 translate: float = 1.0) -> torch.Tensor:
    """Augmentation: a random rotation (+-degrees), zoom (1 +- scale) and translation (+-translate
    pixels) of (3, H, W) in [-1, 1], bilinear, filling with black (-1)."""
    import math

    from .augment import affine_warp

    H, W = pixels.shape[-2:]

    def one(value: float) -> torch.Tensor:
        return torch.tensor([value], dtype=torch.float32)

    angle, zoom = math.radians(rng.uniform(-degrees, degrees)), 1.0 / rng.uniform(1 - scale, 1 + scale)
    tx, ty = rng.uniform(-translate, translate) * 2 / W, rng.uniform(-translate, translate) * 2 / H
    return affine_warp(pixels[None], one(angle), one(zoom), one(tx), one(ty))[0]


@dataclass
class Batch:
    """A packed batch: per-row token ids and the layout, images in layout order, training targets."""

    input_ids: torch.Tensor  # (B, L) clean ids (images: 0)
    layout: object  # sequence.segments.Layout
    vit: list[torch.Tensor]
    clean_latents: list[torch.Tensor]  # condition latents, layout order among VAE images
    targets: list[torch.Tensor]  # target latents x0, one per noisy VAE image
    answer_mask: torch.Tensor  # (B, L) bool, answer tokens (maskable)
    doc_ids: torch.Tensor  # (B, L)


def pack_rows(lengths: list[int], capacity: int) -> list[list[int]]:
    """First-fit decreasing: sample indices per row, each row at most `capacity` tokens (a longer
    sample gets a row of its own)."""
    rows, room = [], []
    for i in sorted(range(len(lengths)), key=lambda j: -lengths[j]):
        for r, free in enumerate(room):
            if lengths[i] <= free:
                rows[r].append(i)
                room[r] -= lengths[i]
                break
        else:
            rows.append([i])
            room.append(capacity - lengths[i])
    return rows


def collate(samples: list[Sample], pad_id: int, capacity: int = 0) -> Batch:
    """Samples packed into rows of at most `capacity` tokens (0: one per row), right-padded; each
    sample is a document that never sees the others. Images are listed in layout order."""
    from ..sequence.segments import pack

    lengths = [len(s.ids) for s in samples]
    rows = pack_rows(lengths, max(capacity, max(lengths))) if capacity else [[i] for i in range(len(samples))]
    layout = pack([[samples[i].segments for i in row] for row in rows])
    B, L = layout.shape
    ids = torch.full((B, L), pad_id, dtype=torch.long)
    answer = torch.zeros(B, L, dtype=torch.bool)
    vit, clean, targets = [], [], []
    for r, row in enumerate(rows):
        at = 0
        for i in row:
            s = samples[i]
            ids[r, at: at + len(s.ids)] = torch.tensor(s.ids)
            if s.answer is not None:
                answer[r, at + s.answer[0]: at + s.answer[1]] = True
            at += len(s.ids)
            vit += s.vit
            clean += s.clean_latents
            if s.target_latent is not None:
                targets.append(s.target_latent)
    return Batch(ids, layout, vit, clean, targets, answer, layout.doc_ids)


def latents_in_order(batch: Batch, noisy: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[bool]]:
    """Interleave clean condition latents and noisy ones in layout order (a condition comes first
    within its row). Returns the list and a flag per entry: True = noisy."""
    out, flags, ci, ni = [], [], 0, 0
    for seg in (seg for row in batch.layout.segments for doc in row for seg in doc):
        if seg.kind != "vae":
            continue
        if seg.mode == "noise":
            out.append(noisy[ni]), flags.append(True)
            ni += 1
        else:
            out.append(batch.clean_latents[ci]), flags.append(False)
            ci += 1
    return out, flags
