"""The training loop: one process, DDP or FSDP2, from a laptop CPU to many GPUs.

    from omnidlm.train import Trainer, recipe
    summary = Trainer(recipe("synthetic-tiny"), out="runs/tiny").fit()

    omnidlm train --recipe synthetic-text --out runs/text                      # one process
    torchrun --nproc_per_node 2 -m omnidlm train --recipe synthetic-tiny --out runs/t parallel=fsdp

Each step: build the global batch of the step (`data`), noise it and cut this process's
micro-batches (`objectives`), forward/backward each (gradients synchronised on the last), clip,
AdamW, schedule, EMA. Losses are normalised over the global batch, so the number of processes and
of accumulation steps does not change them. Checkpoints and metrics go to the run directory
(`checkpoint`); `omnidlm.load(out)` reads the latest exported weights.
"""

from __future__ import annotations

import contextlib
import math
import random
import shutil
import time
from pathlib import Path

import torch

from ..data.char_tokenizer import build_char_tokenizer
from ..models.backbone import Backbone
from ..nn.layers import Rotary
from ..sequence.tokenizer import Tokenizer
from . import checkpoint as C
from . import distributed as D
from .data import make_source
from .ema import EMA
from .lora import apply_lora, merge_lora
from .objectives import micro_batches
from .recipes import TrainConfig, config_differences
from .schedules import make_schedule


def load_tokenizer(cfg: TrainConfig) -> Tokenizer:
    if cfg.tokenizer:
        return Tokenizer.from_file(cfg.tokenizer)
    return Tokenizer(build_char_tokenizer())


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; matrices decay, norms / biases / (nothing else) do not."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    rest = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))


class Trainer:
    """Owns the model, optimizer, schedule, EMA and run directory of one training run."""

    def __init__(self, cfg: TrainConfig, out: str | Path, resume: bool = False, force: bool = False):
        self.out = Path(out)
        self.dist = D.setup(cfg.parallel)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        if self.dist.device.type == "cpu":
            torch.set_flush_denormal(True)  # denormal AdamW states slow CPU steps down several-fold
        self.cfg = self._with_base_model(cfg)
        self.tokenizer = load_tokenizer(self.cfg)
        self.source = make_source(self.cfg, self.tokenizer)
        self.model = self._build_model()
        self.optimizer = make_optimizer(self.model, self.cfg)
        schedule = make_schedule(self.cfg.schedule, self.cfg.warmup_steps, self.cfg.max_steps, self.cfg.decay_frac,
                                 self.cfg.min_lr_ratio)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, schedule)
        self.ema = EMA(self.model, self.cfg.ema_decay) if self.cfg.ema_decay > 0 else None
        self.step, self.tokens_seen, self.elapsed = 0, 0, 0.0
        self._prepare_out(resume, force)

    # --- setup ----------------------------------------------------------------------------------

    def _with_base_model(self, cfg: TrainConfig) -> TrainConfig:
        """With `init_from`, the model config is the checkpoint's."""
        if not cfg.init_from:
            return cfg
        from ..formats import load_config

        model_cfg = load_config(cfg.init_from)[0]
        return TrainConfig.from_dict({**cfg.to_dict(), "model": model_cfg.to_dict()})

    def _build_model(self) -> torch.nn.Module:
        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        if cfg.init_from:
            from ..formats import load

            model = load(cfg.init_from)
        else:
            model = Backbone(cfg.model)
        if cfg.lora_rank:
            apply_lora(model, cfg.lora_rank, cfg.lora_alpha, tuple(cfg.lora_targets.split(",")))
        model.to(self.dist.device).train()
        model.gradient_checkpointing = cfg.activation_checkpointing
        return D.wrap(model, self.dist)

    def _prepare_out(self, resume: bool, force: bool) -> None:
        if resume:
            return self._resume()
        if C.checkpoints(self.out) or (self.out / "metrics.jsonl").exists():
            if not force:
                raise FileExistsError(f"{self.out} already holds a run; pass --resume to continue it or --force "
                                      "to start over")
            if self.dist.is_main:
                self._clear_out()
        self.dist.barrier()
        if self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            C.write_json(self.out / "train_config.json", self.cfg.to_dict())

    def _clear_out(self) -> None:
        shutil.rmtree(self.out / "checkpoints", ignore_errors=True)
        for name in (*C.EXPORTED, "metrics.jsonl", "train_config.json", "loss.png"):
            (self.out / name).unlink(missing_ok=True)

    def _resume(self) -> None:
        path = C.latest_checkpoint(self.out)
        if path is None:
            raise FileNotFoundError(f"--resume: no checkpoint in {self.out / 'checkpoints'}")
        ckpt = C.load_checkpoint(path)
        diffs = config_differences(ckpt["meta"]["config"], self.cfg)
        if diffs:
            raise ValueError(f"cannot resume {self.out}: it was trained with another config; "
                             f"differing field(s): {'; '.join(diffs)}")
        D.load_model_state(self.model, ckpt["model"], self.dist)
        D.load_optimizer_state(self.model, self.optimizer, ckpt["state"]["optimizer"], self.dist)
        self.scheduler.load_state_dict(ckpt["state"]["scheduler"])
        if self.ema is not None:
            self.ema.load_state_dict(ckpt["ema"])
        C.set_rng_state(ckpt["state"]["rng"])
        meta = ckpt["meta"]
        self.step, self.tokens_seen, self.elapsed = meta["step"], meta["tokens_seen"], meta["elapsed_s"]
        self.dist.barrier()
        if self.dist.is_main:
            C.truncate_metrics(self.out, self.step)

    # --- one step -------------------------------------------------------------------------------

    def _autocast(self):
        if self.dist.device.type == "cuda" and self.cfg.bf16:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def train_step(self) -> dict:
        """One optimiser step on the global batch of `self.step`; returns its loss and grad norm."""
        rows = self.source.batch(self.step)
        micros = micro_batches(self.cfg, rows, self.step, self.dist.rank, self.dist.world)
        local = 0.0
        for i, m in enumerate(micros):
            to = lambda t: None if t is None else t.to(self.dist.device, non_blocking=True)  # noqa: E731
            with D.no_sync(self.model, self.dist, sync=i == len(micros) - 1), self._autocast():
                logits = self.model(to(m.input_ids), attention_mask=to(m.attention_mask),
                                    position_ids=to(m.position_ids)).logits
                loss = m.loss(logits.float())
            loss.backward()
            local += float(loss.detach())
        params = [p for p in self.model.parameters() if p.requires_grad]
        norm = torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip or math.inf)
        norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.model)
        self.step += 1
        self.tokens_seen += rows.input_ids.numel()
        return {"loss": self.dist.all_mean(local), "grad_norm": norm, "lr": lr, "tokens": rows.input_ids.numel()}

    # --- saving, exporting, evaluating ----------------------------------------------------------

    def export_model(self, state: dict, ema: dict | None) -> Backbone:
        """A plain CPU Backbone of the exported weights: EMA when enabled, LoRA merged."""
        weights = {**state, **(ema or {})}
        with torch.device("meta"):
            model = Backbone(self.cfg.model)
            if self.cfg.lora_rank:
                apply_lora(model, self.cfg.lora_rank, self.cfg.lora_alpha, tuple(self.cfg.lora_targets.split(",")))
        model.load_state_dict(weights, strict=True, assign=True)
        model.rotary = Rotary(self.cfg.model.rotary_dim, self.cfg.model.rope_theta)
        if self.cfg.lora_rank:
            merge_lora(model)
        return model.eval()

    def _gather(self) -> tuple[dict, dict | None]:
        """Full model and EMA state (collectives: every rank calls it)."""
        return D.model_state(self.model, self.dist), (self.ema.state_dict() if self.ema is not None else None)

    def save(self) -> Path | None:
        """Checkpoint the current step and export its weights to the run directory's top level."""
        state, ema = self._gather()
        optim = D.optimizer_state(self.model, self.optimizer, self.dist)
        path, error = None, None
        if self.dist.is_main:
            meta = {"step": self.step, "tokens_seen": self.tokens_seen, "elapsed_s": self.elapsed,
                    "data": {"step": self.step, "examples_seen": self.step * self.cfg.batch_size},
                    "world_size": self.dist.world, "config": self.cfg.to_dict()}
            extra = {"optimizer": optim, "scheduler": self.scheduler.state_dict(), "rng": C.rng_state()}
            try:
                path = C.save_checkpoint(self.out, self.step, state, ema, extra, meta, self.cfg.keep_checkpoints)
                C.export(self.export_model(state, ema), self.out, self.tokenizer)
            except OSError as e:  # e.g. a full disk: the previous checkpoint is intact; stop every rank
                error = e
        if self.dist.any(error is not None):
            raise error or OSError(f"saving checkpoint step {self.step} failed on rank 0")
        return path

    def evaluate(self, n: int) -> dict | None:
        """Held-out exact match of the exported weights (synthetic data only; on rank 0)."""
        if self.cfg.data != "synthetic" or n <= 0:
            return None
        state, ema = self._gather()
        result = None
        if self.dist.is_main:
            from .evaluate import synthetic_exact_match

            result = synthetic_exact_match(self.export_model(state, ema), self.tokenizer, n)
            C.append_metrics(self.out, {"step": self.step, **result})
        self.dist.barrier()
        return result

    # --- the loop -------------------------------------------------------------------------------

    def fit(self, stop_after: int | None = None) -> dict:
        """Train to max_steps (or stop, checkpointed, after step `stop_after`); returns a summary."""
        from tqdm import tqdm

        cfg, end = self.cfg, min(self.cfg.max_steps, stop_after or self.cfg.max_steps)
        bar = tqdm(total=cfg.max_steps, initial=self.step, disable=not (self.dist.is_main and cfg.progress),
                   unit="step", dynamic_ncols=True)
        window, window_tokens, window_time, last = [], 0, 0.0, {}
        while self.step < end:
            t0 = time.perf_counter()
            last = self.train_step()
            dt = time.perf_counter() - t0
            self.elapsed += dt
            window.append(last["loss"])
            window_tokens += last["tokens"]
            window_time += dt
            tps = window_tokens / max(window_time, 1e-9)
            bar.update(1)
            bar.set_postfix(loss=f"{last['loss']:.4f}", tok_s=f"{tps:,.0f}", lr=f"{last['lr']:.2e}")
            if self.step % cfg.log_every == 0 or self.step == end:
                self._log(last, sum(window) / len(window), tps)
                window, window_tokens, window_time = [], 0, 0.0
            if cfg.eval_every and self.step % cfg.eval_every == 0 and self.step < end:
                self.evaluate(cfg.eval_samples)
            if self.step % cfg.save_every == 0 or self.step == end:
                self.save()
        bar.close()
        final = self.evaluate(cfg.eval_samples) if self.step >= cfg.max_steps else None
        return {"step": self.step, "loss": last.get("loss"), "tokens_seen": self.tokens_seen,
                "train_seconds": self.elapsed, "tokens_per_s": self.tokens_seen / max(self.elapsed, 1e-9),
                "eval": final}

    def _log(self, last: dict, mean_loss: float, tps: float) -> None:
        if self.dist.is_main:
            C.append_metrics(self.out, {"step": self.step, "loss": last["loss"], "loss_avg": mean_loss,
                                        "lr": last["lr"], "grad_norm": last["grad_norm"], "tokens_per_s": tps,
                                        "tokens_seen": self.tokens_seen, "elapsed_s": self.elapsed})

    def close(self) -> None:
        self.dist.close()


def train(cfg: TrainConfig, out: str | Path, resume: bool = False, force: bool = False,
          stop_after: int | None = None) -> dict:
    """Run (or resume) a training run to completion; the summary of `Trainer.fit`."""
    trainer = Trainer(cfg, out, resume=resume, force=force)
    try:
        return trainer.fit(stop_after)
    finally:
        trainer.close()
