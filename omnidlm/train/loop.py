"""The one training loop: every stage of every recipe steps through it.

    loop = Loop(model, Optim(steps=200, lr=2e-3, schedule="cosine", warmup=10, grad_clip=1.0, ema_decay=0.995),
                stage="decoder", out="runs/uni")
    loop.run(backprop(lambda step: {"loss": loss_of(batch(step))}))
    loop.finish()                              # the model now holds the EMA weights

One step: set every group's learning rate from the schedule (`train/schedules.py`), run the
stage's forward and backward (`forward_backward(step) -> metrics`), clip the gradient norm (it
is measured even without clipping), AdamW, the hooks that change the model after an update
(expert-bias balancing, added for every MoE model; dead-code restarts of a VQ codebook), then
the EMA. Around the steps: a progress bar, records in `out/metrics.jsonl` (`stage`, `step`, the
stage's metrics, `lr`, `grad_norm`, ...) that `omnidlm plot` draws, a deadline, and the text
trainer's checkpoints (`on_step`). The text trainer (`train/trainer.py`), the LLaDA-o recipe
(`train/omni.py`: VAE, ViT, omni model), the Uni recipe (`train/uni.py`, `train/vq.py`,
`train/uni_decoder.py`: tokenizer, VAE, decoder, distillation, MoE backbone) all use it.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .ema import EMA, unwrap
from .schedules import make_schedule


@contextmanager
def cpu_numerics(threads: int = 0, cpu: bool = True):
    """Training's process-wide CPU settings for the length of a run, put back after it: `threads`
    torch threads (0: unchanged) and, on the CPU, denormals flushed to zero (denormal AdamW states
    slow CPU steps down several-fold). A server or sampler in the same process sees neither."""
    threads_before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    flushed = cpu and torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_num_threads(threads_before)
        if flushed:
            torch.set_flush_denormal(False)


@dataclass
class Optim:
    """How a stage optimises: AdamW, a schedule, clipping, EMA, expert balancing."""

    steps: int
    lr: float
    schedule: str = "constant"  # train/schedules.py: constant, wsd, cosine
    warmup: int = 0
    decay_frac: float = 0.2  # wsd
    min_lr_ratio: float = 0.0  # wsd / cosine floor
    weight_decay: float = 0.0
    decay_all: bool = False  # weight decay on every tensor, not only matrices (norms, biases)
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 0.0  # 0: no clipping (the norm is still measured and logged)
    ema_decay: float = 0.0  # 0: no EMA
    balance_rate: float = 1e-3  # expert-bias update rate for MoE models (0: no balancing)


def param_groups(named, optim: Optim, lr_mult: Callable[[str], float] | None = None) -> list[dict]:
    """AdamW groups of the trainable tensors: per learning-rate multiplier, matrices decay and
    vectors (norms, biases) do not, unless `decay_all`."""
    named = [(n, p) for n, p in named if p.requires_grad]
    mult_of = lr_mult or (lambda name: 1.0)
    groups = []
    for mult in dict.fromkeys(mult_of(n) for n, _ in named):  # in order of first appearance
        part = [p for n, p in named if mult_of(n) == mult]
        if optim.decay_all:
            groups.append({"params": part, "weight_decay": optim.weight_decay, "lr_mult": mult})
            continue
        groups += [{"params": [p for p in part if p.dim() >= 2], "weight_decay": optim.weight_decay, "lr_mult": mult},
                   {"params": [p for p in part if p.dim() < 2], "weight_decay": 0.0, "lr_mult": mult}]
    return [g for g in groups if g["params"]]


def backprop(loss_fn: Callable[[int], dict]) -> Callable[[int], dict]:
    """A `forward_backward` from a loss function `step -> {"loss": tensor, other metrics}`."""

    def forward_backward(step: int) -> dict:
        out = loss_fn(step)
        out["loss"].backward()
        return {k: float(v.detach()) if torch.is_tensor(v) else v for k, v in out.items()}

    return forward_backward


def expert_balance(rate: float):
    """The hook of every MoE model: auxiliary-loss-free expert-bias balancing after each update."""
    from ..nn.moe import update_expert_bias

    def hook(loop: "Loop", metrics: dict) -> None:
        loop.balance = update_expert_bias(unwrap(loop.model), rate)

    return hook


def has_moe(model: nn.Module) -> bool:
    from ..nn.moe import MoE

    return any(isinstance(m, MoE) for m in unwrap(model).modules())


class Loop:
    """Optimiser, schedule, EMA, hooks, progress and metrics of one training stage."""

    def __init__(self, model: nn.Module, optim: Optim, stage: str = "train", *, named=None, lr_mult=None,
                 ema_into: nn.Module | None = None, hooks=(), out: str | Path | None = None, progress: bool = True,
                 log_every: int = 1, deadline: float | None = None, main: bool = True):
        self.model, self.optim, self.stage = model, optim, stage
        named = list(model.named_parameters() if named is None else named)
        self.params = [p for _, p in named if p.requires_grad]
        self.optimizer = torch.optim.AdamW(param_groups(named, optim, lr_mult), lr=optim.lr, betas=optim.betas)
        self.schedule = make_schedule(optim.schedule, optim.warmup, optim.steps, optim.decay_frac, optim.min_lr_ratio)
        self.ema = EMA(model, optim.ema_decay, into=ema_into) if optim.ema_decay > 0 else None
        balance = [expert_balance(optim.balance_rate)] if optim.balance_rate > 0 and has_moe(model) else []
        self.hooks = [*hooks, *balance]
        self.out = Path(out) if out is not None else None
        self.progress, self.log_every, self.deadline, self.main = progress, log_every, deadline, main
        self.step, self.tokens_seen, self.elapsed = 0, 0, 0.0
        self.history: list[dict] = []  # the metrics of every step run in this process
        self.balance: dict = {}  # the last expert-balancing statistics (MoE models)
        self._window: list[dict] = []  # steps since the last metrics record

    # --- one step ---------------------------------------------------------------------------------

    def lr_at(self, step: int) -> float:
        return self.optim.lr * self.schedule(step)

    def step_once(self, forward_backward: Callable[[int], dict]) -> dict:
        """One optimiser update; returns the step's metrics (with `lr`, `grad_norm`, `seconds`)."""
        t0 = time.perf_counter()
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(self.step) * group.get("lr_mult", 1.0)
        metrics = dict(forward_backward(self.step))
        norm = torch.nn.utils.clip_grad_norm_(self.params, self.optim.grad_clip or math.inf)
        metrics["grad_norm"] = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
        metrics["lr"] = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        for hook in self.hooks:  # hooks change the model, so the EMA sees their result
            hook(self, metrics)
        if self.ema is not None:
            self.ema.update(self.model)
        self.step += 1
        self.tokens_seen += metrics.get("tokens", 0)
        metrics["seconds"] = time.perf_counter() - t0
        self.elapsed += metrics["seconds"]
        self.history.append(metrics)
        self._window.append(metrics)
        return metrics

    # --- the loop ---------------------------------------------------------------------------------

    def run(self, forward_backward: Callable[[int], dict], until: int | None = None,
            on_step: Callable[["Loop"], None] | None = None) -> dict:
        """Step to `optim.steps` (or `until`, or the deadline); -> `summary()`."""
        from tqdm.auto import tqdm

        end = min(self.optim.steps, until or self.optim.steps)
        bar = tqdm(total=self.optim.steps, initial=self.step, desc=self.stage, unit="step", dynamic_ncols=True,
                   disable=not (self.progress and self.main))
        while self.step < end:
            metrics = self.step_once(forward_backward)
            bar.update(1)
            bar.set_postfix(self.postfix(metrics), refresh=False)
            late = self.deadline is not None and time.time() > self.deadline
            if self.step % self.log_every == 0 or self.step == end or late:
                self.log()
            if on_step is not None:
                on_step(self)
            if late:
                break
        bar.close()
        return self.summary()

    def postfix(self, metrics: dict) -> dict:
        recent = self.history[-50:]
        shown = {k: f"{self.mean(k, last=50):.4f}" for k, v in metrics.items()
                 if isinstance(v, float) and k not in ("lr", "grad_norm", "seconds")}
        if "tokens" in metrics:
            shown["tok_s"] = f"{sum(m['tokens'] for m in recent) / max(sum(m['seconds'] for m in recent), 1e-9):,.0f}"
        return {**shown, "lr": f"{metrics['lr']:.2e}"}

    def mean(self, key: str, last: int | None = None, first: int | None = None) -> float:
        """Mean of a metric over the last (or first) steps run in this process."""
        rows = self.history[:first] if first else self.history[-last:] if last else self.history
        values = [m[key] for m in rows if key in m]
        return sum(values) / len(values) if values else float("nan")

    def log(self) -> None:
        """Append a record of the steps since the last one to `out/metrics.jsonl` (main process)."""
        window, self._window = self._window, []
        if not window or self.out is None or not self.main:
            return
        from .checkpoint import append_metrics

        last = {k: v for k, v in window[-1].items() if k not in ("seconds", "tokens")}
        record = {"stage": self.stage, "step": self.step, **last,
                  "loss_avg": sum(m["loss"] for m in window) / len(window), "elapsed_s": self.elapsed}
        if "tokens" in window[-1]:
            seconds = sum(m["seconds"] for m in window)
            record.update(tokens_per_s=sum(m["tokens"] for m in window) / max(seconds, 1e-9),
                          tokens_seen=self.tokens_seen)
        append_metrics(self.out, record)

    def summary(self) -> dict:
        return {"steps": self.step, "loss": self.history[-1]["loss"] if self.history else None,
                "seconds": round(self.elapsed, 1)}

    def finish(self) -> nn.Module:
        """The model with the EMA weights when there is an EMA (in place); in eval mode."""
        if self.ema is not None and self.ema.into is None:
            model = unwrap(self.model)
            model.load_state_dict({**model.state_dict(), **self.ema.state_dict()})
        return self.model.eval()
