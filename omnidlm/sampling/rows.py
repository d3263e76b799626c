"""Per-row sampling settings of the engine: the rows of ONE batch may each choose their own
temperature, top-k, top-p, commit policy (threshold or factor, steps per block), banned ids and
random seed; block length, attention and cache mode stay per engine.

    engine = BatchEngine(model, SamplingConfig(block_length=32))          # the defaults
    engine.add(Request(ids))                                               # the engine's settings
    engine.add(Request(ids, settings=RowSettings(temperature=0.7, top_p=0.9,
                                                 policy=Threshold(0.8, steps=16)), seed=3))

`RowTable` keeps the settings of the active rows as device tensors, written once when a row is
admitted and moved with it, so a step reads them without a copy from the host. `RowTable.choose`
draws the tokens of every row at once: greedy rows take the argmax, sampled rows the inverse CDF of
their filtered distribution at a uniform drawn from the row's own generator (a request's `seed`), so
a seeded request gives the same answer whatever else shares its batch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .policies import Threshold


@dataclass(frozen=True)
class RowSettings:
    """The sampling settings one request may choose (None on a `Request`: the engine's)."""

    temperature: float = 0.0  # 0: greedy (argmax)
    top_k: int | None = None  # None or 0: off
    top_p: float | None = None  # None or 1.0: off
    policy: object = field(default_factory=lambda: Threshold(0.9, 32))  # sampling/policies.py; .steps per block
    ban_ids: tuple[int, ...] = ()  # ids never chosen (-inf logits before the choice)

    def __post_init__(self):
        t = self.temperature
        if not isinstance(t, (int, float)) or t != t or t < 0 or t == float("inf"):
            raise ValueError(f"temperature must be a finite number >= 0, got {t!r}")
        if self.top_k is not None and (not isinstance(self.top_k, int) or self.top_k < 0):
            raise ValueError(f"top_k must be a non-negative integer or None, got {self.top_k!r}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1] or None, got {self.top_p!r}")
        if not hasattr(self.policy, "commit_rows") or getattr(self.policy, "steps", 0) <= 0:
            raise ValueError(f"policy must be a policy of sampling/policies.py with positive steps, got {self.policy!r}")
        object.__setattr__(self, "ban_ids", tuple(int(i) for i in self.ban_ids))

    @classmethod
    def of(cls, config) -> "RowSettings":
        """The per-row part of a `SamplingConfig`."""
        return cls(config.temperature, config.top_k, config.top_p, config.policy, tuple(config.ban_ids))

    def replace(self, **changes) -> "RowSettings":
        return dataclasses.replace(self, **changes)


def first_argmax(x: torch.Tensor, chunk: int = 128) -> torch.Tensor:
    """`x.argmax(-1)`, the same index (the first maximum, NaN counting as the largest), in vectorised
    passes on the CPU, where torch's argmax over the last dim is a scalar loop (3 ms for 32 x 32000
    floats against 0.6 ms here): the chunk maxima, the first chunk holding the maximum (every earlier
    chunk's maximum is smaller, so the first maximum lies in it), then the argmax inside that chunk."""
    V = x.shape[-1]
    if x.device.type != "cpu" or V % chunk or V < 2 * chunk:
        return x.argmax(-1)
    parts = x.unflatten(-1, (V // chunk, chunk))  # (..., V / chunk, chunk)
    which = parts.amax(-1).argmax(-1, keepdim=True)  # (..., 1)
    inner = parts.gather(-2, which[..., None].expand(*which.shape, chunk)).squeeze(-2).argmax(-1)
    return which.squeeze(-1) * chunk + inner


class RowTable:
    """Settings of rows [0, max_batch) as device tensors, plus each row's generator and policy."""

    FLOATS = ("temperature", "top_p", "param")  # param: the policy's threshold / factor
    LONGS = ("top_k", "steps", "block_masks")  # block_masks: masked count at the block's first step

    def __init__(self, max_batch: int, vocab_size: int, device):
        self.vocab_size, self.device = vocab_size, device
        self.floats = torch.zeros(max_batch, len(self.FLOATS), device=device)  # (B, 3)
        self.longs = torch.ones(max_batch, len(self.LONGS), dtype=torch.long, device=device)  # (B, 3)
        self.ban: torch.Tensor | None = None  # (B, V) bool, made when a row first bans ids
        self.settings: list[RowSettings | None] = [None] * max_batch
        self.generators: list[torch.Generator | None] = [None] * max_batch

    def column(self, name: str, n: int) -> torch.Tensor:
        if name in self.FLOATS:
            return self.floats[:n, self.FLOATS.index(name)]
        return self.longs[:n, self.LONGS.index(name)]

    def set(self, row: int, s: RowSettings, generator: torch.Generator | None) -> None:
        """Write row `row`'s settings (one small copy per admitted request)."""
        self.settings[row], self.generators[row] = s, generator
        param = float(getattr(s.policy, "param", 0.0))
        self.floats[row] = torch.tensor([s.temperature, s.top_p or 1.0, param])
        self.longs[row] = torch.tensor([s.top_k or 0, s.policy.steps, 0])
        if s.ban_ids and self.ban is None:
            self.ban = torch.zeros(len(self.settings), self.vocab_size, dtype=torch.bool, device=self.device)
        if self.ban is not None:
            self.ban[row] = False
            if s.ban_ids:
                self.ban[row, list(s.ban_ids)] = True

    def move(self, src: int, dst: int) -> None:
        """Row `src` takes slot `dst` (the engine keeps active rows packed at the front)."""
        self.settings[dst], self.generators[dst] = self.settings[src], self.generators[src]
        self.floats[dst], self.longs[dst] = self.floats[src], self.longs[src]
        if self.ban is not None:
            self.ban[dst] = self.ban[src]

    # -- per step --------------------------------------------------------------------------------
    def uniform(self, n: int, length: int, default: torch.Generator | None) -> torch.Tensor:
        """(n, length) U(0, 1): a seeded row draws from its own generator, the others share `default`."""
        own = [i for i in range(n) if self.generators[i] is not None]
        if len(own) == n:
            u = torch.empty(n, length, device=self.device)
        else:
            u = torch.rand(n, length, device=self.device, generator=default)
        for i in own:
            u[i] = torch.rand(length, device=self.device, generator=self.generators[i])
        return u

    def choose(self, logits: torch.Tensor, default: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(n, L, V) logits of rows [0, n) -> tokens (n, L) and the probability of each under its
        row's sampling distribution (float32): argmax at temperature 0 (LLaDA2.0's rule)."""
        n, L, _ = logits.shape
        rows = self.settings[:n]
        if any(s.ban_ids for s in rows):
            logits = logits.masked_fill(self.ban[:n, None, :], float("-inf"))
        greedy = first_argmax(logits)  # (n, L)
        p_greedy = F.softmax(logits, dim=-1).gather(-1, greedy[..., None]).squeeze(-1)
        if all(s.temperature == 0 for s in rows):
            return greedy, p_greedy
        temperature = self.column("temperature", n)
        hot = temperature > 0  # (n,)
        filtered = self._filtered(logits, torch.where(hot, temperature, 1.0), rows)  # (n, L, V)
        probs = F.softmax(filtered, dim=-1)
        cdf = probs.cumsum(-1)  # (n, L, V)
        u = self.uniform(n, L, default) * cdf[..., -1]  # (n, L)
        drawn = torch.searchsorted(cdf, u[..., None], right=True).squeeze(-1)  # first cdf > u: never a p = 0 token
        drawn = torch.where(drawn >= probs.shape[-1], probs.argmax(-1), drawn)  # u rounded up to the total
        p_drawn = probs.gather(-1, drawn[..., None]).squeeze(-1)
        return torch.where(hot[:, None], drawn, greedy), torch.where(hot[:, None], p_drawn, p_greedy)

    def _filtered(self, logits: torch.Tensor, temperature: torch.Tensor, rows) -> torch.Tensor:
        """Logits / temperature with each row's top-k and top-p applied (-inf outside)."""
        n = logits.shape[0]
        # shifted by the max first, so a tiny temperature gives 0 / -inf, never inf - inf
        x = (logits - logits.amax(-1, keepdim=True)) / temperature[:, None, None]  # (n, L, V)
        k_max = max(s.top_k or 0 for s in rows)
        if k_max:
            k = self.column("top_k", n)  # (n,), 0 = off
            top = x.topk(min(k_max, x.shape[-1]), dim=-1).values  # (n, L, k_max)
            kth = top.gather(-1, (k.clamp(min=1) - 1).clamp(max=top.shape[-1] - 1)[:, None, None].expand(-1, x.shape[1], 1))
            x = x.masked_fill((x < kth) & (k > 0)[:, None, None], float("-inf"))
        if any(s.top_p is not None and s.top_p < 1 for s in rows):
            top_p = self.column("top_p", n)[:, None, None]
            sorted_x, order = x.sort(dim=-1, descending=True)
            drop = F.softmax(sorted_x, dim=-1).cumsum(-1) > top_p  # (n, L, V)
            drop = torch.cat([torch.zeros_like(drop[..., :1]), drop[..., :-1]], dim=-1)  # keep the first past p
            x = x.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
        return x

    def commit(self, conf: torch.Tensor, minimum: torch.Tensor) -> torch.Tensor:
        """(n, bl) confidences -> (n, bl) bool commits, each row under its own policy; rows that share
        a policy kind are decided together (one call per kind present)."""
        n = conf.shape[0]
        kinds: dict[type, list[int]] = {}
        for i, s in enumerate(self.settings[:n]):
            kinds.setdefault(type(s.policy), []).append(i)
        param = self.column("param", n)
        if len(kinds) == 1:
            return next(iter(kinds)).commit_rows(conf, minimum, param)
        out = torch.zeros_like(conf, dtype=torch.bool)
        for kind, idx in kinds.items():
            at = torch.tensor(idx, device=conf.device)
            out[at] = kind.commit_rows(conf[at], minimum[at], param[at])
        return out
