"""The training loop: one process, DDP or FSDP2, from a laptop CPU to many GPUs.

    from omnidlm.train import Trainer, recipe
    summary = Trainer(recipe("synthetic-tiny"), out="runs/tiny").fit()

    omnidlm train --recipe synthetic-text --out runs/text                      # one process
    torchrun --nproc_per_node 2 -m omnidlm train --recipe synthetic-tiny --out runs/t parallel=fsdp

Each step: build the global batch of the step (`data`), noise it and cut this process's
micro-batches (`objectives`), forward/backward each (gradients synchronised on the last); the
shared loop (`train/loop.py`) then clips, steps AdamW on the schedule, balances the experts of
a MoE model and updates the EMA. Losses are normalised over the global batch, so the number of processes and
of accumulation steps does not change them. Checkpoints and metrics go to the run directory
(`checkpoint`); `omnidlm.load(out)` reads the latest exported weights.
"""

from __future__ import annotations

import contextlib
import random
import shutil
from pathlib import Path

import torch

from ..data.char_tokenizer import build_char_tokenizer
from ..models.backbone import Backbone
from ..nn.layers import Rotary
from ..sequence.tokenizer import Tokenizer
from . import checkpoint as C
from . import distributed as D
from .data import make_source
from .lora import apply_lora, merge_lora
from .loop import Loop, Optim, cpu_numerics
from .objectives import micro_batches
from .recipes import TrainConfig, config_differences


def load_tokenizer(cfg: TrainConfig) -> Tokenizer:
    if cfg.tokenizer:
        return Tokenizer.from_file(cfg.tokenizer)
    return Tokenizer(build_char_tokenizer())


def optim_of(cfg: TrainConfig) -> Optim:
    """The text recipe's optimisation, for the shared loop."""
    return Optim(steps=cfg.max_steps, lr=cfg.lr, schedule=cfg.schedule, warmup=cfg.warmup_steps,
                 decay_frac=cfg.decay_frac, min_lr_ratio=cfg.min_lr_ratio, weight_decay=cfg.weight_decay,
                 betas=(cfg.beta1, cfg.beta2), grad_clip=cfg.grad_clip, ema_decay=cfg.ema_decay,
                 balance_rate=cfg.balance_rate)


class Trainer:
    """Owns the model, the loop (optimizer, schedule, EMA) and the run directory of one training run."""

    def __init__(self, cfg: TrainConfig, out: str | Path, resume: bool = False, force: bool = False):
        self.out = Path(out)
        self.dist = D.setup(cfg.parallel)
        self._numerics = contextlib.ExitStack()  # training's CPU settings, until close()
        self._numerics.enter_context(cpu_numerics(cfg.threads, cpu=self.dist.device.type == "cpu"))
        self.cfg = self._with_base_model(cfg)
        self.tokenizer = load_tokenizer(self.cfg)
        self.source = make_source(self.cfg, self.tokenizer)
        self.model = self._build_model()
        self.loop = Loop(self.model, optim_of(self.cfg), "train", out=self.out, progress=self.cfg.progress,
                         log_every=self.cfg.log_every, main=self.dist.is_main)
        self._prepare_out(resume, force)

    @property
    def step(self) -> int:
        return self.loop.step

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
        if self.dist.is_main:
            C.remove_debris(self.out)  # left by a run killed while saving
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
        D.load_optimizer_state(self.model, self.loop.optimizer, ckpt["state"]["optimizer"], self.dist)
        if self.loop.ema is not None:
            self.loop.ema.load_state_dict(ckpt["ema"])
        C.set_rng_state(ckpt["state"]["rng"])
        meta, loop = ckpt["meta"], self.loop
        loop.step, loop.tokens_seen, loop.elapsed = meta["step"], meta["tokens_seen"], meta["elapsed_s"]
        self.dist.barrier()
        if self.dist.is_main:
            C.truncate_metrics(self.out, loop.step)

    # --- one step -------------------------------------------------------------------------------

    def _autocast(self):
        if self.dist.device.type == "cuda" and self.cfg.bf16:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def forward_backward(self, step: int) -> dict:
        """Gradients of the global batch of `step`, micro-batch by micro-batch (synchronised on the last)."""
        rows = self.source.batch(step)
        micros = micro_batches(self.cfg, rows, step, self.dist.rank, self.dist.world)
        local = 0.0
        for i, m in enumerate(micros):
            to = lambda t: None if t is None else t.to(self.dist.device, non_blocking=True)  # noqa: E731
            with D.no_sync(self.model, self.dist, sync=i == len(micros) - 1), self._autocast():
                logits = self.model(to(m.input_ids), attention_mask=to(m.attention_mask),
                                    position_ids=to(m.position_ids)).logits
                loss = m.loss(logits.float())
            loss.backward()
            local += float(loss.detach())
        return {"loss": self.dist.all_mean(local), "tokens": rows.input_ids.numel()}

    def train_step(self) -> dict:
        """One optimiser step on the global batch of `self.step`; returns its metrics."""
        return self.loop.step_once(self.forward_backward)

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
        ema = self.loop.ema
        return D.model_state(self.model, self.dist), (ema.state_dict() if ema is not None else None)

    def save(self) -> Path | None:
        """Checkpoint the current step and export its weights to the run directory's top level."""
        state, ema = self._gather()
        optim = D.optimizer_state(self.model, self.loop.optimizer, self.dist)
        path, error, loop = None, None, self.loop
        if self.dist.is_main:
            meta = {"step": loop.step, "tokens_seen": loop.tokens_seen, "elapsed_s": loop.elapsed,
                    "data": {"step": loop.step, "examples_seen": loop.step * self.cfg.batch_size},
                    "world_size": self.dist.world, "config": self.cfg.to_dict()}
            try:
                path = C.save_checkpoint(self.out, loop.step, state, ema, {"optimizer": optim, "rng": C.rng_state()},
                                         meta, self.cfg.keep_checkpoints)
                C.export(self.export_model(state, ema), self.out, self.tokenizer)
            except OSError as e:  # e.g. a full disk: the previous checkpoint is intact; stop every rank
                error = e
        if self.dist.any(error is not None):
            raise error or OSError(f"saving checkpoint step {loop.step} failed on rank 0")
        return path

    def evaluate(self, n: int) -> dict | None:
        """Held-out exact match of the exported weights (synthetic data only; on rank 0)."""
        if self.cfg.data != "synthetic" or n <= 0:
            return None
        state, ema = self._gather()
        result = None
        if self.dist.is_main:
            from .evaluate import synthetic_exact_match

            result = synthetic_exact_match(self.export_model(state, ema), self.tokenizer, n, progress=self.cfg.progress)
            C.append_metrics(self.out, {"stage": "eval", "step": self.step, **result})
        self.dist.barrier()
        return result

    # --- the loop -------------------------------------------------------------------------------

    def fit(self, stop_after: int | None = None) -> dict:
        """Train to max_steps (or stop, checkpointed, after step `stop_after`); returns a summary.
        A run that had already finished is not trained or evaluated again: its summary is read back."""
        cfg = self.cfg
        if self.step >= cfg.max_steps:
            return self._finished_summary()
        end = min(cfg.max_steps, stop_after or cfg.max_steps)

        def after_step(loop: Loop) -> None:
            if cfg.eval_every and loop.step % cfg.eval_every == 0 and loop.step < end:
                self.evaluate(cfg.eval_samples)
            if loop.step % cfg.save_every == 0 or loop.step == end:
                self.save()

        self.loop.run(self.forward_backward, until=end, on_step=after_step)
        final = self.evaluate(cfg.eval_samples) if self.step >= cfg.max_steps else None
        return self._summary(self.loop.history[-1]["loss"] if self.loop.history else self._logged_loss(), final)

    def _summary(self, loss: float | None, final: dict | None, **extra) -> dict:
        loop = self.loop
        return {"step": loop.step, "loss": loss, "tokens_seen": loop.tokens_seen, "train_seconds": loop.elapsed,
                "tokens_per_s": loop.tokens_seen / max(loop.elapsed, 1e-9), "eval": final, **extra}

    def _finished_summary(self) -> dict:
        """The summary of a finished run from its metrics; evaluated only if its final evaluation is missing."""
        evals = [r for r in self._records() if "exact_match" in r and r.get("step") == self.step]
        final = {k: v for k, v in evals[-1].items() if k not in ("stage", "step")} if evals else None
        if final is None:
            final = self.evaluate(self.cfg.eval_samples)
        return self._summary(self._logged_loss(), final, already_finished=True)

    def _records(self) -> list[dict]:
        return C.read_metrics(self.out) if (self.out / "metrics.jsonl").is_file() else []

    def _logged_loss(self) -> float | None:
        """The last training loss in metrics.jsonl (a resumed run that trains no further step)."""
        losses = [r["loss"] for r in self._records() if r.get("loss") is not None and r["step"] <= self.step]
        return losses[-1] if losses else None

    def close(self) -> None:
        self.dist.close()
        self._numerics.close()


def train(cfg: TrainConfig, out: str | Path, resume: bool = False, force: bool = False,
          stop_after: int | None = None) -> dict:
    """Run (or resume) a training run to completion; the summary of `Trainer.fit`."""
    trainer = Trainer(cfg, out, resume=resume, force=force)
    try:
        return trainer.fit(stop_after)
    finally:
        trainer.close()
