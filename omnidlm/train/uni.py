"""Training LLaDA2.0-Uni (docs/published/uni.md) on the real digits: recipe `digits-uni`.

Three parts are trained in turn, each frozen before the next:

    1. the SigLIP-VQ image tokenizer, with an understanding objective (it must name the digit from
       its codes; `train/vq.py`); then every training digit is tokenized, plus augmented copies;
    2. the diffusion decoder (codes -> 32x32 pixels, 2x the tokenizer's 16x16) on a tiny VAE, then
       its distillation into an 8-step CFG-free student (`train/uni_decoder.py`);
    3. the MoE backbone by block diffusion over [prompt | answer] sequences of every task
       (`data/uni_batches.py`): [x_t | x_0] inputs, t ~ U[t_low, t_high], complementary masking, Mask
       Token Reweighting, AdamW, EMA, and after each step the auxiliary-loss-free expert-bias update.

    from omnidlm.train.uni import digits_uni, train_uni
    model, summary = train_uni(digits_uni(), "runs/uni")
    omnidlm train --recipe digits-uni --out runs/uni     # the same, from a shell
    omnidlm train --recipe digits-uni-tune --out runs/uni-tune init_from=runs/uni   # stage 3 again, tuned

With `init_from` (recipe `digits-uni-tune`) parts 1 and 2 are those of that model, frozen, and only
the backbone trains on the recipe's task mix.

Every part trains on the shared loop (`train/loop.py`).
"""

from __future__ import annotations

import dataclasses
import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..config import ModelConfig
from ..data import uni_batches as UB
from ..data.char_tokenizer import build_char_tokenizer, special_ids
from ..data.omni_batches import to_pixels
from ..diffusion import masked as M
from ..formats.io import write_json
from ..sequence.tokenizer import Tokenizer
from ..data.augment import random_affine
from . import checkpoint as C
from .loop import Loop, Optim, backprop, cpu_numerics

DEFAULT_TASKS = {"understanding": 0.45, "t2i": 0.3, "edit": 0.1, "interleaved": 0.075, "thinking": 0.075}


@dataclass
class UniTrainConfig:
    """What a Uni run computes: the three parts, the task mix, the optimisation."""

    recipe: str = "custom"
    image_size: int = 16  # what the tokenizer reads; the decoder draws at 2x
    vq: dict | None = None  # SiglipVQ config; None: models/vq.py DIGITS_VQ
    tokenizer_steps: int = 5000
    augmented_copies: int = 8  # code grids per training digit: the original + randomly moved copies
    decoder: dict | None = None  # UniDecoder config; None: models/uni_decoder.py DIGITS_DECODER
    decoder_train: dict = field(default_factory=dict)  # overrides of train/uni_decoder.py's DecoderTrain
    # backbone (LLaDA2.0-style MoE)
    hidden_size: int = 96
    n_layers: int = 3
    n_heads: int = 4
    n_kv_heads: int = 2
    intermediate_size: int = 192  # the dense first layer
    n_experts: int = 8
    n_experts_per_tok: int = 2
    moe_intermediate_size: int = 96
    n_group: int = 2
    topk_group: int = 1
    block_size: int = 32
    row_length: int = 160  # the longest row (rows are cut to whole blocks past their longest example)
    # training
    steps: int = 1800
    batch_size: int = 12  # examples; complementary masking doubles the rows
    lr: float = 1.5e-3
    weight_decay: float = 0.01
    warmup: int = 50
    t_low: float = 0.3  # t ~ U[t_low, t_high] (published BDLM: 0.3-0.8; see digits_uni)
    t_high: float = 0.8
    complementary: bool = True
    reweight: bool = True  # Mask Token Reweighting
    balance_rate: float = 1e-3  # expert-bias update rate u
    text_drop: float = 0.1  # t2i captions dropped (the unconditional prompt for CFG)
    tasks: dict = field(default_factory=lambda: dict(DEFAULT_TASKS))
    ema_decay: float = 0.995
    seed: int = 0
    threads: int = 1
    time_limit: float = 0.0  # seconds for the whole recipe; 0: none (the backbone stops early)
    init_from: str | None = None  # fine-tune this Uni model's backbone; its tokenizer and decoders stay as they are

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def with_max_steps(self, n: int) -> "UniTrainConfig":
        """`--max-steps n`: the backbone runs n steps; the tokenizer, VAE, decoder and distillation at most n."""
        from .uni_decoder import DecoderTrain

        base, decoder = DecoderTrain(), dict(self.decoder_train)
        for key in ("vae_steps", "steps", "distill_steps"):
            decoder[key] = min(decoder.get(key, getattr(base, key)), n)
        return dataclasses.replace(self, steps=n, tokenizer_steps=min(self.tokenizer_steps, n), decoder_train=decoder)


def digits_uni() -> UniTrainConfig:
    """Recipe `digits-uni`: the shipped `models/uni-digits` on 2 CPU cores, in at most 20 minutes.

    t reaches 1 (the published 0.3-0.8 never masks a whole answer; the sampler starts from one).
    """
    return UniTrainConfig(recipe="digits-uni", time_limit=1150.0, t_high=1.0, decoder_train=dict(vae_steps=150))


def digits_uni_tiny() -> UniTrainConfig:
    """A seconds-long smoke run for tests."""
    from ..models.latents import TINY_VAE
    from ..models.uni_decoder import DIGITS_DECODER
    from ..models.vq import DIGITS_VQ

    vit = dict(DIGITS_VQ["vit"], hidden_size=16, intermediate_size=32, num_hidden_layers=2)
    return UniTrainConfig(recipe="digits-uni-tiny", tokenizer_steps=3, augmented_copies=2,
                          vq=dict(DIGITS_VQ, vit=vit, codebook_size=16, code_dim=8),
                          decoder=dict(DIGITS_DECODER, hidden_size=32, n_layers=1, n_heads=2, mlp_ratio=2,
                                       code_pixels=8, vae=dict(TINY_VAE, sample_size=32)),
                          decoder_train=dict(vae=dict(TINY_VAE, sample_size=32), vae_steps=2, vae_batch=8, steps=2,
                                             batch_size=8, distill_steps=2, distill_batch=8, bank_size=8),
                          hidden_size=32, n_layers=2, n_heads=2, n_kv_heads=1,
                          intermediate_size=64, n_experts=4, moe_intermediate_size=16, steps=3, batch_size=4,
                          warmup=1)


TUNE_TASKS = {"understanding": 0.15, "t2i": 0.1, "edit": 0.1, "interleaved": 0.5, "thinking": 0.15}


def digits_uni_tune() -> UniTrainConfig:
    """Recipe `digits-uni-tune`: a `digits-uni` model's backbone fine-tuned on a mix weighted towards
    the interleaved and thinking answers (half the batches interleaved), the other tasks kept in
    the mix so they do not regress; the tokenizer and decoders are reused as they are. The shipped
    `models/uni-digits` is this recipe run once on the `digits-uni` model (so running it again on
    the shipped model tunes it a second time; `init_from=runs/uni` for a fresh `digits-uni` run)."""
    return UniTrainConfig(recipe="digits-uni-tune", init_from="models/uni-digits", steps=450, lr=8e-4, warmup=20,
                          t_high=1.0, tasks=dict(TUNE_TASKS), time_limit=1500.0, seed=1, threads=2)


UNI_RECIPES = {"digits-uni": digits_uni, "digits-uni-tiny": digits_uni_tiny, "digits-uni-tune": digits_uni_tune}


# --- the parts ------------------------------------------------------------------------------------


def vocab_for(vq_cfg: dict):
    from ..models.uni import UniVocab

    side = vq_cfg["vit"]["image_size"] // vq_cfg["vit"]["patch_size"]
    return UniVocab.for_text(Tokenizer(build_char_tokenizer()).vocab_size, max_side=max(side, 8),
                             codebook_size=vq_cfg["codebook_size"])


def backbone_config(cfg: UniTrainConfig, vocab) -> ModelConfig:
    return ModelConfig(vocab_size=vocab.total, hidden_size=cfg.hidden_size, n_layers=cfg.n_layers,
                       n_heads=cfg.n_heads, n_kv_heads=cfg.n_kv_heads, intermediate_size=cfg.intermediate_size,
                       qk_norm=True, partial_rotary_factor=0.5, rope_theta=10000.0, max_seq_len=512,
                       n_experts=cfg.n_experts, n_experts_per_tok=cfg.n_experts_per_tok, n_shared_experts=1,
                       moe_intermediate_size=cfg.moe_intermediate_size, n_group=cfg.n_group,
                       topk_group=cfg.topk_group, routed_scaling_factor=2.5, first_k_dense=1,
                       attention="block", block_size=cfg.block_size, **special_ids(build_char_tokenizer()))


@torch.no_grad()
def tokenize_augmented(vq, pixels: torch.Tensor, copies: int, seed: int) -> torch.Tensor:
    """Codes (copies, N, h, w): copy 0 of the images as they are, the others randomly moved."""
    from .vision import VisionPretrain
    from .vq import tokenize_digits

    aug, g = VisionPretrain(), torch.Generator().manual_seed(seed)
    moved = (random_affine(pixels, g, aug.degrees, aug.zoom, aug.translate) for _ in range(copies - 1))
    return torch.stack([tokenize_digits(vq, x) for x in (pixels, *moved)])


def train_tokenizer_part(cfg: UniTrainConfig, pixels, labels, progress: bool, out=None):
    from ..data.digits import digit_images
    from ..models.vq import DIGITS_VQ, SiglipVQ
    from .vq import TokenizerTrain, train_tokenizer

    vq = SiglipVQ(dict(cfg.vq or DIGITS_VQ))
    held, held_labels = digit_images("heldout", cfg.image_size)
    stats = train_tokenizer(vq, pixels, labels, TokenizerTrain(steps=cfg.tokenizer_steps, seed=cfg.seed),
                            heldout=(to_pixels(held), held_labels), progress=progress, out=out)
    return vq.requires_grad_(False).eval(), stats


def train_decoder_part(cfg: UniTrainConfig, codes: torch.Tensor, codebook_size: int, progress: bool, out=None):
    """-> (teacher, student, stats): a VAE for the 2x images, the full-ODE decoder on its latents, and
    the decoder's 8-step distillation; codes (N, h, w) of the training digits."""
    from ..data.digits import digit_images
    from ..models.uni_decoder import DIGITS_DECODER
    from .uni_decoder import DecoderTrain, train_digits_decoder

    images_2x, _ = digit_images("train", 2 * cfg.image_size)
    train_cfg = dataclasses.replace(DecoderTrain(), **cfg.decoder_train)
    config = {**(cfg.decoder or DIGITS_DECODER), "codebook_size": codebook_size, "grid": codes.shape[-1]}
    return train_digits_decoder(train_cfg, codes, to_pixels(images_2x), config, progress, out)


# --- the backbone -----------------------------------------------------------------------------------


def bdlm_step_loss(backbone, x0: torch.Tensor, maskable: torch.Tensor, cfg: UniTrainConfig,
                   g: torch.Generator) -> torch.Tensor:
    """Block diffusion on [x_t | x_0]: t ~ U[t_low, t_high], complementary copy, MTR-weighted CE."""
    t = M.sample_bdlm_t(x0.shape[0], cfg.t_low, cfg.t_high, generator=g)
    inp = M.bdlm_inputs(x0, t, cfg.block_size, backbone.config.mask_id, maskable, g, cfg.complementary)
    out = backbone(inp.input_ids, attention_mask=inp.attention_mask[None, None], position_ids=inp.position_ids[None])
    L = x0.shape[1]
    return M.bdlm_loss(out.logits[:, :L], inp.x0, inp.is_masked, reweight=cfg.reweight)


def fit_backbone(backbone, tasks: UB.DigitsUniTasks, cfg: UniTrainConfig, progress: bool, start: float,
                 out=None) -> dict:
    """The backbone stage on the shared loop: AdamW (betas 0.9 / 0.98), warm-up + cosine to 10%,
    clipping at 1, EMA, and (a MoE model) expert-bias balancing after every step. The backbone
    ends with the EMA weights, in eval mode."""
    optim = Optim(steps=cfg.steps, lr=cfg.lr, schedule="cosine", warmup=cfg.warmup, min_lr_ratio=0.1,
                  weight_decay=cfg.weight_decay, betas=(0.9, 0.98), grad_clip=1.0, ema_decay=cfg.ema_decay,
                  balance_rate=cfg.balance_rate)
    loop = Loop(backbone, optim, "uni", out=out, progress=progress, log_every=10,
                deadline=start + cfg.time_limit if cfg.time_limit else None)
    g, eos = torch.Generator().manual_seed(cfg.seed + 1), backbone.config.eos_id

    def loss(step: int) -> dict:
        rng = random.Random(cfg.seed * 1_000_003 + step)
        x0, maskable = UB.collate([tasks.example(rng) for _ in range(cfg.batch_size)], cfg.row_length, eos,
                                 cfg.block_size)
        return {"loss": bdlm_step_loss(backbone, x0, maskable, cfg, g)}

    backbone.train()
    loop.run(backprop(loss))
    loop.finish()
    return {"steps": loop.step, "final_loss": round(loop.mean("loss", last=50), 4), "expert_balance": loop.balance}


# --- the recipe --------------------------------------------------------------------------------------


def train_uni(cfg: UniTrainConfig, out: str | Path | None = None, progress: bool = True, force: bool = False):
    """Tokenizer, decoder, backbone (or, with `init_from`, the backbone of that model alone); save to
    `out` when given (a non-empty `out` only with `force`; each stage's records go to
    `out/metrics.jsonl`). -> (LLaDA2Uni, summary)."""
    from ..data.digits import digit_images

    run = C.prepare_run(out, force) if out is not None else None
    with cpu_numerics(cfg.threads):
        torch.manual_seed(cfg.seed)
        start = time.time()
        images, labels = digit_images("train", cfg.image_size)
        build = pretrained_parts if cfg.init_from else trained_parts
        model, codes, parts, seconds = build(cfg, to_pixels(images), labels, progress, run)
        tasks = UB.DigitsUniTasks(UB.UniCodec(Tokenizer(build_char_tokenizer()), model.vocab), codes, labels,
                                  cfg.tasks, text_drop=cfg.text_drop)
        metrics = fit_backbone(model.backbone, tasks, cfg, progress, start, run)
        model.eval()
        seconds["backbone"] = time.time() - start - sum(seconds.values())
        summary = {"recipe": cfg.recipe, "seconds": round(time.time() - start, 1),
                   "part_seconds": {k: round(v, 1) for k, v in seconds.items()},
                   "parameters": sum(p.numel() for p in model.parameters()), **parts, **metrics, "config": cfg.to_dict()}
        if run is not None:
            with C.keeping(run, ["metrics.jsonl"]):  # the save replaces the directory
                save_uni_model(model, run, summary)
        return model, summary


def trained_parts(cfg: UniTrainConfig, pixels, labels, progress: bool, run):
    """Stages 1 and 2: the tokenizer and the decoders trained, a fresh backbone.
    -> (model, codes (A, N, h, w), summary parts, seconds per part)."""
    from ..models.uni import LLaDA2Uni, UniConfig

    start, seconds = time.time(), {}
    vq, tok_stats = train_tokenizer_part(cfg, pixels, labels, progress, run)
    codes = tokenize_augmented(vq, pixels, cfg.augmented_copies, cfg.seed)
    tok_stats["augmented_usage"] = vq.usage(codes)
    seconds["tokenizer"] = time.time() - start
    teacher, student, dec_stats = train_decoder_part(cfg, codes[0], vq.config["codebook_size"], progress, run)
    seconds["decoder"] = time.time() - start - seconds["tokenizer"]
    vocab = vocab_for(vq.config)
    uni_cfg = UniConfig(llm=backbone_config(cfg, vocab), vocab=vocab, tokenizer=dict(vq.config),
                        decoder=dict(teacher.config))
    model = LLaDA2Uni(uni_cfg, tokenizer=vq, decoder=teacher, student=student)
    return model, codes, {"tokenizer": tok_stats, "decoder": dec_stats}, seconds


def pretrained_parts(cfg: UniTrainConfig, pixels, labels, progress: bool, run):
    """`init_from`: that model as it is (its frozen tokenizer re-tokenizes the training digits, its
    decoders are kept); only its backbone trains. -> as `trained_parts`, the base's records as parts."""
    from ..formats.uni import load_uni

    start = time.time()
    model = load_uni(cfg.init_from).eval()  # names a missing directory or a checkpoint that is not Uni
    model.requires_grad_(False)
    model.backbone.requires_grad_(True)
    codes = tokenize_augmented(model.tokenizer, pixels, cfg.augmented_copies, cfg.seed)
    base = Path(cfg.init_from) / "train_summary.json"
    base_summary = json.loads(base.read_text()) if base.exists() else {}
    parts = {"init_from": str(cfg.init_from),
             **{k: base_summary[k] for k in ("tokenizer", "decoder") if k in base_summary},
             "base_backbone": {k: base_summary.get(k) for k in ("steps", "final_loss", "recipe")}}
    return model, codes, parts, {"load": time.time() - start}


def save_uni_model(model, out: str | Path, summary: dict | None = None) -> Path:
    from ..formats.uni import save_uni

    path = save_uni(model, out, tokenizer=Tokenizer(build_char_tokenizer()))
    if summary is not None:
        write_json(Path(path) / "train_summary.json", summary)
    return Path(path)
