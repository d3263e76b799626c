"""Samplers of the LLaDA-o omni model (REFERENCE.md §3): understanding (drawing and editing: sampling/image.py).

Understanding (`understand`): image and prompt form a clean prefix that is prefilled ONCE into a
small key/value cache (`PrefixCache`, the `attend_kv` protocol of `MoTBackbone`); the answer is
decoded in blocks of masks. Each iteration of a block:
    1. run the block against the cached prefix (the block is a `full` segment: it sees itself);
    2. x0 = argmax (mask / marker tokens banned), confidence = its softmax probability;
    3. commit every masked position with confidence >= tau, at least the top-1 (more when the
       remaining iterations of the 2 x steps budget require it);
    4. the answer is settled once an EOS is committed with nothing masked before it.
A block holding an EOS ends the answer (cut at the first EOS); otherwise the block is appended to
the cache and the next one starts.

    answer = understand(model, tok, image, "What digit is shown?")      # image (H, W) in [0, 1]
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ..data import omni_batches as OB
from ..sequence.segments import TEXT, VAE, VIT, positions, single, text, vit_image


class PrefixCache:
    """Keys / values of a clean prefix, per layer. With `append` the new keys/values are stored
    (prefill, or a finished block); otherwise they are attended once and forgotten (a block step)."""

    def __init__(self, n_layers: int):
        self.k: list[torch.Tensor | None] = [None] * n_layers
        self.v: list[torch.Tensor | None] = [None] * n_layers
        self.append = True
        self.next_position = 0

    def attend_kv(self, layer_idx: int, k: torch.Tensor, v: torch.Tensor):
        if self.k[layer_idx] is not None:
            k = torch.cat([self.k[layer_idx], k], dim=2)  # (B, KV, P + L, Dh)
            v = torch.cat([self.v[layer_idx], v], dim=2)
        if self.append:
            self.k[layer_idx], self.v[layer_idx] = k, v
        return k, v

    @property
    def length(self) -> int:
        return 0 if self.k[0] is None else self.k[0].shape[2]


def embed_inputs(model, ids: torch.Tensor, layout, vit=(), latents=(), t=None) -> torch.Tensor:
    """The embedding half of `LLaDAO.forward`: text ids, ViT features and latents in one (B, L, D)."""
    x = model.language_model.embed(torch.where(layout.kind == TEXT, ids, 0))
    if len(vit):
        x = model._place(x, layout.kind == VIT, model.embed_images(list(vit)), "ViT image")
    if len(latents):
        t = t if t is not None else torch.zeros(len(latents))
        x = model._place(x, layout.kind == VAE, model.embed_latents(list(latents), t), "latent image")
    return x


# --- image inputs ----------------------------------------------------------------------------------


def model_image_size(model) -> int:
    """The pixel size the model's images have (its ViT's, else its VAE's sample size)."""
    if model.can_see:
        return model.vit.image_size
    return int(model.config.vae["sample_size"])


def prepare_image(image: np.ndarray, size: int) -> torch.Tensor:
    """(H, W) grayscale in [0, 1] (white digit on black) -> (3, size, size) in [-1, 1]."""
    from PIL import Image

    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 2:
        raise ValueError(f"an image must be (H, W) grayscale, got shape {image.shape}")
    if image.shape != (size, size):
        pil = Image.fromarray(np.clip(image * 255, 0, 255).astype(np.uint8), mode="L")
        image = np.asarray(pil.resize((size, size), Image.BICUBIC), dtype=np.float32) / 255.0
    return OB.to_pixels(image[None])[0]


# --- understanding -----------------------------------------------------------------------------------


@dataclass
class Answer:
    text: str
    ids: list[int]
    iterations: int  # model calls on blocks (prefill and cache appends not counted)
    seconds: float
    history: list[list[int]] = field(default_factory=list)  # the answer canvas after each iteration


def _banned(model, tok) -> list[int]:
    cfg = model.config.llm
    ids = [cfg.mask_id, OB.IMG_START, OB.IMG_END, cfg.bos_id]
    return [i for i in ids if i is not None and i < cfg.vocab_size]


@torch.no_grad()
def prefill(model, codec: OB.PromptCodec, pixels: torch.Tensor | None, question: str) -> PrefixCache:
    """Run the clean prefix [head | image | question, header] once into a new cache."""
    head, tail = codec.head(), codec.tail(question)
    segs, ids, vit = [text(len(head))], list(head), []
    if pixels is not None:
        n = (pixels.shape[-1] // model.vit.patch_size) * (pixels.shape[-2] // model.vit.patch_size)
        segs.append(vit_image(n))
        ids += [OB.IMG_START] + [0] * n + [OB.IMG_END]
        vit = [pixels]
    segs.append(text(len(tail)))
    ids += tail
    layout = single(segs)
    x = embed_inputs(model, torch.tensor([ids]), layout, vit)
    cache = PrefixCache(model.config.llm.n_layers)
    model.language_model(inputs_embeds=x, attention_mask=layout.mask, position_ids=layout.position_ids,
                         kv_cache=cache, compute_logits=False)
    cache.next_position = positions(segs)[-1] + 1
    return cache


def _block_forward(model, cache: PrefixCache, block: torch.Tensor, append: bool) -> torch.Tensor:
    """(Lb,) ids against the cache -> (Lb, V) logits; `append` stores the block's keys/values."""
    Lb = block.shape[0]
    cache.append = append
    pos = torch.arange(cache.next_position, cache.next_position + Lb)[None]
    out = model.language_model(block[None], position_ids=pos, kv_cache=cache, compute_logits=not append)
    if append:
        cache.next_position += Lb
    return None if append else out.logits[0]


def _min_commit(n_masked: int, iters_left: int) -> int:
    return max(1, math.ceil(n_masked / max(1, iters_left)))


@torch.no_grad()
def decode_block(model, cache: PrefixCache, block_length: int, threshold: float, steps: int, eos_id: int,
                 banned: list[int], history: list | None = None, done: list[int] = ()) -> tuple[torch.Tensor, int]:
    """Threshold decoding of one block of masks -> (block ids (Lb,), iterations)."""
    mask_id = model.config.llm.mask_id
    block = torch.full((block_length,), mask_id, dtype=torch.long)
    max_iters, it = 2 * steps, 0
    while (block == mask_id).any() and it < max_iters:
        masked = block == mask_id
        logits = _block_forward(model, cache, block, append=False)  # (Lb, V)
        logits[:, banned] = -math.inf
        conf, x0 = torch.softmax(logits, dim=-1).max(dim=-1)  # (Lb,)
        conf = torch.where(masked, conf, -math.inf)
        k = _min_commit(int(masked.sum()), max_iters - it)
        commit = (conf >= threshold) & masked
        commit[conf.topk(k).indices] = True
        block[commit] = x0[commit]
        it += 1
        if history is not None:
            history.append(list(done) + block.tolist())
        eos = (block == eos_id).nonzero()
        if len(eos) and not (block[: int(eos[0])] == mask_id).any():
            break  # the answer is settled: everything before its first EOS is committed
    if (block == mask_id).any():  # the budget ran out (only when steps < block_length / 2)
        block = torch.where(block == mask_id, eos_id, block)
    return block, it


@torch.no_grad()
def understand(model, tokenizer, image: np.ndarray | None, question: str, block_length: int = 32,
               threshold: float = 0.95, steps: int | None = None, max_blocks: int = 4,
               record: bool = False) -> Answer:
    """Answer `question` about `image` ((H, W) in [0, 1], or None for text only)."""
    if not question or not question.strip():
        raise ValueError("the question (prompt) is empty")
    if image is not None and not model.can_see:
        raise ValueError("this model has no vision encoder: it cannot look at an image")
    start = time.time()
    codec = OB.PromptCodec(tokenizer)
    eos_id = model.config.llm.eos_id
    steps = steps or block_length // 2
    pixels = prepare_image(image, model_image_size(model)) if image is not None else None
    cache = prefill(model, codec, pixels, question)
    out, history, iters, banned = [], ([] if record else None), 0, _banned(model, tokenizer)
    for _ in range(max_blocks):
        block, n = decode_block(model, cache, block_length, threshold, steps, eos_id, banned, history, out)
        iters += n
        ids = block.tolist()
        if eos_id in ids:
            out += ids[: ids.index(eos_id)]
            break
        out += ids
        _block_forward(model, cache, block, append=True)
    return Answer(codec.decode(out), out, iters, time.time() - start, history or [])
