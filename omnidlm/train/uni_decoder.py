"""Training the LLaDA2.0-Uni diffusion decoder (docs/published/uni.md): flow matching, then few-step distillation.

    1. `train_decoder`: rectified flow on the frozen VAE's latents of the 2x images, conditioned on
       the tokenizer's codes (condition dropout 0.1 for CFG), logit-normal shifted t, AdamW, EMA;
    2. `distill`: the teacher's CFG ODE squeezed into an 8-step student that needs no CFG
       (trajectory regression + a consistency term; see its docstring).

The digits recipe (a tiny VAE at 32x32, the teacher, the student) and its judge-based evaluation:

    from omnidlm.train.uni_decoder import DecoderTrain, digits_data, train_digits_decoder, judge_digits
    codes, pixels, labels = digits_data()                 # stand-in codes until the tokenizer exists
    teacher, student, stats = train_digits_decoder(DecoderTrain(), codes, pixels, progress=True)
    judge_digits(student, codes, labels)                  # {"accuracy": ..., "seconds_per_image": ...}
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ..diffusion import flow
from ..models.latents import encode_latents
from ..models.uni_decoder import DIGITS_DECODER, DIGITS_DECODER_VAE, UniDecoder
from ..sampling.image import decoder_noise, decoder_sample, decoder_velocity
from .loop import Loop, Optim, backprop


@dataclass
class DecoderTrain:
    """Hyper-parameters of the decoder's VAE, teacher and distilled student (defaults: the digits run)."""

    # the VAE (read by `train.omni.train_vae`)
    vae: dict = field(default_factory=lambda: copy.deepcopy(DIGITS_DECODER_VAE))
    vae_steps: int = 300
    vae_batch: int = 64
    vae_lr: float = 2e-3
    vae_kl: float = 1e-4
    # the teacher: flow matching
    steps: int = 1900  # about 3 minutes on one shared CPU thread
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: int = 100
    t_shift: float = 3.0  # training t: logit-normal, shifted toward noise
    cond_drop: float = 0.1  # the null condition replaces the codes (classifier-free guidance)
    ema_decay: float = 0.999  # 0: no EMA
    time_limit: float = 0.0  # seconds; 0: none (stops early, schedule unchanged)
    # the student: distillation
    student_steps: int = 8
    teacher_substeps: int = 4  # teacher Euler steps per student step (8 x 4: the 32-step teacher grid)
    teacher_cfg: float = 2.0
    bank_size: int = 768  # teacher trajectories computed before distillation
    distill_steps: int = 700  # with the bank, about 2 minutes on one thread
    distill_batch: int = 64
    distill_lr: float = 3e-4
    consistency_weight: float = 0.5
    distill_ema: float = 0.99  # the EMA student: consistency target and the returned student
    distill_time_limit: float = 0.0
    seed: int = 0


# --- helpers ---------------------------------------------------------------------------------------


@torch.no_grad()
def encode_all(vae, pixels: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """Pixels (N, 3, H, W) in [-1, 1] -> normalised latent means (N, C, H/f, W/f)."""
    return torch.cat([encode_latents(vae, pixels[i:i + chunk]) for i in range(0, len(pixels), chunk)])


@torch.no_grad()
def flow_loss_on(decoder: UniDecoder, codes: torch.Tensor, latents: torch.Tensor, shift: float = 3.0,
                 seed: int = 0) -> float:
    """The conditional flow loss on fixed (t, eps) draws: a number to compare before / after training."""
    g = torch.Generator().manual_seed(seed)
    t = flow.sample_t(len(latents), shift, g)
    xt, target = flow.noise_latents(latents, t, generator=g)
    return float(flow.flow_loss(decoder.velocity(xt, t, codes), target))


# --- 1. the teacher ---------------------------------------------------------------------------------


def train_decoder(decoder: UniDecoder, codes: torch.Tensor, pixels_2x: torch.Tensor, cfg: DecoderTrain,
                  progress: bool = False, out=None) -> dict:
    """Flow matching on the frozen VAE's latents of `pixels_2x` (N, 3, 2H, 2W) in [-1, 1], conditioned
    on `codes` (N, h, w), on the shared loop (AdamW with decay on every tensor, warm-up + cosine to 0,
    clipping at 1). In place; with EMA the decoder ends with the EMA weights. -> stats."""
    start, g = time.time(), torch.Generator().manual_seed(cfg.seed)
    decoder.check_codes(codes)
    latents = encode_all(decoder.vae, pixels_2x)  # (N, C, h, w)
    optim = Optim(steps=cfg.steps, lr=cfg.lr, schedule="cosine", warmup=cfg.warmup, weight_decay=cfg.weight_decay,
                  decay_all=True, betas=(0.9, 0.99), grad_clip=1.0, ema_decay=cfg.ema_decay)
    loop = Loop(decoder, optim, "decoder", out=out, progress=progress, log_every=10,
                deadline=start + cfg.time_limit if cfg.time_limit else None)

    def loss(step: int) -> dict:
        idx = torch.randint(0, len(latents), (cfg.batch_size,), generator=g)
        t = flow.sample_t(cfg.batch_size, cfg.t_shift, g)  # (B,)
        xt, target = flow.noise_latents(latents[idx], t, generator=g)  # (B, C, h, w) each
        keep = torch.rand(cfg.batch_size, generator=g) >= cfg.cond_drop  # (B,) False: null condition
        return {"loss": flow.flow_loss(decoder.velocity(xt, t, codes[idx], keep), target)}

    decoder.train()
    loop.run(backprop(loss))
    loop.finish()
    return {"steps": loop.step, "seconds": round(time.time() - start, 1),
            "first_loss": loop.mean("loss", first=50), "last_loss": loop.mean("loss", last=50)}


# --- 2. the student -----------------------------------------------------------------------------------


@torch.no_grad()
def teacher_trajectories(teacher: UniDecoder, codes: torch.Tensor, noise: torch.Tensor, cfg: DecoderTrain,
                         chunk: int = 512, progress: bool = False) -> torch.Tensor:
    """The teacher's CFG Euler solve on the (student_steps x teacher_substeps)-step grid, kept at the
    student's grid points t_0 = 1 > ... > t_S = 0. -> (N, S + 1, C, h, w)."""
    from tqdm.auto import tqdm

    S, K = cfg.student_steps, cfg.teacher_substeps
    grid = flow.timesteps(S * K, teacher.config["time_shift"])  # contains the S-step grid every K points
    bar = tqdm(total=-(-len(noise) // chunk) * S * K, desc="teacher trajectories", unit="step", disable=not progress)
    out = []
    for i in range(0, len(noise), chunk):
        x, c = noise[i:i + chunk], codes[i:i + chunk]
        v_fn = decoder_velocity(teacher, c, cfg.teacher_cfg)
        points = [x]
        for j in range(S * K):
            x = x - v_fn(x, float(grid[j])) * float(grid[j] - grid[j + 1])
            if (j + 1) % K == 0:
                points.append(x)
            bar.update(1)
        out.append(torch.stack(points, dim=1))  # (n, S + 1, C, h, w)
    bar.close()
    return torch.cat(out)


def distill(teacher: UniDecoder, cfg: DecoderTrain, codes: torch.Tensor, progress: bool = False,
            out=None) -> tuple[UniDecoder, dict]:
    """Distil the teacher's guided ODE into a `student_steps`-step (8) student that runs without CFG.

    What is implemented, exactly:
      1. a bank: for `bank_size` pairs (codes drawn from `codes`, fresh noise), the teacher's CFG
         (scale `teacher_cfg`) Euler solve over the S K-step grid (shift = the teacher's time_shift),
         kept at the student's grid t_0 = 1 > t_1 > ... > t_S = 0 (S = 8, K = teacher_substeps);
      2. the student starts as a copy of the teacher; each step draws trajectories and an interval n
         uniformly and trains, WITHOUT CFG (the codes always given):
           trajectory loss  |v_s(x_n, t_n) - (x_n - x_{n+1}) / (t_n - t_{n+1})|^2, so that one Euler
                            step of the student over [t_n, t_{n+1}] lands on the teacher's x_{n+1};
           consistency loss |(x_n - t_n v_s(x_n, t_n)) - sg(x_{n+1} - t_{n+1} v_ema(x_{n+1}, t_{n+1}))|^2:
                            the student's x0-estimate at t_n agrees with the EMA student's at the
                            adjacent trajectory point (at t_S = 0 the target is x_S itself);
         loss = trajectory + consistency_weight * consistency; AdamW with 20 warm-up steps and
         cosine decay to 0, clipping at 1, on the shared loop;
      3. the returned student is the EMA student (decay `distill_ema`), with config steps = S,
         cfg_scale = 1, so `decoder_sample(student, codes)` is the 8-step CFG-free sampler. -> (student, stats)
    """
    start, g = time.time(), torch.Generator().manual_seed(cfg.seed + 1)
    teacher.eval()
    teacher.check_codes(codes)
    pick = torch.randint(0, len(codes), (cfg.bank_size,), generator=g)
    bank_codes = codes[pick]
    bank = teacher_trajectories(teacher, bank_codes, decoder_noise(teacher, cfg.bank_size, g), cfg,
                                progress=progress)  # (M, S + 1, C, h, w)
    bank_seconds = time.time() - start
    grid = flow.timesteps(cfg.student_steps, teacher.config["time_shift"]).float()  # (S + 1,)

    student = copy.deepcopy(teacher)
    student.config.update(steps=cfg.student_steps, cfg_scale=1.0)
    target = copy.deepcopy(student).requires_grad_(False)  # the EMA student: the loop's EMA writes into it
    optim = Optim(steps=cfg.distill_steps, lr=cfg.distill_lr, schedule="cosine", warmup=20, betas=(0.9, 0.99),
                  grad_clip=1.0, ema_decay=cfg.distill_ema)
    loop = Loop(student, optim, "distill", ema_into=target, out=out, progress=progress, log_every=10,
                deadline=start + cfg.distill_time_limit if cfg.distill_time_limit else None)

    def loss(step: int) -> dict:
        idx = torch.randint(0, len(bank), (cfg.distill_batch,), generator=g)
        n = torch.randint(0, cfg.student_steps, (cfg.distill_batch,), generator=g)
        x_n, x_next = bank[idx, n], bank[idx, n + 1]  # (B, C, h, w) each
        t_n, t_next = grid[n], grid[n + 1]  # (B,) each
        dt = (t_n - t_next).view(-1, 1, 1, 1)
        v_s = student.velocity(x_n, t_n, bank_codes[idx])  # (B, C, h, w)
        traj = flow.flow_loss(v_s, (x_n - x_next) / dt)
        with torch.no_grad():
            x0_target = x_next - t_next.view(-1, 1, 1, 1) * target.velocity(x_next, t_next, bank_codes[idx])
        cons = flow.flow_loss(x_n - t_n.view(-1, 1, 1, 1) * v_s, x0_target)
        return {"loss": traj + cfg.consistency_weight * cons, "traj": traj, "cons": cons}

    student.train()
    loop.run(backprop(loss))
    target.eval()
    stats = {"steps": loop.step, "seconds": round(time.time() - start, 1), "bank_seconds": round(bank_seconds, 1)}
    for name in ("traj", "cons"):
        stats.update({f"first_{name}_loss": loop.mean(name, first=50), f"last_{name}_loss": loop.mean(name, last=50)})
    return target, stats


# --- 3. the digits recipe -------------------------------------------------------------------------------


def standin_codes(images: np.ndarray, labels: np.ndarray, grid: int = 2, k: int = 4) -> torch.Tensor:
    """Stand-in tokenizer codes until the SigLIP-VQ tokenizer exists: cell (i, j) of a grid x grid split
    of each image gets code label * k + the quantile bin (k bins, per cell over the data set) of the
    cell's mean intensity. Codes carry the label. images (N, H, W) -> (N, grid, grid) long in [0, 10 k)."""
    N, H, W = images.shape
    cells = images.reshape(N, grid, H // grid, grid, W // grid).mean(axis=(2, 4))  # (N, grid, grid)
    edges = np.quantile(cells, np.linspace(0, 1, k + 1)[1:-1], axis=0)  # (k - 1, grid, grid)
    bins = (cells[None] > edges[:, None]).sum(0)  # (N, grid, grid) in [0, k)
    return torch.from_numpy(np.asarray(labels)[:, None, None] * k + bins).long()


def digits_data(k: int = 4) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """The 1500 training digits: stand-in codes of the 16x16 images (N, 2, 2), the 32x32 images as
    pixels (N, 3, 32, 32) in [-1, 1], and the labels (N,)."""
    from ..data.digits import digit_images

    small, labels = digit_images("train", 16)
    big, _ = digit_images("train", 32)
    pixels = torch.from_numpy(big)[:, None].expand(-1, 3, -1, -1).contiguous() * 2 - 1
    return standin_codes(small, labels, 2, k), pixels, labels


def train_digits_decoder(cfg: DecoderTrain, codes: torch.Tensor, pixels_2x: torch.Tensor, config: dict | None = None,
                         progress: bool = False, out=None) -> tuple[UniDecoder, UniDecoder, dict]:
    """The VAE (`train.omni.train_vae`), the teacher and the 8-step student. -> (teacher, student, stats)."""
    from .omni import train_vae

    torch.manual_seed(cfg.seed)
    start = time.time()
    vae = train_vae(cfg, pixels_2x, progress, out, stage="decoder-vae")
    vae_seconds = round(time.time() - start, 1)
    teacher = UniDecoder(dict(config or DIGITS_DECODER, vae=dict(cfg.vae)))
    teacher.load_vae(vae)
    teacher_stats = train_decoder(teacher, codes, pixels_2x, cfg, progress, out)
    student, student_stats = distill(teacher, cfg, codes, progress, out)
    return teacher, student, {"vae_seconds": vae_seconds, "teacher": teacher_stats, "student": student_stats}


def judge_digits(decoder: UniDecoder, codes: torch.Tensor, labels, steps: int | None = None,
                 cfg_scale: float | None = None, seed: int = 0, chunk: int = 500) -> dict:
    """Draw one image per code grid and ask `DigitJudge` whether it shows the right digit."""
    from ..eval.judge import DigitJudge

    g = torch.Generator().manual_seed(seed)
    start = time.time()
    images = torch.cat([decoder_sample(decoder, codes[i:i + chunk], steps, cfg_scale, generator=g)
                        for i in range(0, len(codes), chunk)])  # (N, S, S)
    seconds = time.time() - start
    accuracy = DigitJudge.fit().accuracy(images.numpy(), labels)
    return {"accuracy": accuracy, "seconds_per_image": seconds / len(codes), "images": images}
