"""Learning-rate schedules: multipliers of the base learning rate as a function of the step.

    sched = make_schedule("wsd", warmup=100, total=1000, decay_frac=0.2, min_ratio=0.0)
    torch.optim.lr_scheduler.LambdaLR(optimizer, sched)

- `constant`: linear warmup, then 1.
- `wsd` (warmup-stable-decay): linear warmup, a long flat stretch, then a linear decay to
  `min_ratio` over the last `decay_frac` of the steps.
- `cosine`: linear warmup, then a half cosine from 1 to `min_ratio` at `total`.

Schedules are small dataclasses rather than closures so that `LambdaLR.state_dict()` records their
fields and a resumed run can be checked against them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SCHEDULES = ("constant", "wsd", "cosine")


@dataclass
class Schedule:
    kind: str
    warmup: int
    total: int
    decay_frac: float = 0.2
    min_ratio: float = 0.0

    def __post_init__(self):
        if self.kind not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.kind!r}; valid schedules: {list(SCHEDULES)}")
        if self.total <= 0 or self.warmup < 0:
            raise ValueError(f"schedule needs total > 0 and warmup >= 0, got total={self.total}, warmup={self.warmup}")
        if not 0.0 <= self.decay_frac <= 1.0:
            raise ValueError(f"decay_frac must be in [0, 1], got {self.decay_frac}")

    def __call__(self, step: int) -> float:
        """Multiplier for the update that follows `step` completed updates (step 0 is the first)."""
        if step < self.warmup:
            return (step + 1) / self.warmup
        if self.kind == "constant":
            return 1.0
        if self.kind == "wsd":
            decay_steps = max(int(round(self.decay_frac * self.total)), 1) if self.decay_frac > 0 else 0
            decay_start = self.total - decay_steps
            if decay_steps == 0 or step < decay_start:
                return 1.0
            progress = min((step - decay_start) / decay_steps, 1.0)
            return 1.0 - (1.0 - self.min_ratio) * progress
        span = max(self.total - self.warmup, 1)
        progress = min((step - self.warmup) / span, 1.0)
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_schedule(kind: str, warmup: int, total: int, decay_frac: float = 0.2, min_ratio: float = 0.0) -> Schedule:
    return Schedule(kind, warmup, total, decay_frac, min_ratio)
