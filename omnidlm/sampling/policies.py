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
    minimum = step_minimum(transfer_schedule(torch.tensor([32]), policy.steps)[0], step, masked_count)
    commit = policy.commit(conf, minimum)        # (B, block) bool

Tokens and confidences come from `choose_tokens` (argmax at temperature 0, else LLaDA2.0's
temperature / top-k / top-p sampling with the probability of the drawn token as confidence).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .reference import sample_tokens

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

    def commit(self, conf: torch.Tensor, minimum: torch.Tensor) -> torch.Tensor:
        return top_k_mask(conf, minimum)


@dataclass(frozen=True)
class Threshold:
    """All positions above `tau` if there are at least the scheduled count, else the scheduled top-k."""

    tau: float = 0.9
    steps: int = 32
    name = "threshold"

    def commit(self, conf: torch.Tensor, minimum: torch.Tensor) -> torch.Tensor:
        above = conf > self.tau  # (B, L)
        enough = above.sum(1) >= minimum  # (B,)
        return torch.where(enough[:, None], above, top_k_mask(conf, minimum))


@dataclass(frozen=True)
class Factor:
    """The largest n with (n + 1) * (1 - c_n) < factor, never fewer than the scheduled count."""

    factor: float = 1.0
    steps: int = 32
    name = "factor"

    def commit(self, conf: torch.Tensor, minimum: torch.Tensor) -> torch.Tensor:
        c_sorted = conf.sort(dim=1, descending=True).values  # (B, L), -inf last
        n = torch.arange(1, conf.shape[1] + 1, device=conf.device)  # (L,)
        ok = ((n + 1) * (1 - c_sorted) < self.factor) & torch.isfinite(c_sorted)  # (B, L)
        # the largest n whose prefix all passes: count leading Trues
        count = ok.long().cumprod(dim=1).sum(1)  # (B,)
        return top_k_mask(conf, torch.maximum(count, minimum))


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


def step_minimum(schedule: torch.Tensor, step: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """schedule (S,) = transfer_schedule(block_length, steps), step index (B,), masked count (B,)
    -> (B,) the count to commit at least: min(schedule[step], masked); everything at the last step."""
    last = schedule.shape[0] - 1
    scheduled = torch.where(step >= last, masked, schedule[step.clamp(max=last)])
    return torch.minimum(scheduled, masked)


def choose_tokens(logits: torch.Tensor, temperature: float = 0.0, top_k=None, top_p=None,
                  ban_ids=(), generator=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, L, V) logits -> tokens (B, L) and their confidence (B, L) in float32."""
    if ban_ids:
        logits = logits.clone()
        logits[..., list(ban_ids)] = float("-inf")
    if temperature == 0:
        tokens = logits.argmax(-1)
        return tokens, F.softmax(logits, dim=-1).gather(-1, tokens[..., None]).squeeze(-1)
    return sample_tokens(logits, temperature, top_k, top_p, generator)
