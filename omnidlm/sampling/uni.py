"""Sampling LLaDA2.0-Uni (REFERENCE.md §4): understanding, text-to-image, editing, free answers.

Everything is block diffusion over one vocabulary; images are the tokenizer's codes.

    understand(model, tok, image, "What digit is shown?")     the engine (exact cache, threshold
                                                               decoding, stop at EOS; SPRINT opt-in)
    draw(model, tok, ["a handwritten digit 7"], n=4)          image codes by block diffusion with
                                                               CFG, then the diffusion decoder
    edit(model, tok, image, "Change the digit to 7.")         the same, conditioned on the source codes
    respond(model, tok, "Draw the digits 3 and 5.")           free answers mixing text and images

`draw` and `edit` sample codes on the canvas [prompt | <image> <imgsize_h> <imgsize_w> | masks],
with block-causal attention (blocks aligned at position 0, as in training) and no cache: the canvas is
a few dozen tokens. Each step keeps the masked positions' code logits only, mixes conditional and
unconditional logits (l_u + s (l_c - l_u), s = 1: off; the unconditional prompt is the empty one, as
in training's caption dropout), samples a code per position (Gumbel, `temperature`) and commits the most confident
(at least ceil(remaining / steps left), plus all above `threshold`). With a `sprint`
setting the codes come from the engine instead, SPRINT included (no CFG there).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ..data.uni_batches import UniCodec
from ..sequence.masks import block_causal_mask
from .engine import BatchEngine, Request, SamplingConfig
from .omni import prepare_image
from .policies import Threshold
from .reference import gumbel_argmax


@dataclass
class UniAnswer:
    text: str
    ids: list[int]  # the answer's ids, without the closing EOS
    forwards: int
    seconds: float
    images: list[np.ndarray] = field(default_factory=list)  # decoded images of a free answer


def codec_of(model, tokenizer) -> UniCodec:
    return UniCodec(tokenizer, model.config.vocab)


def sampling_config(max_new_tokens: int = 128, threshold: float = 0.95, sprint=None, **kw) -> SamplingConfig:
    """The published LLaDA2.0 rule (threshold 0.95, block 32) on the exact cache; SPRINT when given."""
    return SamplingConfig(max_new_tokens=max_new_tokens, cache="exact", policy=Threshold(threshold, 32),
                          sprint=sprint, **kw)


@torch.no_grad()
def encode_images(model, images: list[np.ndarray]) -> torch.Tensor:
    """(H, W) images in [0, 1] -> codes (N, h, w) of the model's image tokenizer."""
    if model.tokenizer is None:
        raise ValueError("this model has no image tokenizer: it cannot read images")
    size = model.tokenizer.vit.image_size
    return model.tokenizer.encode(torch.stack([prepare_image(im, size) for im in images]))


def _text_ban(model) -> tuple[int, ...]:
    """Ids an understanding answer never holds: the mask, BOS and every image id."""
    cfg, v = model.config.llm, model.config.vocab
    image_ids = [v.image_start, v.image_end, *v.size_ids, *v.code_range]
    return tuple(i for i in [cfg.mask_id, cfg.bos_id, *image_ids] if i is not None)


@torch.no_grad()
def understand_many(model, tokenizer, images: list[np.ndarray | None], questions: list[str],
                    config: SamplingConfig | None = None, max_batch: int = 16) -> list[UniAnswer]:
    """Answer each question about its image (None: text only) through the batched engine."""
    for q in questions:
        if not q or not q.strip():
            raise ValueError("the question (prompt) is empty")
    start, codec = time.time(), codec_of(model, tokenizer)
    seen = [im for im in images if im is not None]
    codes = iter(encode_images(model, seen)) if seen else iter(())
    requests = []
    for im, q in zip(images, questions):
        prompt = codec.user(q, next(codes) if im is not None else None)
        requests.append(Request(prompt, image_mask=model.config.vocab.is_image(prompt)))
    cfg = config or sampling_config()
    if not cfg.ban_ids:
        cfg = dataclasses.replace(cfg, ban_ids=_text_ban(model))
    results = BatchEngine(model.backbone, cfg, max_batch).run(requests)
    seconds, eos = (time.time() - start) / max(1, len(results)), model.config.llm.eos_id
    answers = [r.tokens[:-1] if r.tokens and r.tokens[-1] == eos else r.tokens for r in results]  # EOS dropped
    return [UniAnswer(codec.decode(ids), ids, r.forwards, seconds) for ids, r in zip(answers, results)]


def understand(model, tokenizer, image: np.ndarray | None, question: str,
               config: SamplingConfig | None = None) -> UniAnswer:
    return understand_many(model, tokenizer, [image], [question], config)[0]


# --- image codes -------------------------------------------------------------------------------------


def _image_header(vocab, h: int, w: int) -> list[int]:
    return [vocab.image_start, vocab.size_id(h), vocab.size_id(w)]  # what precedes an image's codes


def _canvas(prefix: list[int], header: list[int], n_codes: int, rows: int, mask_id: int) -> torch.Tensor:
    ids = prefix + header + [mask_id] * n_codes
    return torch.tensor(ids).repeat(rows, 1)  # (rows, L)


@torch.no_grad()
def sample_codes(model, prompt: list[int], uncond: list[int], n: int, grid: tuple[int, int], cfg: float = 3.0,
                 temperature: float = 1.0, steps: int | None = None, threshold: float = 0.95,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """n code grids (n, h, w) for one prompt, by block diffusion with classifier-free guidance."""
    backbone, vocab = model.backbone, model.config.vocab
    h, w = grid
    n_codes, mask_id = h * w, backbone.config.mask_id
    header = _image_header(vocab, h, w)
    canvases = [_canvas(prompt, header, n_codes, n, mask_id)]
    if cfg != 1.0:
        canvases.append(_canvas(uncond, header, n_codes, n, mask_id))
    masks = [block_causal_mask(c.shape[1], backbone.config.block_size)[None, None] for c in canvases]
    steps = min(steps or n_codes, n_codes)
    lo, hi = vocab.code_range.start, vocab.code_range.stop
    for step in range(steps):
        logits = [backbone(c, attention_mask=m).logits[:, -n_codes:, lo:hi] for c, m in zip(canvases, masks)]
        guided = logits[0] if cfg == 1.0 else logits[1] + cfg * (logits[0] - logits[1])  # (n, hw, K)
        codes = gumbel_argmax(guided, temperature, generator)  # (n, hw)
        conf = torch.softmax(guided.float(), -1).gather(-1, codes[..., None])[..., 0]
        masked = canvases[0][:, -n_codes:] == mask_id
        conf = torch.where(masked, conf, -math.inf)
        left = int(masked[0].sum())
        k = max(1, math.ceil(left / (steps - step)))
        commit = (conf >= threshold) & masked
        commit.scatter_(1, conf.topk(min(k, left), dim=1).indices, True)
        commit &= masked
        for c in canvases:
            c[:, -n_codes:] = torch.where(commit, codes + lo, c[:, -n_codes:])
        if not (canvases[0][:, -n_codes:] == mask_id).any():
            break
    return (canvases[0][:, -n_codes:] - lo).view(n, h, w)


@torch.no_grad()
def decode_codes(model, codes: torch.Tensor, distilled: bool = True, steps: int | None = None,
                 cfg: float | None = None, seed: int = 0) -> np.ndarray:
    """Codes (n, h, w) -> images (n, 2H, 2W) in [0, 1]: the 8-step CFG-free student, or the teacher's
    full ODE with CFG (`cfg` and `steps` default to the decoder config's)."""
    g = torch.Generator().manual_seed(seed)
    if distilled:
        if getattr(model, "student", None) is None:
            raise ValueError("this model ships no distilled decoder; pass distilled=False for the full ODE")
        images = model.student.sample(codes, steps=steps or 8, cfg_scale=1.0, generator=g)
    else:
        images = model.decoder.sample(codes, steps=steps, cfg_scale=cfg, generator=g)
    return np.asarray(images, dtype=np.float32)


def _check_can_draw(model) -> None:
    if model.decoder is None:
        raise ValueError("this model has no image decoder: it cannot draw")


def _grid(model) -> tuple[int, int]:
    side = model.tokenizer.vit.image_size // model.tokenizer.vit.patch_size
    return side, side


def draw(model, tokenizer, prompts: list[str], n: int = 1, seed: int = 0, cfg: float = 3.0,
         temperature: float = 1.0, distilled: bool = True, decoder_steps: int | None = None,
         decoder_cfg: float | None = None, sprint=None) -> np.ndarray:
    """n images per prompt (len(prompts) * n, 2H, 2W) in [0, 1], prompt-major."""
    _check_can_draw(model)
    for p in prompts:
        if not p or not p.strip():
            raise ValueError("the drawing prompt is empty")
    codec, g = codec_of(model, tokenizer), torch.Generator().manual_seed(seed)
    codes = torch.cat([_grids(model, codec.user(p), codec.user(""), n, cfg, temperature, g, sprint, seed)
                       for p in prompts])
    return decode_codes(model, codes, distilled, decoder_steps, decoder_cfg, seed)


def edit(model, tokenizer, image: np.ndarray, instruction: str, n: int = 1, seed: int = 0, cfg: float = 3.0,
         temperature: float = 1.0, distilled: bool = True, decoder_steps: int | None = None,
         sprint=None) -> np.ndarray:
    """Edit `image` ((H, W) in [0, 1]) as `instruction` says -> (n, 2H, 2W) in [0, 1]."""
    _check_can_draw(model)
    if image is None:
        raise ValueError("an edit needs a source image")
    if not instruction or not instruction.strip():
        raise ValueError("the edit instruction is empty")
    codec, g = codec_of(model, tokenizer), torch.Generator().manual_seed(seed)
    source = encode_images(model, [image])[0]
    codes = _grids(model, codec.user(instruction, source), codec.user("", source), n, cfg, temperature, g, sprint,
                   seed)
    return decode_codes(model, codes, distilled, decoder_steps, seed=seed)


def _grids(model, prompt: list[int], uncond: list[int], n: int, cfg: float, temperature: float,
           g: torch.Generator, sprint, seed: int) -> torch.Tensor:
    """n code grids for one prompt: CFG block diffusion, or the engine (no CFG) when SPRINT is on."""
    if sprint is not None:
        return codes_by_engine(model, prompt, n, sprint, seed)
    return sample_codes(model, prompt, uncond, n, _grid(model), cfg, temperature, generator=g)


@torch.no_grad()
def codes_by_engine(model, prompt: list[int], n: int, sprint, seed: int) -> torch.Tensor:
    """Code grids through the engine (greedy, no CFG), the image header given, other ids banned."""
    vocab, (h, w) = model.config.vocab, _grid(model)
    full = prompt + _image_header(vocab, h, w)
    ban = tuple(range(vocab.code_range.start))  # every id before the codes
    cfg = sampling_config(h * w, sprint=sprint, stop_at_eos=False, ban_ids=ban)
    req = Request(full, image_mask=vocab.is_image(full))
    results = BatchEngine(model.backbone, cfg, max_batch=1, generator=torch.Generator().manual_seed(seed)).run([req])
    grid = torch.tensor(results[0].tokens[:h * w]) - vocab.code_range.start
    return grid.view(1, h, w).repeat(n, 1, 1)


def respond(model, tokenizer, text: str, image: np.ndarray | None = None, max_new_tokens: int = 128,
            config: SamplingConfig | None = None, distilled: bool = True) -> UniAnswer:
    """A free answer (interleaved text and images, or thinking before an image); images decoded."""
    cfg = config or sampling_config(max_new_tokens)
    free = dataclasses.replace(cfg, ban_ids=(model.config.llm.mask_id,))  # text and image ids alike
    ans = understand_many(model, tokenizer, [image], [text], free)[0]
    vocab, ids, pieces, codes, last = model.config.vocab, ans.ids, [], [], 0
    for a, b in vocab.image_spans(ids):
        pieces += [tokenizer.decode(ids[last:a]), "[image]"]
        codes.append(vocab.parse_image(ids[a:b]))
        last = b
    pieces.append(tokenizer.decode(ids[last:]))
    images = list(decode_codes(model, torch.stack(codes), distilled)) if codes and model.decoder is not None else []
    return UniAnswer("".join(pieces), ids, ans.forwards, ans.seconds, images)
