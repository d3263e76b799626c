"""Training the LLaDA-o omni model (docs/published/lladao.md) on the real digits: recipe `digits-lladao`.

Its stages run on the shared loop (`train/loop.py`); the model needs images, two processes and a
frozen VAE, which the text trainer (`train/trainer.py`) does not build. Steps:

    1. train a tiny `AutoencoderKL` on the training digits (MSE + small KL), then freeze it and set
       its scale / shift so the latents have zero mean and unit variance;
    2. train the omni model on mixed batches: understanding samples (image -> question -> answer of
       varying length, masked diffusion) and generation samples (caption -> noisy latents, rectified
       flow), with condition dropout for CFG, loss = 0.25 CE + 1.0 MSE, AdamW, EMA 0.995;
    3. save the EMA weights in the published LLaDA-o layout (`formats.lladao.save_lladao`) plus the
       tokenizer and a `train_summary.json`.

    from omnidlm.train.omni import digits_lladao, train_omni
    model, summary = train_omni(digits_lladao(), "runs/lladao")
    omnidlm train --recipe digits-lladao --out runs/lladao      # the same, from a shell
"""

from __future__ import annotations

import dataclasses
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..config import ModelConfig
from ..data import omni_batches as OB
from ..data.char_tokenizer import build_char_tokenizer, special_ids
from ..diffusion import flow
from ..diffusion import masked as M
from ..formats.io import write_json
from ..models.latents import build_vae, encode_latents
from ..models.lladao import LLaDAO, LLaDAOConfig
from ..sequence.tokenizer import Tokenizer
from . import checkpoint as C
from .loop import Loop, Optim, backprop, cpu_numerics
from .vision import VisionPretrain, pretrain_vision

DIGITS_VIT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=2,
                  num_channels=3, image_size=16, patch_size=4, hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6)
DIGITS_VAE = dict(in_channels=3, out_channels=3, latent_channels=4,
                  down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
                  block_out_channels=[16, 32], layers_per_block=1, norm_num_groups=8, act_fn="silu",
                  sample_size=16, scaling_factor=1.0, shift_factor=0.0,
                  use_quant_conv=False, use_post_quant_conv=False, mid_block_add_attention=False)


@dataclass
class OmniTrainConfig:
    """What an omni run computes: the model, the data mix, the two processes, the optimisation."""

    recipe: str = "custom"
    image_size: int = 16
    hidden_size: int = 128
    n_layers: int = 3
    n_heads: int = 4
    intermediate_size: int = 256
    vit: dict = field(default_factory=lambda: dict(DIGITS_VIT))
    vae: dict = field(default_factory=lambda: dict(DIGITS_VAE))
    # VAE pre-training
    vae_steps: int = 200
    vae_batch: int = 64
    vae_lr: float = 2e-3
    vae_kl: float = 1e-4
    # omni training
    steps: int = 2000
    batch_size: int = 24
    gen_fraction: float = 0.35  # share of generation samples in a batch
    und_warmup: int = 0  # first steps with understanding samples only (reading the image is the slow part)
    kinds: tuple = ("word", "word", "word", "describe", "arithmetic")  # question mix (word questions 3x)
    lr: float = 1.5e-3
    weight_decay: float = 0.01
    warmup: int = 50
    ce_weight: float = 0.25
    mse_weight: float = 1.0
    t_shift: float = 4.0  # logit-normal t, shifted (LLaDA-o: 4)
    text_drop: float = 0.1
    vit_drop: float = 0.3
    vae_drop: float = 0.3
    p_ext: float = 0.1  # adaptive length: extra EOS
    p_trunc: float = 0.1  # adaptive length: truncated prefix (answers longer than 16)
    p_pad_block: float = 0.3  # pad the answer with EOS up to the sampler's block (32), as it decodes
    block_length: int = 32
    p_full_mask: float = 0.5  # rows whose answer is masked entirely (else p ~ U(eps, 1)); see README
    pack_capacity: int = 136  # tokens per packed row (documents never see each other)
    shift_augment: int = 1  # ViT images moved by up to this many pixels
    affine_augment: tuple = ()  # (degrees, zoom, translate px): random affine of ViT images instead of shifts
    ema_decay: float = 0.995
    vision_lr_mult: float = 1.0  # the ViT and connector train at lr * this
    vit_pretrain: VisionPretrain | None = None  # pretrain the ViT to name digits first (train/vision.py)
    freeze_vit: bool = False  # keep the (pretrained) ViT fixed during omni training
    seed: int = 0
    threads: int = 1  # one thread: on a shared 2-core machine two threads ran 10x slower (idle: 0.33 vs 0.26 s/step)
    time_limit: float = 0.0  # seconds; 0: no limit (stop early, schedule unchanged)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def with_max_steps(self, n: int) -> "OmniTrainConfig":
        """`--max-steps n`: the omni stage runs n steps, the VAE and ViT stages at most n."""
        vit = dataclasses.replace(self.vit_pretrain, steps=min(self.vit_pretrain.steps, n)) if self.vit_pretrain else None
        return dataclasses.replace(self, steps=n, vae_steps=min(self.vae_steps, n), vit_pretrain=vit)


def digits_lladao() -> OmniTrainConfig:
    """Recipe `digits-lladao`: the shipped `models/lladao-digits` (VAE included) on 2 CPU cores.

    The ViT (patch 8: four tokens per digit) is first pretrained to name digits on randomly rotated,
    zoomed and shifted images (`train/vision.py`, the stand-in for a pretrained SigLIP), then trains
    on at a tenth of the learning rate; understanding images are augmented the same way.
    """
    return OmniTrainConfig(recipe="digits-lladao", time_limit=870.0, vit=dict(DIGITS_VIT, patch_size=8),
                           vit_pretrain=VisionPretrain(steps=8000), vision_lr_mult=0.1,
                           affine_augment=(10.0, 0.1, 1.0), steps=2600, gen_fraction=0.25, und_warmup=100,
                           p_full_mask=0.7, kinds=("word", "word", "word", "word", "describe", "arithmetic"))


def digits_lladao_tiny() -> OmniTrainConfig:
    """A seconds-long smoke run for tests."""
    return OmniTrainConfig(recipe="digits-lladao-tiny", hidden_size=32, n_layers=1, n_heads=2, intermediate_size=64,
                           vit=dict(DIGITS_VIT, hidden_size=16, intermediate_size=32, num_hidden_layers=2),
                           vae_steps=2, vae_batch=8, steps=3, batch_size=4, warmup=1)


OMNI_RECIPES = {"digits-lladao": digits_lladao, "digits-lladao-tiny": digits_lladao_tiny}


# --- the model ------------------------------------------------------------------------------------


def model_config(cfg: OmniTrainConfig, vae: dict | None = None) -> LLaDAOConfig:
    ids = special_ids(build_char_tokenizer())
    llm = ModelConfig(vocab_size=OB.OMNI_VOCAB, hidden_size=cfg.hidden_size, n_layers=cfg.n_layers,
                      n_heads=cfg.n_heads, intermediate_size=cfg.intermediate_size, qk_norm=True,
                      max_seq_len=512, rope_theta=10000.0, **ids)
    side = cfg.image_size // cfg.vit["patch_size"]
    return LLaDAOConfig(llm=llm, vit=dict(cfg.vit), vae=dict(vae or cfg.vae), latent_patch_size=2,
                        max_latent_size=max(2, cfg.image_size // 4), vit_max_patches_per_side=side)


# --- step 1: the VAE ------------------------------------------------------------------------------


def train_vae(cfg, pixels: torch.Tensor, progress: bool = False, out=None, stage: str = "vae") -> torch.nn.Module:
    """Train a tiny AutoencoderKL on `pixels` (N, 3, H, W) in [-1, 1]; returns it frozen, with its
    scaling / shift factors set from the training latents (zero mean, unit variance).
    cfg: any config with vae, vae_steps, vae_batch, vae_lr, vae_kl, seed (constant lr, no decay)."""
    g = torch.Generator().manual_seed(cfg.seed)
    vae = build_vae(cfg.vae)
    loop = Loop(vae, Optim(steps=cfg.vae_steps, lr=cfg.vae_lr), stage, out=out, progress=progress, log_every=10)

    def loss(step: int) -> dict:
        x = pixels[torch.randint(0, len(pixels), (cfg.vae_batch,), generator=g)]  # (b, 3, H, W)
        post = vae.encode(x).latent_dist
        recon = vae.decode(post.sample(g)).sample
        return {"loss": torch.nn.functional.mse_loss(recon, x) + cfg.vae_kl * post.kl().mean() / x[0].numel()}

    loop.run(backprop(loss))
    vae.requires_grad_(False).eval()
    with torch.no_grad():
        z = torch.cat([vae.encode(pixels[i:i + 256]).latent_dist.mean for i in range(0, len(pixels), 256)])
    shift, std = float(z.mean()), float(z.std())
    vae.register_to_config(scaling_factor=1.0 / std, shift_factor=shift)
    return vae


# --- step 2: batches and losses ---------------------------------------------------------------------


class DigitsOmniData:
    """Mixed understanding / generation batches over the training digits (images 0-1499 only)."""

    def __init__(self, cfg: OmniTrainConfig, pixels: torch.Tensor, labels, latents: torch.Tensor, codec):
        self.cfg, self.pixels, self.labels, self.latents, self.codec = cfg, pixels, labels, latents, codec
        self.n_vit = OB.image_tokens(cfg.image_size, cfg.vit["patch_size"])
        self.n_vae = (latents.shape[-1] // 2) ** 2
        self.eos = codec.tok.token_id("<|endoftext|>")
        self.drop = OB.Dropout(cfg.text_drop, cfg.vit_drop, cfg.vae_drop)

    def answer_ids(self, answer: str, rng: random.Random) -> list[int]:
        """Adaptive length (LLaDA-o), then, sometimes, EOS padding to the sampler's block."""
        ids = M.adaptive_length(self.codec.answer(answer), self.eos, rng, self.cfg.p_ext, self.cfg.p_trunc)
        if ids and ids[-1] == self.eos and rng.random() < self.cfg.p_pad_block:
            ids += [self.eos] * (-len(ids) % self.cfg.block_length)
        return ids

    def understanding(self, i: int, rng: random.Random) -> OB.Sample:
        from ..data.digits import question_answer

        q, a = question_answer(int(self.labels[i]), rng.choice(self.cfg.kinds), rng)
        img = self.pixels[i]
        if self.cfg.affine_augment:
            img = OB.affine_image(img, rng, *self.cfg.affine_augment)
        elif self.cfg.shift_augment:
            img = OB.shift_image(img, rng, self.cfg.shift_augment)
        return OB.understanding_sample(self.codec, img, self.n_vit, q, self.answer_ids(a, rng))

    def generation(self, i: int, rng: random.Random) -> OB.Sample:
        from ..data.digits import caption

        prompt, _, _ = OB.drop_conditions(caption(int(self.labels[i])), None, None, self.drop, rng)
        return OB.generation_sample(self.codec, prompt, self.latents[i], self.n_vae)

    def batch(self, step: int) -> OB.Batch:
        rng = random.Random(self.cfg.seed * 1_000_003 + step)
        n_gen = 0 if step < self.cfg.und_warmup else round(self.cfg.batch_size * self.cfg.gen_fraction)
        samples = [self.generation(rng.randrange(len(self.labels)), rng) for _ in range(n_gen)]
        samples += [self.understanding(rng.randrange(len(self.labels)), rng)
                    for _ in range(self.cfg.batch_size - n_gen)]
        return OB.collate(samples, self.eos, self.cfg.pack_capacity)


def omni_losses(model: LLaDAO, batch: OB.Batch, cfg: OmniTrainConfig, g: torch.Generator | None = None) -> dict:
    """One forward of a mixed batch -> {'loss', 'ce', 'mse'} (ce / mse are detached floats or 0).

    1. text: mask answer tokens with p ~ U(eps, 1) (p = 1 for a `p_full_mask` share of the rows: the
       state every answer starts from, where only the image tells the digit), LLaDA-o weighted CE
       (1 / (sqrt(len) p));
    2. latents: t logit-normal shifted, x_t = (1 - t) x0 + t eps, MSE to v = eps - x0;
    3. loss = ce_weight * CE + mse_weight * MSE.
    """
    mask_id = model.config.llm.mask_id
    B = batch.input_ids.shape[0]
    p_mask = M.sample_t(B, generator=g)  # (B,)
    if cfg.p_full_mask > 0:  # the sampler starts from a fully masked answer: train that state more often
        full = torch.rand(B, generator=g) < cfg.p_full_mask
        p_mask = torch.where(full, torch.ones_like(p_mask), p_mask)
    xt, is_masked = M.forward_mask(batch.input_ids, p_mask, mask_id, batch.answer_mask, generator=g)  # (B, L)
    n = len(batch.targets)
    t = flow.sample_t(n, cfg.t_shift, generator=g) if n else torch.zeros(0)  # (n,)
    noisy, targets = [], []
    for x0, ti in zip(batch.targets, t):
        z, v = flow.noise_latents(x0[None], ti.reshape(1), generator=g)
        noisy.append(z[0]), targets.append(v[0])
    latents, flags = OB.latents_in_order(batch, noisy)
    times = torch.zeros(len(latents))
    times[torch.tensor(flags, dtype=torch.bool)] = t if n else times[:0]
    out = model(xt, batch.layout, vit_images=batch.vit, latents=latents, timesteps=times)
    ce = M.lladao_text_loss(out.logits, batch.input_ids, is_masked, p_mask, batch.answer_mask, batch.doc_ids)
    preds = [v for v, noisy_flag in zip(out.velocity, flags) if noisy_flag]
    mse = flow.flow_loss(torch.stack(preds), torch.stack(targets)) if preds else out.logits.sum() * 0.0
    loss = cfg.ce_weight * ce + cfg.mse_weight * mse
    return {"loss": loss, "ce": float(ce.detach()), "mse": float(mse.detach())}


# --- step 3: the loop -------------------------------------------------------------------------------


def train_omni(cfg: OmniTrainConfig, out: str | Path | None = None, progress: bool = True,
               force: bool = False) -> tuple[LLaDAO, dict]:
    """Run the whole recipe (VAE, ViT, omni); save to `out` when given (a non-empty `out` only with
    `force`; each stage's records go to `out/metrics.jsonl`). -> (EMA model, summary)."""
    from ..data.digits import digit_images

    run = C.prepare_run(out, force) if out is not None else None
    with cpu_numerics(cfg.threads):
        torch.manual_seed(cfg.seed)
        start = time.time()
        images, labels = digit_images("train", cfg.image_size)
        pixels = OB.to_pixels(images)  # (1500, 3, S, S)
        vae = train_vae(cfg, pixels, progress, out=run)
        with torch.no_grad():
            latents = encode_latents(vae, pixels)  # (1500, C, S/2, S/2)
        vae_seconds = time.time() - start
        model = LLaDAO(model_config(cfg, dict(vae.config)))
        model.vae.load_state_dict(vae.state_dict())
        vit_stats = pretrain_tower(model, cfg, pixels, labels, progress, run) if cfg.vit_pretrain else {}
        if cfg.freeze_vit:
            model.vit.requires_grad_(False)
        codec = OB.PromptCodec(Tokenizer(build_char_tokenizer()))
        data = DigitsOmniData(cfg, pixels, labels, latents, codec)
        metrics = fit(model, data, cfg, progress, start, run)
        summary = {"recipe": cfg.recipe, "seconds": round(time.time() - start, 1), "vae_seconds": round(vae_seconds, 1),
                   "parameters": model.num_parameters(), **vit_stats, **metrics, "config": cfg.to_dict()}
        if run is not None:
            with C.keeping(run, ["metrics.jsonl"]):  # the save replaces the directory
                save_omni(model, run, summary)
        return model, summary


def pretrain_tower(model: LLaDAO, cfg: OmniTrainConfig, pixels: torch.Tensor, labels, progress: bool,
                   out=None) -> dict:
    """Step 1b: the ViT learns to name digits (the pretrained-SigLIP stand-in); -> its accuracies."""
    from ..data.digits import digit_images

    start = time.time()
    held_images, held_labels = digit_images("heldout", cfg.image_size)
    stats = pretrain_vision(model.vit, pixels, labels, cfg.vit_pretrain, (OB.to_pixels(held_images), held_labels),
                            progress=progress, out=out)
    return {"vit_pretrain": {**stats, "seconds": round(time.time() - start, 1)}}


def omni_loop(model: LLaDAO, cfg: OmniTrainConfig, progress: bool = False, out=None, deadline=None) -> Loop:
    """AdamW (betas 0.9 / 0.98; the ViT and connector at `vision_lr_mult`), warm-up + cosine to 10%,
    clipping at 1, EMA of the weights."""
    optim = Optim(steps=cfg.steps, lr=cfg.lr, schedule="cosine", warmup=cfg.warmup, min_lr_ratio=0.1,
                  weight_decay=cfg.weight_decay, betas=(0.9, 0.98), grad_clip=1.0, ema_decay=cfg.ema_decay)
    vision = lambda name: cfg.vision_lr_mult if name.startswith(("vit.", "connector.")) else 1.0  # noqa: E731
    return Loop(model, optim, "lladao", lr_mult=vision, out=out, progress=progress, log_every=10, deadline=deadline)


def fit(model: LLaDAO, data: DigitsOmniData, cfg: OmniTrainConfig, progress: bool, start: float, out=None) -> dict:
    """The omni stage on the shared loop; the model ends with the EMA weights, in eval mode."""
    g = torch.Generator().manual_seed(cfg.seed + 1)
    loop = omni_loop(model, cfg, progress, out, start + cfg.time_limit if cfg.time_limit else None)
    model.train()
    loop.run(backprop(lambda step: omni_losses(model, data.batch(step), cfg, g)))
    loop.finish()
    return {"steps": loop.step, "final_ce": round(loop.mean("ce", last=50), 4),
            "final_mse": round(loop.mean("mse", last=50), 4)}


def save_omni(model: LLaDAO, out: str | Path, summary: dict | None = None, overwrite: bool = True) -> Path:
    """The published LLaDA-o layout, plus `tokenizer.json` and `train_summary.json`."""
    from ..formats.lladao import save_lladao

    path = save_lladao(model, out, overwrite=overwrite)
    Tokenizer(build_char_tokenizer()).save(path / "tokenizer.json")
    if summary is not None:
        write_json(path / "train_summary.json", summary)
    return path
