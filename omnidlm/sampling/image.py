"""The image samplers: LLaDA-o's flow ODE over VAE latents, Uni's code grids and its decoder's ODE.

Drawing and editing live here, apart from the models (a model never samples, docs/architecture.md)
and from the text answers (sampling/engine.py, sampling/omni.py, sampling/uni.py).

LLaDA-o (`draw_lladao`, REFERENCE.md §3): [prompt | noisy latents]; Euler ODE from t = 1 to 0 on a
grid shifted by 3.0 (`diffusion.flow.euler_sample`), text CFG (unconditional = the empty prompt)
only for t in the interval, with norm re-scaling; the latents are decoded by the model's VAE.
Editing: the same with a condition image (ViT features and clean VAE latents) and image CFG
(unconditional = no image).

Uni (`draw_uni`, `edit_uni`, REFERENCE.md §4): codes are sampled on the canvas
[prompt | <image> <imgsize_h> <imgsize_w> | masks] with block-causal attention (blocks aligned at
position 0, as in training) and no cache: the canvas is a few dozen tokens. Each step keeps the
masked positions' code logits only, mixes conditional and unconditional logits
(l_u + s (l_c - l_u), s = 1: off; the unconditional prompt is the empty one, as in training's
caption dropout), samples a code per position (Gumbel, `temperature`) and commits the most confident
(at least ceil(remaining / steps left), plus all above `threshold`). With a `sprint` setting the
codes come from the engine instead, SPRINT included (no CFG there). The diffusion decoder then draws
pixels from the codes (`decoder_sample`: Euler ODE, time shift 6, optional CFG against its null
condition).

    images = draw_lladao(model, tok, ["a handwritten digit 3"], n=4, seed=0)   # (4, H, W) in [0, 1]
    images = draw_uni(model, tok, ["a handwritten digit 7"], n=4)              # (4, 2H, 2W) in [0, 1]
    edited = edit_uni(model, tok, image, "Change the digit to 7.")             # (1, 2H, 2W)
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..data import omni_batches as OB
from ..diffusion import flow
from ..models.latents import decode_latents, encode_latents, vae_downsample
from ..sequence.masks import block_causal_mask
from .engine import BatchEngine, Request
from .omni import model_image_size, prepare_image
from .reference import gumbel_argmax
from .uni import codec_of, encode_images, sampling_config

# --- LLaDA-o: the flow ODE over VAE latents ------------------------------------------------------------


def _latent_shape(model, size: int | None) -> tuple[int, int]:
    f = vae_downsample(model.config.vae)
    side = (size or int(model.config.vae["sample_size"])) // f
    if side % model.config.latent_patch_size:
        raise ValueError(f"image size {size} gives {side} latent cells, not a multiple of the latent patch size")
    return model.config.latent_channels, side


class _Rows:
    """A fixed batch of generation rows (same prompt shapes per call) and its layout."""

    def __init__(self, model, codec, prompts: list[str], n_vae: int, cond_pixels=None, cond_latent=None):
        self.vit_n = 0
        if cond_pixels is not None:
            self.vit_n = (cond_pixels.shape[-1] // model.vit.patch_size) ** 2
        samples = [OB.generation_sample(codec, p, None, n_vae, cond_pixels, cond_latent, self.vit_n) for p in prompts]
        self.batch = OB.collate(samples, model.config.llm.eos_id)
        self.n = len(prompts)

    def velocity(self, model, x: torch.Tensor, t: float) -> torch.Tensor:
        """x (n, C, h, w) -> v (n, C, h, w) for these rows."""
        noisy = list(x)
        latents, flags = OB.latents_in_order(self.batch, noisy)
        times = torch.tensor([t if f else 0.0 for f in flags])
        out = model(self.batch.input_ids, self.batch.layout, vit_images=self.batch.vit, latents=latents,
                    timesteps=times, compute_logits=False)
        return torch.stack([v for v, f in zip(out.velocity, flags) if f])


def to_gray(pixels: torch.Tensor) -> torch.Tensor:
    """Decoded pixels (N, 3, H, W) about [-1, 1] -> grayscale images (N, H, W) in [0, 1]."""
    return ((pixels.float().mean(dim=1) + 1) / 2).clamp(0, 1)


@torch.no_grad()
def draw_lladao(model, tokenizer, prompts: list[str], n: int = 1, seed: int = 0, steps: int = 50,
                shift: float = 3.0, cfg: float = 4.0, interval: tuple[float, float] = (0.4, 1.0),
                renorm: str = "global", image: np.ndarray | None = None, img_cfg: float = 1.0,
                progress: bool = False, size: int | None = None, return_latents: bool = False):
    """Draw `n` images per prompt with LLaDA-o -> (len(prompts) * n, H, W) in [0, 1] (prompt-major).

    With `image`, edit it: the image is a condition (ViT + clean VAE latents) and `img_cfg` > 1
    guides toward it (unconditional: the same prompt without the image).
    """
    if not model.can_draw:
        raise ValueError("this model has no generation expert (no VAE / *_moe_gen weights): it cannot draw")
    if not prompts or any(not p or not p.strip() for p in prompts):
        raise ValueError("the drawing prompt is empty")
    codec = OB.PromptCodec(tokenizer)
    C, side = _latent_shape(model, size)
    n_vae = (side // model.config.latent_patch_size) ** 2
    cond_px = cond_z = None
    if image is not None:
        if not model.can_see:
            raise ValueError("this model has no vision encoder: it cannot edit an image")
        cond_px = prepare_image(image, model_image_size(model))
        cond_z = encode_latents(model.vae, prepare_image(image, side * vae_downsample(model.config.vae))[None])[0]
    wanted = [p for p in prompts for _ in range(n)]
    rows = _Rows(model, codec, wanted, n_vae, cond_px, cond_z)
    text_un = _Rows(model, codec, [""] * len(wanted), n_vae, cond_px, cond_z) if cfg != 1.0 else None
    img_un = _Rows(model, codec, wanted, n_vae) if image is not None and img_cfg > 1.0 else None
    fn = flow.guided(lambda x, t: rows.velocity(model, x, t),
                     (lambda x, t: text_un.velocity(model, x, t)) if text_un else None, cfg, interval,
                     (lambda x, t: img_un.velocity(model, x, t)) if img_un else None, img_cfg, renorm)
    g = torch.Generator().manual_seed(seed)
    x1 = torch.randn(len(wanted), C, side, side, generator=g)
    z = flow.euler_sample(fn, x1, steps=steps, shift=shift, progress=progress)
    images = to_gray(decode_latents(model.vae, z)).numpy()  # (N, H, W)
    return (images, z) if return_latents else images


# --- Uni: code grids by block diffusion ----------------------------------------------------------------


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


def _grid(model) -> tuple[int, int]:
    side = model.tokenizer.vit.image_size // model.tokenizer.vit.patch_size
    return side, side


def _grids(model, prompt: list[int], uncond: list[int], n: int, cfg: float, temperature: float,
           g: torch.Generator, sprint, seed: int) -> torch.Tensor:
    """n code grids for one prompt: CFG block diffusion, or the engine (no CFG) when SPRINT is on."""
    if sprint is not None:
        return codes_by_engine(model, prompt, n, sprint, seed)
    return sample_codes(model, prompt, uncond, n, _grid(model), cfg, temperature, generator=g)


@torch.no_grad()
def decode_codes(model, codes: torch.Tensor, distilled: bool = True, steps: int | None = None,
                 cfg: float | None = None, seed: int = 0) -> np.ndarray:
    """Codes (n, h, w) -> images (n, 2H, 2W) in [0, 1]: the 8-step CFG-free student, or the teacher's
    full ODE with CFG (`cfg` and `steps` default to the decoder config's)."""
    g = torch.Generator().manual_seed(seed)
    if distilled:
        if getattr(model, "student", None) is None:
            raise ValueError("this model ships no distilled decoder; pass distilled=False for the full ODE")
        images = decoder_sample(model.student, codes, steps=steps or 8, cfg_scale=1.0, generator=g)
    else:
        images = decoder_sample(model.decoder, codes, steps=steps, cfg_scale=cfg, generator=g)
    return np.asarray(images, dtype=np.float32)


def _check_can_draw(model) -> None:
    if model.decoder is None:
        raise ValueError("this model has no image decoder: it cannot draw")


def draw_uni(model, tokenizer, prompts: list[str], n: int = 1, seed: int = 0, cfg: float = 3.0,
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


def edit_uni(model, tokenizer, image: np.ndarray, instruction: str, n: int = 1, seed: int = 0, cfg: float = 3.0,
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


# --- Uni: the diffusion decoder's ODE (codes -> pixels) ------------------------------------------------


def decoder_velocity(decoder, codes: torch.Tensor | None, cfg_scale: float = 1.0):
    """velocity_fn(x, t) of `decoder` for `flow.euler_sample`; CFG v_un + s (v_cond - v_un), both in
    one batched forward (the unconditional half uses the decoder's learned null condition)."""
    if codes is None or cfg_scale == 1.0:
        return lambda x, t: decoder.velocity(x, t, codes)

    def guided(x: torch.Tensor, t: float) -> torch.Tensor:
        B = x.shape[0]
        keep = torch.arange(2 * B, device=x.device) < B  # first half conditional, second null
        v = decoder.velocity(torch.cat([x, x]), t, torch.cat([codes, codes]), keep)
        # plain CFG at every step: no interval, no norm re-scaling (flow.cfg_velocity's options off)
        return flow.cfg_velocity(v[:B], v[B:], t, cfg_scale, interval=(0.0, 1.0), renorm_mode="none")

    return guided


def decoder_noise(decoder, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Starting latents eps ~ N(0, I) for `decoder`, (B, C, h, w)."""
    ref = decoder.null_cond
    dev = generator.device if generator is not None else ref.device
    return torch.randn(batch, *decoder.latent_shape, generator=generator, device=dev).to(ref)


@torch.no_grad()
def decoder_latents(decoder, codes: torch.Tensor | None, noise: torch.Tensor, steps: int | None = None,
                    cfg_scale: float | None = None, shift: float | None = None,
                    progress: bool = False) -> torch.Tensor:
    """Euler ODE from noise (t = 1) to latents (t = 0); codes None draws unconditionally. Defaults:
    the decoder config's steps / cfg_scale / time_shift (a distilled student: 8 steps, cfg 1)."""
    c = decoder.config
    steps = c.get("steps", 40) if steps is None else steps
    cfg_scale = c.get("cfg_scale", 1.0) if cfg_scale is None else cfg_scale
    shift = c.get("time_shift", 6.0) if shift is None else shift
    if codes is not None:
        decoder.check_codes(codes)
        codes = codes.to(noise.device)
    return flow.euler_sample(decoder_velocity(decoder, codes, cfg_scale), noise, steps, shift, progress, "decoding")


@torch.no_grad()
def decoder_sample(decoder, codes: torch.Tensor, steps: int | None = None, cfg_scale: float | None = None,
                   shift: float | None = None, generator: torch.Generator | None = None, progress: bool = False,
                   noise: torch.Tensor | None = None) -> torch.Tensor:
    """codes (B, grid, grid) long -> images (B, S, S) in [0, 1] through `decoder`'s ODE and its VAE."""
    decoder.check_codes(codes)
    noise = decoder_noise(decoder, codes.shape[0], generator) if noise is None else noise
    return decoder.to_images(decoder_latents(decoder, codes, noise, steps, cfg_scale, shift, progress))
