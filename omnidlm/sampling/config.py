"""The engine's settings: `SamplingConfig` (block length, attention layout, cache mode, the default
per-row settings, SPRINT) and the settings under which the engine is a published reference sampler.

    cfg = SamplingConfig(max_new_tokens=128, cache="exact", policy=Threshold(0.9, 32))
    cfg = reference_config("full", block_length=32, max_new_tokens=128, steps_per_block=32)
    per_block = steps_per_block(steps=128, gen_length=128, block_length=32)   # the published `steps` -> 32

A request may override the per-row part (temperature, top-k, top-p, policy, ban ids) with its own
`RowSettings` (sampling/rows.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .policies import FixedSteps, Threshold
from .sprint import Sprint

CACHE_MODES = ("none", "exact", "approx")
ATTENTIONS = ("block", "full")


@dataclass
class SamplingConfig:
    max_new_tokens: int = 128  # an upper bound with stop_at_eos
    block_length: int | None = None  # None: the model's block_size
    attention: str | None = None  # "block" | "full"; None: the model's attention
    cache: str = "exact"
    policy: object = field(default_factory=lambda: Threshold(0.9, 32))
    temperature: float = 0.0
    top_k: int | None = None
    top_p: float | None = None
    remasking: str = "low_confidence"  # or "random" (LLaDA): confidence ~ U(0, 1)
    stop_at_eos: bool = True
    ban_ids: tuple[int, ...] = ()
    sprint: Sprint | None = None

    def resolved(self, model_cfg) -> "SamplingConfig":
        """A copy with the model's defaults filled in; ValueError naming a bad field."""
        out = SamplingConfig(**{**self.__dict__})
        out.block_length = out.block_length or model_cfg.block_size
        out.attention = out.attention or model_cfg.attention
        if out.sprint is not None and out.sprint.threshold is not None:  # SPRINT's own unmasking threshold
            out.policy = Threshold(out.sprint.threshold, out.policy.steps)
        check_config(out)
        return out


def check_config(cfg: SamplingConfig) -> None:
    if cfg.cache not in CACHE_MODES:
        raise ValueError(f"unknown cache mode {cfg.cache!r}; valid cache modes: {', '.join(CACHE_MODES)}")
    if cfg.attention not in ATTENTIONS:
        raise ValueError(f"attention must be one of {ATTENTIONS}, got {cfg.attention!r}")
    if cfg.cache == "exact" and cfg.attention != "block":
        raise ValueError(
            "cache 'exact' needs block-causal attention: with full bidirectional attention every "
            "position's keys and values change whenever any token is committed, so no cache is exact. "
            "Use cache 'approx' (refreshed at each block boundary) or 'none', or sample block-causally "
            "(--sampler llada2)")
    if cfg.sprint is not None and cfg.cache != "exact":
        raise ValueError(f"SPRINT prunes the exact prefix cache: it needs cache 'exact', got {cfg.cache!r}")
    if cfg.max_new_tokens <= 0 or cfg.block_length <= 0:
        raise ValueError(f"max_new_tokens ({cfg.max_new_tokens}) and block_length ({cfg.block_length}) "
                         "must be positive")
    if cfg.remasking not in ("low_confidence", "random"):
        raise ValueError(f"remasking must be 'low_confidence' or 'random', got {cfg.remasking!r}")
    if not hasattr(cfg.policy, "commit_rows"):
        raise ValueError(f"policy must be a policy object (see sampling/policies.py), got {cfg.policy!r}")


def reference_config(attention: str, block_length: int, max_new_tokens: int, steps_per_block: int,
                     threshold: float | None = None) -> SamplingConfig:
    """The settings under which the engine (cache "none") is a published reference sampler:
    LLaDA's `generate` (full, fixed steps, no EOS stop) or `generate_llada2` (block, threshold)."""
    policy = FixedSteps(steps_per_block) if threshold is None else Threshold(threshold, steps_per_block)
    return SamplingConfig(max_new_tokens=max_new_tokens, block_length=block_length, attention=attention,
                          cache="none", policy=policy, stop_at_eos=attention == "block")


def steps_per_block(steps: int, gen_length: int, block_length: int) -> int:
    """The published samplers' `steps` (over the whole answer) -> steps per block; ValueError naming
    the flag that does not divide."""
    if min(steps, gen_length, block_length) <= 0:
        raise ValueError(f"steps ({steps}), gen_length ({gen_length}) and block_length ({block_length}) must be positive")
    if gen_length % block_length:
        raise ValueError(f"gen_length ({gen_length}) must be a multiple of block_length ({block_length})")
    blocks = gen_length // block_length
    if steps % blocks:
        raise ValueError(f"steps ({steps}) must be a multiple of the number of blocks "
                         f"(gen_length / block_length = {blocks})")
    return steps // blocks
