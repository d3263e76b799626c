"""LLaDA-o understanding on the engine (docs/published/lladao.md; drawing and editing: sampling/image.py).

An image question is an engine `Request` whose multimodal prefix (sampling/prefix.py) holds
[head | image | question, header] (ViT features at the image's patches, the whole image at ONE
RoPE position, the digits models' causal text splits) and whose canvas is the answer: the prefix
is prefilled ONCE into the engine's KVCache, then the answer is decoded block by block by the
engine's loop with the policy `Threshold(tau, steps=block_length)`: every masked position above
tau, at least the top-1 per step (the digits models' and the published `chat_block` rule); a row
stops at its first EOS with nothing masked before it. So image questions batch with each other
(`understanding_requests` + `understanding_engine`, what the server drives) and stream block by
block.

    answer = understand(model, tok, image, "What digit is shown?")        # image (H, W) in [0, 1]
    answers = understand_many(model, tok, images, questions)               # one engine batch
    ids = published_answer(model, prompt_ids, pixels, markers, gen_length=8, block_length=4, steps=8)

`published_answer` lays the question out as the published code does ([image | bos prompt eos],
answer [bos | masks]) and maps its two samplers onto the engine's knobs: cache "none" is
`chat(use_cache=False)` (one full split: every token sees every token, fixed steps), cache "exact"
is `chat_block` (cached blocks, threshold).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ..data import omni_batches as OB
from ..sequence.segments import VIT, Layout, pack, text, vit_image
from .config import steps_per_block
from .engine import BatchEngine, Request, SamplingConfig
from .policies import make_policy, Threshold
from .prefix import Prefix, split_mask
from .rows import RowSettings


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
    ids: list[int]  # the answer's ids, without its closing EOS
    iterations: int  # engine steps the answer took (the prefill not counted)
    seconds: float
    history: list[list[int]] = field(default_factory=list)  # the answer canvas after each iteration


def _banned(model) -> tuple[int, ...]:
    cfg = model.config.llm
    ids = [cfg.mask_id, OB.IMG_START, OB.IMG_END, cfg.bos_id]
    return tuple(i for i in ids if i is not None and i < cfg.vocab_size)


def understanding_config(model, block_length: int = 32, threshold: float = 0.95, steps: int | None = None,
                         max_blocks: int = 4) -> SamplingConfig:
    """The digits models' answers on the engine: block-causal blocks after the cached prefix,
    threshold decoding (at most `steps` iterations per block, default block_length), stop at EOS,
    mask / marker / BOS ids banned."""
    return SamplingConfig(max_new_tokens=max_blocks * block_length, block_length=block_length, attention="block",
                          cache="exact", policy=Threshold(threshold, steps or block_length), ban_ids=_banned(model))


def understanding_engine(model, config: SamplingConfig | None = None, max_batch: int = 16) -> BatchEngine:
    """A BatchEngine over the model's language model, for `understanding_requests`."""
    return BatchEngine(model.language_model, config or understanding_config(model), max_batch=max_batch)


def prefix_of(model, segments, ids: list[int], vit: list[torch.Tensor], mask: torch.Tensor | None = None) -> Prefix:
    """A prefix of one sample's segments: embeddings from `LLaDAO.embed`, the layout's positions
    and (unless given) its segment mask."""
    prefix = prefixes_of(model, [(segments, ids, vit)])[0]
    if mask is None:
        return prefix
    return Prefix(prefix.embeds, prefix.position_ids, mask, image_mask=prefix.image_mask)


def prefixes_of(model, samples: list[tuple]) -> list[Prefix]:
    """Prefixes of many samples (segments, ids, ViT pixels) with ONE `LLaDAO.embed` call: the
    samples packed as rows of one layout, their images through the ViT as one batch. Each row is
    its own document, so its positions and mask are the ones it has alone."""
    device = model.language_model.device
    layout: Layout = pack([[segs] for segs, _, _ in samples], device=device)
    ids = torch.zeros(layout.shape, dtype=torch.long, device=device)
    for i, (_, row, _) in enumerate(samples):
        ids[i, : len(row)] = torch.tensor(row, device=device)
    vit = [v.to(device) for _, _, images in samples for v in images]
    with torch.no_grad():
        embeds = model.embed(ids, layout, vit)  # (B, L, D)
    mask, out = layout.mask[:, 0], []
    for i, (_, row, _) in enumerate(samples):
        P = len(row)
        out.append(Prefix(embeds[i, :P], layout.position_ids[i, :P], mask[i, :P, :P],
                          image_mask=layout.kind[i, :P] == VIT))  # SPRINT's keep_image (sampling/sprint.py)
    return out


def question_sample(model, codec: OB.PromptCodec, pixels: torch.Tensor | None, question: str) -> tuple:
    """The digits layout [head | image | question, header] of one question: (segments, ids, ViT
    pixels), causal text and a full image."""
    head, tail = codec.head(), codec.tail(question)
    segs, ids, vit = [text(len(head))], list(head), []
    if pixels is not None:
        n = (pixels.shape[-1] // model.vit.patch_size) * (pixels.shape[-2] // model.vit.patch_size)
        segs.append(vit_image(n))
        ids += [OB.IMG_START] + [0] * n + [OB.IMG_END]
        vit = [pixels]
    segs.append(text(len(tail)))
    return segs, ids + tail, vit


def image_question(model, codec: OB.PromptCodec, pixels: torch.Tensor | None, question: str) -> Prefix:
    """The prefix of one question (`question_sample`)."""
    return prefixes_of(model, [question_sample(model, codec, pixels, question)])[0]


def question_samples(model, tokenizer, images: list[np.ndarray | None], questions: list[str]) -> list[tuple]:
    """`question_sample` of each (image (H, W) in [0, 1] or None, question), checked and its image
    prepared: what `prefixes_of` embeds (the ViT forward is left for the batch)."""
    codec, out = OB.PromptCodec(tokenizer), []
    for image, question in zip(images, questions):
        if not question or not question.strip():
            raise ValueError("the question (prompt) is empty")
        if image is not None and not model.can_see:
            raise ValueError("this model has no vision encoder: it cannot look at an image")
        pixels = prepare_image(image, model_image_size(model)) if image is not None else None
        out.append(question_sample(model, codec, pixels, question))
    return out


def understanding_requests(model, tokenizer, images: list[np.ndarray | None], questions: list[str],
                           settings: RowSettings | None = None, max_new_tokens: int | None = None) -> list[Request]:
    """One engine Request per (image (H, W) in [0, 1] or None, question), for `understanding_engine`;
    the images go through the ViT as one batch."""
    prefixes = prefixes_of(model, question_samples(model, tokenizer, images, questions))
    return [Request([], max_new_tokens, prefix=prefix, settings=settings) for prefix in prefixes]


def run_recorded(engine: BatchEngine, requests: list[Request], record: bool = False):
    """Run requests to completion -> (results in order, {id: canvas after each step} when recording)."""
    ids = [engine.add(r) for r in requests]
    done, history = {}, {i: [] for i in ids}
    while engine.busy:
        for r in engine.step():
            done[r.id] = r
            history[r.id].append(list(r.tokens))
        if record:
            for rid, canvas in engine.canvas().items():
                history[rid].append(canvas)
    return [done[i] for i in ids], history


@torch.no_grad()
def understand_many(model, tokenizer, images: list[np.ndarray | None], questions: list[str], block_length: int = 32,
                    threshold: float = 0.95, steps: int | None = None, max_blocks: int = 4, record: bool = False,
                    max_batch: int = 16) -> list[Answer]:
    """Answer each question about its image in one engine batch."""
    start, codec = time.time(), OB.PromptCodec(tokenizer)
    requests = understanding_requests(model, tokenizer, images, questions)
    engine = understanding_engine(model, understanding_config(model, block_length, threshold, steps, max_blocks),
                                  max_batch)
    results, history = run_recorded(engine, requests, record)
    seconds, eos = (time.time() - start) / max(1, len(results)), model.config.llm.eos_id
    answers = []
    for r in results:
        ids = r.tokens[:-1] if r.tokens and r.tokens[-1] == eos else r.tokens
        answers.append(Answer(codec.decode(ids), ids, r.forwards, seconds, history[r.id] if record else []))
    return answers


def understand(model, tokenizer, image: np.ndarray | None, question: str, block_length: int = 32,
               threshold: float = 0.95, steps: int | None = None, max_blocks: int = 4,
               record: bool = False) -> Answer:
    """Answer `question` about `image` ((H, W) in [0, 1], or None for text only)."""
    return understand_many(model, tokenizer, [image], [question], block_length, threshold, steps, max_blocks,
                           record, max_batch=1)[0]


# --- the published layout and samplers ------------------------------------------------------------------


def published_question(model, prompt_ids: list[int], pixels: torch.Tensor | None, markers: tuple[int, int]) -> Prefix:
    """The published chat layout: [start_of_image, ViT patches, end_of_image] at ONE position (its
    own split), then [bos] prompt [eos] (a split that sees the image and itself)."""
    bos, eos = model.config.llm.bos_id, model.config.llm.eos_id
    segs, ids, vit = [], [], []
    if pixels is not None:
        grid = model.vit.grid(pixels.shape[-2], pixels.shape[-1])
        segs.append(vit_image(grid[0] * grid[1]))
        ids += [markers[0]] + [0] * grid[0] * grid[1] + [markers[1]]
        vit = [pixels]
    words = [bos, *prompt_ids, eos]
    segs.append(text(len(words), "full"))
    splits = torch.tensor([0] * len(ids) + [1] * len(words))
    return prefix_of(model, segs, ids + words, vit, split_mask(splits))


def published_config(model, gen_length: int, block_length: int, steps: int, policy: str = "fixed",
                     threshold: float = 0.95, cache: str = "none", temperature: float = 0.0) -> SamplingConfig:
    """The published samplers' knobs on the engine. `steps` is the total over the answer (steps per
    block = steps x block_length / gen_length). cache "none": `chat(use_cache=False)` (full
    attention over [prefix | canvas]); "exact": `chat_block` (the prefix cached, block-causal
    blocks that see it), stopping at an EOS."""
    if gen_length <= 1:
        raise ValueError(f"gen_length ({gen_length}) must be > 1 (the answer opens with [bos])")
    per_block = steps_per_block(steps, gen_length, block_length)
    if policy == "threshold":  # at least the top-1 per step, every step (the published rule never forces a commit)
        per_block = max(per_block, block_length)
    attention = "block" if cache == "exact" else "full"
    return SamplingConfig(max_new_tokens=gen_length - 1, block_length=block_length, attention=attention, cache=cache,
                          policy=make_policy(policy, per_block, threshold=threshold), temperature=temperature,
                          stop_at_eos=cache != "none")


@torch.no_grad()
def published_answer(model, prompt_ids: list[int], pixels: torch.Tensor | None, markers: tuple[int, int],
                     gen_length: int, block_length: int, steps: int, policy: str = "fixed", threshold: float = 0.95,
                     cache: str = "none", temperature: float = 0.0, seed: int | None = None) -> list[int]:
    """The published chat's answer ids, its opening [bos] included (what `output_ids` records).
    `prompt_ids`: the question's ids before the model's wrapping; `pixels` (3, H, W) in [-1, 1]
    (the published ImageTransform's (x / 255 - 0.5) / 0.5) or None; `markers`: the
    (start_of_image, end_of_image) ids (formats.lladao.image_marker_ids)."""
    cfg = published_config(model, gen_length, block_length, steps, policy, threshold, cache, temperature)
    request = Request([model.config.llm.bos_id], prefix=published_question(model, prompt_ids, pixels, markers),
                      seed=seed)
    result = BatchEngine(model.language_model, cfg, max_batch=1).run([request])[0]
    return [model.config.llm.bos_id] + result.tokens
