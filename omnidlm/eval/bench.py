"""The inference benchmark: policy x cache mode on the held-out synthetic task, against the reference.

    omnidlm bench --model models/text-tiny --n 100 --json bench.json

Every row decodes the same held-out examples (`omnidlm/data/synthetic.py`) with the same model, and
the rows are interleaved chunk by chunk, so a change of machine load hits them all alike. Per row:

- accuracy: exact match of the answer (output cut at the first EOS);
- tokens_per_forward: non-EOS generated tokens / model forwards (all rows of a batched forward);
- tokens_per_s: non-EOS generated tokens / wall-clock seconds;
- speedup: tokens_per_s / that of the reference row.

The reference row is the published sampler run through `sampling/reference.py` itself, with the
policy "fixed steps" at one token per step and no cache: `generate_llada2` with its threshold off
(block-diffusion models) or `generate` with steps = gen_length (LLaDA-style full attention).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from ..data.synthetic import encode_example, heldout, score_exact
from ..sampling.engine import BatchEngine, Request, SamplingConfig
from ..sampling.policies import Factor, FixedSteps, Threshold
from ..sampling.reference import generate, generate_llada2
from ..sampling.sprint import Sprint


@dataclass
class BenchSettings:
    n: int = 100  # held-out examples
    max_new_tokens: int = 96
    threshold: float = 0.9
    factor: float = 1.0
    batch: int = 8  # the batched row's batch size (0: no batched row)
    sprint_keep: float | None = None  # add a SPRINT row keeping this fraction of the prompt
    quantize: str | None = None  # "int8": add the fast row on weight-only int8 linears (nn/quantize.py)
    sweep: tuple[str, tuple] | None = None  # ("threshold" | "block_length", values): one fast row per value
    chunk: int = 8  # examples per interleaving chunk


@dataclass
class Row:
    name: str
    policy: str
    cache: str
    batch: int
    run: Callable[[list[list[int]]], list[list[int]]]  # prompts -> generated ids
    correct: int = 0
    n: int = 0
    tokens: int = 0
    forwards: int = 0
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)
    model: object = None  # the model this row runs, when not the benchmarked one (int8)

    def as_dict(self, ref_tps: float | None) -> dict:
        tps = self.tokens / max(self.seconds, 1e-9)
        return {"name": self.name, "policy": self.policy, "cache": self.cache, "batch": self.batch,
                "accuracy": self.correct / max(self.n, 1),
                "tokens_per_forward": self.tokens / max(self.forwards, 1), "tokens_per_s": tps,
                "speedup": tps / ref_tps if ref_tps else 1.0, "forwards": self.forwards,
                "tokens": self.tokens, "seconds": self.seconds, **self.extra}


def reference_runner(model, max_new_tokens: int, block: int):
    """The published sampler at one token per step, one prompt at a time."""
    def run(prompts):
        if model.config.attention == "block":
            return [generate_llada2(model, p, gen_length=max_new_tokens, block_length=block, steps=block,
                                    threshold=1.0)[0].tolist() for p in prompts]
        return [generate(model, [p], steps=max_new_tokens, gen_length=max_new_tokens,
                         block_length=block)[0].tolist() for p in prompts]
    return run


def engine_runner(model, cfg: SamplingConfig, batch: int):
    engine = BatchEngine(model, cfg, max_batch=batch)

    def run(prompts):
        return [r.tokens for r in engine.run([Request(p) for p in prompts])]
    return run


SWEEPS = ("threshold", "block_length")


def sweep_rows(model, s: BenchSettings) -> list[Row]:
    """One threshold-policy row (fast cache, batch 1) per value of the swept setting."""
    key, values = s.sweep
    if key not in SWEEPS:
        raise ValueError(f"--sweep: unknown setting {key!r}; valid: {', '.join(SWEEPS)}")
    cfg = model.config
    fast = "exact" if cfg.attention == "block" else "approx"
    rows = []
    for value in values:
        tau, block = (float(value), cfg.block_size) if key == "threshold" else (s.threshold, int(value))
        sc = SamplingConfig(max_new_tokens=s.max_new_tokens, block_length=block, cache=fast,
                            policy=Threshold(tau, block))
        rows.append(Row(f"{key}={value:g}", "threshold", fast, 1, engine_runner(model, sc, 1),
                        extra={"threshold": tau, "block_length": block, "sweep": key}))
    return rows


def make_rows(model, s: BenchSettings) -> list[Row]:
    """The reference, then policy x cache rows (batch 1), then SPRINT and batched rows; with a
    sweep, the reference then one row per swept value."""
    cfg, G = model.config, s.max_new_tokens
    if s.sweep is not None:
        return [Row("reference", "fixed", "none", 1, reference_runner(model, G, cfg.block_size))] + sweep_rows(model, s)
    bl, block_model = cfg.block_size, cfg.attention == "block"
    fast = "exact" if block_model else "approx"
    grid = [("fixed", fast), ("threshold", "none"), ("threshold", fast), ("factor", fast)]
    if block_model:
        grid.append(("threshold", "approx"))
    policies = {"fixed": FixedSteps(bl), "threshold": Threshold(s.threshold, bl), "factor": Factor(s.factor, bl)}
    rows = [Row("reference", "fixed", "none", 1, reference_runner(model, G, bl))]
    for policy, cache in grid:
        sc = SamplingConfig(max_new_tokens=G, block_length=bl, cache=cache, policy=policies[policy])
        rows.append(Row(f"{policy}/{cache}", policy, cache, 1, engine_runner(model, sc, 1)))
    if s.sprint_keep is not None and block_model:
        sc = SamplingConfig(max_new_tokens=G, block_length=bl, cache="exact", policy=policies["threshold"],
                            sprint=Sprint(keep_text=s.sprint_keep, warmup=1))
        rows.append(Row(f"threshold/exact+sprint{s.sprint_keep:g}", "threshold", "exact", 1,
                        engine_runner(model, sc, 1), extra={"sprint_keep": s.sprint_keep}))
    if s.quantize == "int8":
        from ..nn.quantize import quantize_int8

        int8 = quantize_int8(model)
        sc = SamplingConfig(max_new_tokens=G, block_length=bl, cache=fast, policy=policies["threshold"])
        rows.append(Row(f"threshold/{fast} int8", "threshold", fast, 1, engine_runner(int8, sc, 1),
                        extra={"quantize": "int8"}, model=int8))
    if s.batch > 1:
        sc = SamplingConfig(max_new_tokens=G, block_length=bl, cache=fast, policy=policies["threshold"])
        rows.append(Row(f"threshold/{fast} x{s.batch}", "threshold", fast, s.batch,
                        engine_runner(model, sc, s.batch)))
    return rows


def count_forwards(*models):
    """-> (a one-element list counting the models' forwards, the hooks' handles to remove)."""
    counter = [0]
    handles = [m.register_forward_hook(lambda *_: counter.__setitem__(0, counter[0] + 1)) for m in models]
    return counter, handles


def cut_at_eos(ids: list[int], eos_id: int) -> list[int]:
    return ids[: ids.index(eos_id) + 1] if eos_id in ids else ids


def measure(row: Row, prompts, answers, tokenizer, eos_id: int, counter: list[int]) -> None:
    """Run one chunk through one row and add its counts and time."""
    before = counter[0]
    start = time.perf_counter()
    outputs = row.run(prompts)
    row.seconds += time.perf_counter() - start
    row.forwards += counter[0] - before
    for out, answer in zip(outputs, answers):
        out = cut_at_eos(out, eos_id)
        row.tokens += sum(t != eos_id for t in out)
        row.correct += score_exact(tokenizer.decode(out), answer)
        row.n += 1


@torch.no_grad()
def run_bench(model, tokenizer, settings: BenchSettings, progress: Callable[[str], None] | None = None) -> list[dict]:
    """-> one dict per row (see the module docstring), the reference first with speedup 1.0."""
    model.eval()
    examples = heldout(settings.n)
    prompts = [encode_example(m, a, tokenizer, eos_id=model.config.eos_id)[0] for m, a in examples]
    answers = [a for _, a in examples]
    rows = make_rows(model, settings)
    for row in rows:  # warm-up: first calls allocate
        row.run(prompts[:1])
    counter, handles = count_forwards(model, *[row.model for row in rows if row.model is not None])
    chunk = max(settings.chunk, settings.batch)
    try:
        for start in range(0, len(prompts), chunk):
            for row in rows:
                measure(row, prompts[start : start + chunk], answers[start : start + chunk], tokenizer,
                        model.config.eos_id, counter)
            if progress:
                progress(f"{min(start + chunk, len(prompts))}/{len(prompts)} examples")
    finally:
        for handle in handles:
            handle.remove()
    ref_tps = rows[0].tokens / max(rows[0].seconds, 1e-9)
    return [row.as_dict(ref_tps) for row in rows]


def format_table(rows: list[dict]) -> str:
    header = (f"{'row':<28} {'policy':<9} {'cache':<6} {'batch':>5} {'accuracy':>8} {'tok/fwd':>8} "
              f"{'tok/s':>9} {'speedup':>8}")
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(f"{r['name']:<28} {r['policy']:<9} {r['cache']:<6} {r['batch']:>5} {r['accuracy']:>8.3f} "
                     f"{r['tokens_per_forward']:>8.2f} {r['tokens_per_s']:>9.1f} {r['speedup']:>7.1f}x")
    return "\n".join(lines)
