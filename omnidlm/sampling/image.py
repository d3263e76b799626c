"""The image samplers: LLaDA-o's flow ODE over VAE latents, Uni's code grids and its decoder's ODE.

Drawing and editing live here, apart from the models (a model never samples, docs/architecture.md)
and from the text answers (sampling/engine.py, sampling/omni.py, sampling/uni.py).

LLaDA-o (`draw_lladao`, docs/published/lladao.md): [prompt | noisy latents]; Euler ODE from t = 1 to 0 on a
grid shifted by 3.0 (`diffusion.flow.euler_sample`), text CFG (unconditional = the empty prompt)
only for t in the interval, with norm re-scaling; the latents are decoded by the model's VAE.
Editing: the same with a condition image (ViT features and clean VAE latents) and image CFG
(unconditional = no image).

Uni (`draw_uni`, `edit_uni`, docs/published/uni.md): codes are sampled on the canvas
[prompt | <image> <imgsize_h> <imgsize_w> | masks] with block-causal attention (blocks aligned at
position 0, as in training) and no cache: the canvas is a few dozen tokens. Each step keeps the
masked positions' code logits only, mixes conditional and unconditional logits
(l_u + s (l_c - l_u), s = 1: off; the unconditional prompt is the empty one, as in training's
caption dropout), samples a code per position (Gumbel, `temperature`) and commits the most confident
by the engine's rule (`policies.Threshold`: all above `threshold` when at least ceil(remaining /
steps left) are, else that many, most confident first). With a `sprint` setting the codes come from
the engine instead, SPRINT included (no CFG there). The diffusion decoder then draws
pixels from the codes (`decoder_sample`: Euler ODE, time shift 6, optional CFG against its null
condition).

    images = draw_lladao(model, tok, ["a handwritten digit 3"], n=4, seed=0)   # (4, H, W) in [0, 1]
    images = draw_uni(model, tok, ["a handwritten digit 7"], n=4)              # (4, 2H, 2W) in [0, 1]
    edited = edit_uni(model, tok, image, "Change the digit to 7.")             # (1, 2H, 2W)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..data import omni_batches as OB
from ..diffusion import flow
from ..models.latents import decode_latents, encode_latents, patchify, unpatchify, vae_downsample
from ..sequence.masks import block_causal_mask
from ..sequence.segments import text, vae_image
from ..systems.uni import CFG as UNI_CFG
from .engine import BatchEngine, Request
from .policies import Threshold
from .omni import model_image_size, prepare_image
from .reference import gumbel_argmax
from .uni import codec_of, encode_images, sampling_config

# --- LLaDA-o: the flow ODE over VAE latents ------------------------------------------------------------


@dataclass(frozen=True)
class FlowSettings:
    """LLaDA-o's text-to-image knobs, named and meant as the published inferencer's `gen_image`."""

    num_timesteps: int = 31  # points of the grid t = 1 -> 0: num_timesteps - 1 Euler steps
    timestep_shift: float = 3.0  # t' = shift t / (1 + (shift - 1) t) on the grid
    cfg_text_scale: float = 4.0  # text CFG (unconditional: the empty context); <= 1: off
    cfg_img_scale: float = 1.0  # image CFG when editing (unconditional: no image); needs text CFG on
    cfg_interval: tuple[float, float] = (0.4, 1.0)  # CFG acts for t in (low, high]
    cfg_renorm_min: float = 0.0  # the re-scaling factor's lower clamp
    cfg_renorm_type: str = "global"  # global | channel | text_channel (flow.cfg_velocity)

    def __post_init__(self):
        if self.num_timesteps < 2:
            raise ValueError(f"num_timesteps must be at least 2 (one Euler step), got {self.num_timesteps}")
        if self.cfg_renorm_type not in ("global", "channel", "text_channel"):
            raise ValueError(f"cfg_renorm_type must be global, channel or text_channel, got {self.cfg_renorm_type!r}")
        lo, hi = self.cfg_interval
        if not 0.0 <= lo <= hi <= 1.0:
            raise ValueError(f"cfg_interval must be LOW HIGH with 0 <= LOW <= HIGH <= 1, got {lo} {hi}")
        if not 0.0 <= self.cfg_renorm_min <= 1.0:
            raise ValueError(f"cfg_renorm_min must be in [0, 1], got {self.cfg_renorm_min}")

    @classmethod
    def euler(cls, steps: int, **kw) -> "FlowSettings":
        """Settings for `steps` Euler steps (num_timesteps = steps + 1)."""
        return cls(num_timesteps=steps + 1, **kw)

    @property
    def steps(self) -> int:
        return self.num_timesteps - 1


def latent_shape(model, height: int | None = None, width: int | None = None) -> tuple[int, int, int]:
    """(C, H/f, W/f) of the latents of an H x W image (default: the VAE's sample size, square)."""
    f, p = vae_downsample(model.config.vae), model.config.latent_patch_size
    H = height or int(model.config.vae["sample_size"])
    W = width or H
    if H < 1 or W < 1 or H % (f * p) or W % (f * p):
        raise ValueError(f"image height and width must be positive multiples of {f * p} (VAE downsampling {f} x "
                         f"latent patch {p}), got {H}x{W}")
    return model.config.latent_channels, H // f, W // f


def published_sample(prompt_ids: list[int] | None, n_tokens: int, bos: int, eos: int,
                     markers: tuple[int, int]) -> OB.Sample:
    """The published inferencer's layout: [bos] ids [eos] (full attention) | noisy latents with their
    markers at the next position; no prompt (`None`): the empty context, the image at position 0."""
    context = [] if prompt_ids is None else [bos, *prompt_ids, eos]
    segs = ([text(len(context), "full")] if context else []) + [vae_image(n_tokens, noisy=True)]
    return OB.Sample(segs, context + [markers[0]] + [0] * n_tokens + [markers[1]])


class _Rows:
    """A fixed batch of generation rows (one sample each) and its layout; velocities in packed tokens."""

    def __init__(self, model, samples: list[OB.Sample], grid: tuple[int, int]):
        self.batch = OB.collate(samples, model.config.llm.eos_id)
        self.grid, self.p = grid, model.config.latent_patch_size  # latent tokens (h, w), patch size

    def velocity(self, model, x: torch.Tensor, t: float) -> torch.Tensor:
        """x (n, h w, p p C) packed noisy latents -> v (n, h w, p p C) for these rows."""
        noisy = list(unpatchify(x, *self.grid, self.p))  # (C, h p, w p) each
        latents, flags = OB.latents_in_order(self.batch, noisy)
        times = torch.tensor([t if f else 0.0 for f in flags])
        out = model(self.batch.input_ids, self.batch.layout, vit_images=self.batch.vit, latents=latents,
                    timesteps=times, compute_logits=False)
        return patchify(torch.stack([v for v, f in zip(out.velocity, flags) if f]), self.p)


def initial_noise(n: int, shape: tuple[int, int, int], p: int, seed: int) -> torch.Tensor:
    """(n, h w, p p C) packed noise, one torch.randn(h w, p p C) per image from one generator (so
    image 0 is the published `prepare_vae_latent`'s noise after torch.manual_seed(seed))."""
    C, h, w = shape
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randn((h // p) * (w // p), p * p * C, generator=g) for _ in range(n)])


def _solve(model, rows: _Rows, text_un: _Rows | None, img_un: _Rows | None, x1: torch.Tensor,
           settings: FlowSettings, progress: bool) -> torch.Tensor:
    """The guided Euler ODE from packed noise x1 (n, h w, p p C) -> latents (n, C, h p, w p)."""
    def branch(r):
        return (lambda x, t: r.velocity(model, x, t)) if r is not None else None

    fn = flow.guided(branch(rows), branch(text_un), settings.cfg_text_scale, settings.cfg_interval,
                     branch(img_un), settings.cfg_img_scale, settings.cfg_renorm_type, settings.cfg_renorm_min)
    tokens = flow.euler_sample(fn, x1, steps=settings.steps, shift=settings.timestep_shift, progress=progress)
    return unpatchify(tokens, *rows.grid, rows.p)


def _check_can_draw_lladao(model) -> None:
    if not model.can_draw:
        raise ValueError("this model has no generation expert (no VAE / *_moe_gen weights): it cannot draw")


def to_gray(pixels: torch.Tensor) -> torch.Tensor:
    """Decoded pixels (N, 3, H, W) about [-1, 1] -> grayscale images (N, H, W) in [0, 1]."""
    return ((pixels.float().mean(dim=1) + 1) / 2).clamp(0, 1)


def to_uint8(pixels: torch.Tensor) -> np.ndarray:
    """Decoded pixels (N, 3, H, W) -> (N, H, W, 3) uint8 as the published `decode_image` (truncating)."""
    return ((pixels.float() * 0.5 + 0.5).clamp(0, 1) * 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


@torch.no_grad()
def draw_lladao(model, tokenizer, prompts: list[str], n: int = 1, seed: int = 0,
                settings: FlowSettings | None = None, image: np.ndarray | None = None, size: int | None = None,
                progress: bool = False, return_latents: bool = False):
    """Draw `n` images per text prompt with LLaDA-o -> (len(prompts) * n, H, W) in [0, 1] (prompt-major).

    Prompts take the layout the model's recipe trained with (`data/omni_batches.generation_sample`);
    text CFG's unconditional row is the empty prompt. With `image`, edit it: the image is a condition
    (ViT + clean VAE latents) and `cfg_img_scale` > 1 guides toward it (unconditional: no image).
    """
    _check_can_draw_lladao(model)
    if not prompts or any(not p or not p.strip() for p in prompts):
        raise ValueError("the drawing prompt is empty")
    settings = settings or FlowSettings()
    codec, shape, p = OB.PromptCodec(tokenizer), latent_shape(model, size), model.config.latent_patch_size
    grid = (shape[1] // p, shape[2] // p)
    n_vae, cond_px, cond_z, vit_n = grid[0] * grid[1], None, None, 0
    if image is not None:
        if not model.can_see:
            raise ValueError("this model has no vision encoder: it cannot edit an image")
        cond_px = prepare_image(image, model_image_size(model))
        vit_n = (cond_px.shape[-1] // model.vit.patch_size) ** 2
        cond_z = encode_latents(model.vae, prepare_image(image, shape[1] * vae_downsample(model.config.vae))[None])[0]
    wanted = [q for q in prompts for _ in range(n)]

    def rows(texts, with_image=True):
        px, z = (cond_px, cond_z) if with_image else (None, None)
        return _Rows(model, [OB.generation_sample(codec, q, None, n_vae, px, z, vit_n) for q in texts], grid)

    text_un = rows([""] * len(wanted)) if settings.cfg_text_scale > 1.0 else None
    img_un = rows(wanted, False) if image is not None and settings.cfg_img_scale > 1.0 else None
    z = _solve(model, rows(wanted), text_un, img_un, initial_noise(len(wanted), shape, p, seed), settings, progress)
    images = to_gray(decode_latents(model.vae, z)).numpy()  # (N, H, W)
    return (images, z) if return_latents else images


@torch.no_grad()
def draw_lladao_ids(model, prompt_ids: list[int], height: int | None = None, width: int | None = None,
                    settings: FlowSettings | None = None, init_noise: torch.Tensor | None = None, seed: int = 0,
                    markers: tuple[int, int] | None = None, progress: bool = False) -> torch.Tensor:
    """One latent (C, H/f, W/f) for prompt token ids, as the published inferencer draws it: the
    context [bos] ids [eos] (full attention), text CFG against the empty context, the image markers
    `markers` (start, end of image; default the project's). `init_noise` (C, H/f, W/f): the starting noise (default: the
    published draw after torch.manual_seed(seed))."""
    _check_can_draw_lladao(model)
    if not prompt_ids:
        raise ValueError("the drawing prompt (prompt ids) is empty")
    settings, markers = settings or FlowSettings(), markers or (OB.IMG_START, OB.IMG_END)
    shape, p, llm = latent_shape(model, height, width), model.config.latent_patch_size, model.config.llm
    grid = (shape[1] // p, shape[2] // p)
    if init_noise is None:
        x1 = initial_noise(1, shape, p, seed)
    elif tuple(init_noise.shape) != shape:
        raise ValueError(f"the initial noise must be (C, H/f, W/f) = {shape}, got {tuple(init_noise.shape)}")
    else:
        x1 = patchify(init_noise.float()[None], p)  # (1, h w, p p C)

    def rows(ids):
        return _Rows(model, [published_sample(ids, grid[0] * grid[1], llm.bos_id, llm.eos_id, markers)], grid)

    text_un = rows(None) if settings.cfg_text_scale > 1.0 else None
    return _solve(model, rows(list(prompt_ids)), text_un, None, x1, settings, progress)[0]


# --- Uni: code grids by block diffusion ----------------------------------------------------------------


def _image_header(vocab, h: int, w: int) -> list[int]:
    return [vocab.image_start, vocab.size_id(h), vocab.size_id(w)]  # what precedes an image's codes


def _canvas(prefix: list[int], header: list[int], n_codes: int, rows: int, mask_id: int) -> torch.Tensor:
    ids = prefix + header + [mask_id] * n_codes
    return torch.tensor(ids).repeat(rows, 1)  # (rows, L)


@torch.no_grad()
def sample_codes(model, prompt: list[int], uncond: list[int], n: int, grid: tuple[int, int], cfg: float = UNI_CFG,
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
        left = masked.sum(1)  # (n,)
        minimum = torch.clamp(-(-left // (steps - step)), min=1).minimum(left)  # ceil(left / steps left)
        commit = Threshold.commit_rows(conf, minimum, conf.new_full((n,), threshold)) & masked
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


def draw_uni(model, tokenizer, prompts: list[str], n: int = 1, seed: int = 0, cfg: float = UNI_CFG,
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


def edit_uni(model, tokenizer, image: np.ndarray, instruction: str, n: int = 1, seed: int = 0, cfg: float = UNI_CFG,
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
        return flow.cfg_mix(v[:B], v[B:], cfg_scale)  # plain CFG at every step: no interval, no re-scaling

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
