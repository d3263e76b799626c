"""Rectified flow over image latents (LLaDA-o's generation process, docs/published/lladao.md).

The path runs from data at t = 0 to noise at t = 1: x_t = (1 - t) x0 + t eps, and the network
predicts the velocity v = eps - x0. Training draws t logit-normal and shifted toward noise
(shift 4); sampling integrates the ODE from t = 1 down to 0 with Euler steps on a shifted grid
(shift 3), x <- x - v dt, with text classifier-free guidance applied only for t in (0.4, 1.0] and the
guided velocity re-scaled so its norm never exceeds the conditional one; editing adds image CFG.

    t = sample_t(B)                            # (B,)
    xt, target = noise_latents(x0, t)          # (B, C, H, W) each
    loss = flow_loss(model_velocity, target)
    x0 = euler_sample(velocity_fn, torch.randn(B, C, H, W), steps=50, shift=3.0)

`velocity_fn(x, t)` takes x (B, ...) and a float t and returns v (B, ...); a CFG wrapper is built
with `guided(...)`.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

# --- schedule ------------------------------------------------------------------------------------


def shift_t(t: torch.Tensor, shift: float) -> torch.Tensor:
    """t' = shift t / (1 + (shift - 1) t): moves time toward the noise end (t = 1) for shift > 1."""
    return shift * t / (1 + (shift - 1) * t)


def sample_t(n: int, shift: float = 4.0, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """Training times: s = sigmoid(z), z ~ N(0, 1) (logit-normal), then shifted. Returns (n,) in (0, 1)."""
    z = torch.randn(n, generator=generator, device=generator.device if generator is not None else device)
    return shift_t(torch.sigmoid(z), shift).to(device or z.device)


def _per_sample(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B,) -> (B, 1, ..., 1) so a time broadcasts over one sample's latent."""
    return t.to(like.dtype).view(-1, *([1] * (like.dim() - 1)))


def noise_latents(x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor | None = None,
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """x_t = (1 - t) x0 + t eps and the velocity target eps - x0. x0 (B, ...), t (B,) -> both (B, ...)."""
    if eps is None:
        eps = torch.randn(x0.shape, generator=generator, device=generator.device if generator else x0.device)
        eps = eps.to(x0)
    tt = _per_sample(t, x0)  # (B, 1, ..., 1)
    return (1 - tt) * x0 + tt * eps, eps - x0


def flow_loss(v_pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error between predicted and target velocities (float32)."""
    return F.mse_loss(v_pred.float(), target.float())


# --- sampling ------------------------------------------------------------------------------------


def timesteps(steps: int, shift: float = 3.0) -> torch.Tensor:
    """The Euler grid: steps + 1 times from 1 to 0, shifted (more steps spent near the noise end)."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    # float32, as the published sampler builds its grid: the CFG interval is compared on these values
    return shift_t(torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float32), shift)  # (steps + 1,)


def euler_sample(velocity_fn: Callable[[torch.Tensor, float], torch.Tensor], x1: torch.Tensor,
                 steps: int = 50, shift: float = 3.0, progress: bool = False, desc: str = "drawing") -> torch.Tensor:
    """Integrate dx/dt = v from t = 1 (x1, noise) down to t = 0: x <- x - v(x, t_i) (t_i - t_{i+1})."""
    grid = timesteps(steps, shift)
    x = x1
    for i in _progress(range(steps), progress, desc):
        t, dt = float(grid[i]), float(grid[i] - grid[i + 1])  # float32 values, like the published dts
        x = x - velocity_fn(x, t).to(x.dtype) * dt  # (B, ...)
    return x


def _progress(it, enabled: bool, desc: str):
    if not enabled:
        return it
    from tqdm.auto import tqdm

    return tqdm(it, desc=desc, leave=False)


# --- classifier-free guidance --------------------------------------------------------------------
# LLaDA-o's published rule (docs/architecture.md, "Drawing"): velocities are packed latent tokens
# (B, tokens, p p C), so `channel` norms are per token, `global` norms per sample.

RENORM_TYPES = ("global", "channel", "text_channel", "none")


def cfg_mix(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Plain classifier-free guidance: uncond + scale (cond - uncond)."""
    return uncond + scale * (cond - uncond)


def _norm(v: torch.Tensor, channel: bool) -> torch.Tensor:
    """Per-sample norm (B, 1, ..., 1), or per-token norm over the last dim when `channel`."""
    if channel:
        return v.float().norm(dim=-1, keepdim=True)
    return v.float().flatten(1).norm(dim=1).view(-1, *([1] * (v.dim() - 1)))


def renorm(guided: torch.Tensor, reference: torch.Tensor, channel: bool = False, min_scale: float = 0.0) -> torch.Tensor:
    """Scale `guided` down so its norm is at most the reference's: guidance steers, never amplifies
    (the scale is clamped to [min_scale, 1])."""
    scale = (_norm(reference, channel) / (_norm(guided, channel) + 1e-8)).clamp(min=min_scale, max=1.0)
    return (guided.float() * scale).to(guided.dtype)


def in_interval(t: float, interval: tuple[float, float]) -> bool:
    """Guidance acts for t in (low, high]: not at the end of sampling, where it oversaturates. The
    comparison is in float32, as the published sampler compares its float32 grid."""
    t32, (lo, hi) = torch.tensor(t, dtype=torch.float32), (torch.tensor(x, dtype=torch.float32) for x in interval)
    return bool(lo < t32) and bool(t32 <= hi)


def cfg_velocity(v_cond: torch.Tensor, v_text_uncond: torch.Tensor, text_scale: float,
                 v_img_uncond: torch.Tensor | None = None, img_scale: float = 1.0,
                 renorm_type: str = "global", renorm_min: float = 0.0) -> torch.Tensor:
    """The guided velocity from the conditional and unconditional ones (all (B, ...)), as published:

    1. text CFG, only when text_scale > 1: v_t = v_un + s_text (v_cond - v_un);
       `text_channel`: v_t re-scaled per token to at most ||v_cond|| now;
    2. image CFG (editing), only with text CFG on and img_scale > 1: v = v_img_un + s_img (v_t - v_img_un);
    3. `global` (per sample) / `channel` (per token): v re-scaled to at most ||v_cond||; `none`: off.
    The re-scaling factor is clamped to [renorm_min, 1].
    """
    if renorm_type not in RENORM_TYPES:
        raise ValueError(f"cfg renorm type must be one of {', '.join(RENORM_TYPES)}, got {renorm_type!r}")
    if text_scale <= 1.0:
        return v_cond  # the published sampler guides nothing (image CFG included) without text CFG
    v = cfg_mix(v_cond, v_text_uncond, text_scale)
    if renorm_type == "text_channel":
        v = renorm(v, v_cond, channel=True, min_scale=renorm_min)
    if v_img_uncond is not None and img_scale > 1.0:
        v = cfg_mix(v, v_img_uncond, img_scale)
    if renorm_type in ("global", "channel"):
        v = renorm(v, v_cond, channel=renorm_type == "channel", min_scale=renorm_min)
    return v


def guided(cond: Callable, text_uncond: Callable | None = None, text_scale: float = 4.0,
           interval: tuple[float, float] = (0.4, 1.0), img_uncond: Callable | None = None,
           img_scale: float = 1.0, renorm_type: str = "global", renorm_min: float = 0.0) -> Callable:
    """A velocity_fn applying CFG (`cfg_velocity`); outside the interval both scales are 1 (no
    guidance), and an unconditional branch runs only where its result is used."""
    if renorm_type not in RENORM_TYPES:
        raise ValueError(f"cfg renorm type must be one of {', '.join(RENORM_TYPES)}, got {renorm_type!r}")

    def velocity(x: torch.Tensor, t: float) -> torch.Tensor:
        v_cond = cond(x, t)
        if text_uncond is None or text_scale <= 1.0 or not in_interval(t, interval):
            return v_cond
        v_img = img_uncond(x, t) if img_uncond is not None and img_scale > 1.0 else None
        return cfg_velocity(v_cond, text_uncond(x, t), text_scale, v_img, img_scale, renorm_type, renorm_min)

    return velocity
