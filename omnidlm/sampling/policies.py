"""Commit policies: which masked positions of the current block a denoising step commits.

Every policy sees the confidence of each position of the current block (-inf where nothing is left
to commit) and a per-row minimum, the scheduled count `min(schedule[step], masked)` where
`schedule = transfer_schedule(block_length, steps)`. The minimum guarantees progress and caps the
iterations: a block is finished after at most `steps` steps whatever the policy.

- `FixedSteps(steps)`: commit exactly the scheduled count, most confident first. With
  `steps = block_length` that is one token per step: the published LLaDA sampler.
- `Threshold(tau, steps)`: every position whose confidence exceeds tau when there are at least
  the scheduled count of them, else the scheduled top-k (the published LLaDA2.0 rule; with
  steps = block_length: "always the top-1, plus everything above tau"). tau = 1.0 never fires,
  so it is one token per step.
- `Factor(factor, steps)`: Fast-dLLM's factor rule: with confidences sorted c_1 >= c_2 >= ...,
  commit the largest n with (n + 1) * (1 - c_n) < factor (at least the scheduled count).

    policy = make_policy("threshold", steps=32, threshold=0.9)
    minimum = step_minimum(32, steps_per_row, step, masked_count)     # (B,) each
    commit = policy.commit(conf, minimum)                             # (B, block) bool
    commit = Threshold.commit_rows(conf, minimum, tau_per_row)        # rows with their own tau

A policy is a frozen dataclass with `steps`, a scalar `param` (threshold / factor) and a static
`commit_rows(conf, minimum, param (B,))`, so the engine decides every row of one kind in one call
whatever each row's parameter (sampling/rows.py).

Tokens and confidences come from `RowTable.choose` (sampling/rows.py: argmax at temperature 0, else
LLaDA2.0's temperature / top-k / top-p sampling with the probability of the drawn token as confidence).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

POLICIES = ("fixed", "threshold", "factor")


def top_k_mask(conf: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """(B, L) confidences, (B,) counts -> (B, L) bool marking the k[b] largest of each row."""
    order = conf.argsort(dim=1, descending=True, stable=True)  # (B, L)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(conf.shape[1], device=conf.device).expand_as(order))
    return rank < k[:, None]


@dataclass(frozen=True)
class FixedSteps:
    """Commit the scheduled count each step (the reference samplers' schedule)."""

    steps: int
    name = "fixed"
    param = 0.0

    @staticmethod
    def commit_rows(conf: torch.Tensor, minimum: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
        return top_k_mask(conf, minimum)

    def commit(self, conf: torch.Tensor, minimum: torch.Tensor) -> torch.Tensor:
        return _commit_one(self, conf, minimum)


@dataclass(frozen=True)
class Threshold:
    """All positions above `tau` if there are at least the scheduled count, else the scheduled top-k."""

    tau: float = 0.9
    steps: int = 32
    name = "threshold"

    @property
    def param(self) -> float:
        return self.tau

    @staticmethod
    def commit_rows(conf: torch.Tensor, minimum: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
        """tau (B,): each row's threshold."""
        above = conf > tau[:, None]  # (B, L)
        enough = above.sum(1) >= minimum  # (B,)
        return torch.where(enough[:, None], above, top_k_mask(conf, minimum))

    def commit(self, conf: torch.Tensor, minimum: torch.Tensor) -> torch.Tensor:
        return _commit_one(self, conf, minimum)


@dataclass(frozen=True)
class Factor:
    """The largest n with (n + 1) * (1 - c_n) < factor, never fewer than the scheduled count."""

    factor: float = 1.0
    steps: int = 32
    name = "factor"

    @property
    def param(self) -> float:
        return self.factor

    @staticmethod
    def commit_rows(conf: torch.Tensor, minimum: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
        """factor (B,): each row's factor."""
        c_sorted = conf.sort(dim=1, descending=True).values  # (B, L), -inf last
        n = torch.arange(1, conf.shape[1] + 1, device=conf.device)  # (L,)
        ok = ((n + 1) * (1 - c_sorted) < factor[:, None]) & torch.isfinite(c_sorted)  # (B, L)
        # the largest n whose prefix all passes: count leading Trues
        count = ok.long().cumprod(dim=1).sum(1)  # (B,)
        return top_k_mask(conf, torch.maximum(count, minimum))

    def commit(self, conf: torch.Tensor, minimum: torch.Tensor) -> torch.Tensor:
        return _commit_one(self, conf, minimum)


def _commit_one(policy, conf: torch.Tensor, minimum: torch.Tensor) -> torch.Tensor:
    """Every row under this one policy: its vectorised rule with the parameter repeated."""
    return policy.commit_rows(conf, minimum, conf.new_full((conf.shape[0],), float(policy.param)))


def make_policy(name: str, steps: int, threshold: float = 0.9, factor: float = 1.0):
    """A policy by name; `steps` caps the iterations per block."""
    if steps <= 0:
        raise ValueError(f"steps must be positive, got {steps}")
    if name == "fixed":
        return FixedSteps(steps)
    if name == "threshold":
        return Threshold(threshold, steps)
    if name == "factor":
        if factor <= 0:
            raise ValueError(f"factor must be positive, got {factor}")
        return Factor(factor, steps)
    raise ValueError(f"unknown policy {name!r}; valid policies: {', '.join(POLICIES)}")


def step_minimum(total, steps: torch.Tensor, step: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """Per row (B,): its steps per block, the step index in the block and the masked count -> the
    count to commit at least: min(schedule[step], masked) with schedule =
    transfer_schedule(total, steps) (base = total // steps, the first total % steps steps one
    more); everything at the last step. `total` (int or (B,)): the block length, or the block's
    masked count at its first step."""
    base, rem = total // steps, total % steps  # (B,)
    scheduled = torch.where(step >= steps - 1, masked, base + (step < rem).long())
    return torch.minimum(scheduled, masked)
