"""A whole generation through the engine against the summed ceilings of the forwards it ran.

    omnidlm bench --shape llada-60m --random-weights       # prints these rows after the forward kinds

`omnidlm/eval/shapes.py` times each forward kind through the model alone; this module runs what a
user runs: a `BatchEngine` generation (mask building, the plan, cache writes, the sampler over the
whole vocabulary, commits, bookkeeping), policy "fixed steps" so the forwards are known in advance,
no EOS stop. A forward hook records the shape of every forward (batch, queries, keys it attends
over, head rows, whether a mask was passed); each distinct shape's ceiling (`shapes.ceiling_parts`:
its matrix products and attention timed alone, the median of three rounds) is measured once per
repeat, alternating with the generation, and multiplied by its count. Rows (docs/benchmarks.md, "Forwards at a real shape"):

- `generation approx` / `generation exact`: wall-clock ms of the whole generation, the summed
  ceiling, ceiling / time;
- `step approx` / `step exact`: the engine's steps whose forward computes one block only (the
  cached block step; the refreshes and the exact cache's [finished | next] block forwards are in the
  generation rows), each step timed whole (forward, sampler, commit) and its forward alone; per
  forward shape the median step (as each ceiling is a median), and beside it every step summed.

"approx" runs the model's own LLaDA "full" layout, "exact" the "block" layout on the same weights
(SamplingConfig.attention), both from the same prompt.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict

import torch

from ..sampling.engine import BatchEngine, Request, SamplingConfig
from ..sampling.policies import FixedSteps
from .shapes import Shape, _sync, alternate, ceiling_parts, now

MODES = (("approx", "full"), ("exact", "block"))  # (cache, attention)


def record_forwards(model):
    """-> (a list of (Shape, forward seconds) per forward, the hooks' handles to remove)."""
    log, start = [], []

    def before(_module, args, kwargs):
        _sync(model.device)
        start.append(now())

    def after(_module, args, kwargs, _out):
        _sync(model.device)
        seconds = now() - start.pop()
        x = args[0] if args and args[0] is not None else kwargs.get("input_ids")
        if x is None:
            x = kwargs["inputs_embeds"]
        batch, queries = x.shape[:2]
        cache, at = kwargs.get("kv_cache"), kwargs.get("logits_at")
        head = queries if at is None else at.shape[1]
        keys = queries if cache is None else cache.width
        s = Shape("forward", batch, queries, keys, head, cached=cache is not None,
                  masked=kwargs.get("attention_mask") is not None)
        log.append((s, seconds))

    handles = [model.register_forward_pre_hook(before, with_kwargs=True),
               model.register_forward_hook(after, with_kwargs=True)]
    return log, handles


def generation_engine(model, cache: str, attention: str, batch: int, answer: int, block: int, steps: int,
                      **options) -> BatchEngine:
    """The engine the rows time (fixed steps per block, no EOS stop), `BatchEngine(..., **options)`.
    Repeats reuse one engine: its cache is grown (or its graphs captured) by the warm-up run."""
    cfg = SamplingConfig(max_new_tokens=answer, block_length=block, attention=attention, cache=cache,
                         policy=FixedSteps(steps), stop_at_eos=False)
    return BatchEngine(model, cfg, max_batch=batch, **options)


@torch.no_grad()
def timed_generation(engine: BatchEngine, prompts) -> dict:
    """One generation of `prompts` (one batch): total seconds, and per step its seconds and the
    shape and seconds of the forwards it ran (a step replayed as a CUDA graph runs no Python
    forward: it logs none)."""
    model = engine.model
    log, handles = record_forwards(model)
    step_log, done = [], {}
    replays = engine.graphs.replays if engine.graphs is not None else 0
    try:
        _sync(model.device)
        start = now()
        ids = [engine.add(Request(p)) for p in prompts]
        while engine.busy:
            t = now()
            before = len(log)
            done.update((r.id, r.tokens) for r in engine.step())
            _sync(model.device)
            step_log.append((now() - t, log[before:]))
        total = now() - start
    finally:
        for h in handles:
            h.remove()
    return {"seconds": total, "steps": step_log, "forwards": [s for s, _ in log], "tokens": [done[i] for i in ids],
            "replays": engine.graphs.replays - replays if engine.graphs is not None else 0}


def _ceilings(model, shapes, rounds: int = 3) -> dict[Shape, float]:
    """Seconds of each shape's ceiling (one repeat): its parts timed in turn (`shapes.alternate`:
    no part finds its weights left hot by itself), the median of `rounds`, times each part's count."""
    out = {}
    for s in shapes:
        parts = ceiling_parts(model, s)
        times = alternate({i: fn for i, (_, _, fn) in enumerate(parts)}, model.device, rounds)
        out[s] = sum(count * times[i] for i, (count, _, _) in enumerate(parts))
    return out


def _summary(run: dict, ceil: dict[Shape, float], block: int) -> dict:
    """One repeat -> the generation's sums and the block steps' (seconds). A block step's time
    and its forward's are, per shape, the median over that shape's steps times their count, as
    each ceiling is a median: a step that another process slowed counts in neither (the sums of
    every step, `step_sum` and `step_forward_sum`, are kept beside them)."""
    counts = Counter(run["forwards"])
    by_shape = defaultdict(list)  # the block steps' (step seconds, forward seconds), per forward shape
    for seconds, forwards in run["steps"]:
        if _is_block_step(forwards, block):
            by_shape[forwards[0][0]].append((seconds, forwards[0][1]))
    per_shape = lambda i: sum(len(t) * statistics.median(x[i] for x in t) for t in by_shape.values())  # noqa: E731
    every = lambda i: sum(x[i] for t in by_shape.values() for x in t)  # noqa: E731
    return {"seconds": run["seconds"], "ceiling": sum(n * ceil[s] for s, n in counts.items()),
            "step": per_shape(0), "step_forward": per_shape(1), "step_sum": every(0), "step_forward_sum": every(1),
            "step_ceiling": sum(len(t) * ceil[s] for s, t in by_shape.items()),
            "n_steps": sum(len(t) for t in by_shape.values()), "forwards": len(run["forwards"]), "shapes": len(counts)}


def _is_block_step(forwards: list, block: int) -> bool:
    """Whether a step's logged forwards are one cached forward of one block (the block step)."""
    return len(forwards) == 1 and forwards[0][0].cached and forwards[0][0].queries == block


def _prompts(model, batch: int, prompt: int, seed: int = 1) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    cfg = model.config
    low = min(cfg.mask_id, cfg.eos_id, cfg.pad_token_id)  # ordinary ids: below every special one
    return torch.randint(0, low, (batch, prompt), generator=g).tolist()


def bench_generation(model, batch: int = 1, prompt: int = 64, answer: int = 256, block: int = 32,
                     steps: int = 8, repeats: int = 3, progress=None) -> list[dict]:
    """Rows `generation approx|exact` and `step approx|exact` (module docstring); medians over
    `repeats` generations, each followed by its shapes' ceilings."""
    prompts = _prompts(model, batch, prompt)
    rows = []
    for cache, attention in MODES:
        if progress:
            progress(f"generation {cache} ({attention} attention), batch {batch}")
        engine = generation_engine(model, cache, attention, batch, answer, block, steps)
        timed_generation(engine, prompts)  # warm-up
        reps = []
        for _ in range(repeats):
            run = timed_generation(engine, prompts)
            reps.append(_summary(run, _ceilings(model, set(run["forwards"])), block))
        rows += _rows(reps, cache, attention, batch)
    return rows


def _rows(reps: list[dict], cache: str, attention: str, batch: int) -> list[dict]:
    med = lambda key: statistics.median(r[key] for r in reps)  # noqa: E731
    frac = lambda num, den: statistics.median(r[num] / r[den] for r in reps if r[den] > 0)  # noqa: E731
    base = {"cache": cache, "attention": attention, "batch": batch}
    gen = {"name": f"generation {cache}", **base, "forwards": reps[0]["forwards"], "shapes": reps[0]["shapes"],
           "ms": 1e3 * med("seconds"), "ceiling_ms": 1e3 * med("ceiling"), "fraction": frac("ceiling", "seconds")}
    n = reps[0]["n_steps"]
    if not n:
        return [gen]
    step = {"name": f"step {cache}", **base, "forwards": n, "ms": 1e3 * med("step") / n,
            "forward_ms": 1e3 * med("step_forward") / n, "ceiling_ms": 1e3 * med("step_ceiling") / n,
            "fraction": frac("step_ceiling", "step"), "forward_fraction": frac("step_ceiling", "step_forward"),
            "forward_sum_fraction": frac("step_ceiling", "step_forward_sum")}
    return [gen, step]


def format_generation(rows: list[dict]) -> str:
    lines = ["| run | batch | forwards | ms | forward ms | ceiling ms | ceiling / time | ceiling / forward "
             "| ceiling / forward, every step summed |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        fwd, ff, fs = (f"{r[k]:.2f}" if k in r else "" for k in ("forward_ms", "forward_fraction", "forward_sum_fraction"))
        lines.append(f"| {r['name']} | {r['batch']} | {r['forwards']} | {r['ms']:.2f} | {fwd} | "
                     f"{r['ceiling_ms']:.2f} | {r['fraction']:.2f} | {ff} | {fs} |")
    return "\n".join(lines)


def _side_by_side(variants: dict, prompts, cache: str, attention: str, answer: int, block: int, steps: int,
                  repeats: int) -> dict[str, list[dict]]:
    """{name: (model, engine options)} -> {name: its timed generations}, alternating: one warm-up
    round, then `repeats` rounds in which every variant runs once (both see the same machine)."""
    engines = {name: generation_engine(model, cache, attention, len(prompts), answer, block, steps, **options)
               for name, (model, options) in variants.items()}
    runs = {name: [] for name in variants}
    for _ in range(repeats + 1):
        for name, engine in engines.items():
            runs[name].append(timed_generation(engine, prompts))
    return {name: r[1:] for name, r in runs.items()}


def _median_ms(runs: dict[str, list[dict]]) -> dict[str, float]:
    """{name: its timed generations} -> {name: the median generation's milliseconds}."""
    return {name: 1e3 * statistics.median(r["seconds"] for r in v) for name, v in runs.items()}


def _agreement(a: list[list[int]], b: list[list[int]]) -> float:
    pairs = [(x, y) for ra, rb in zip(a, b) for x, y in zip(ra, rb)]
    return sum(x == y for x, y in pairs) / max(1, len(pairs))


def bench_int8(model, int8, batch: int = 1, prompt: int = 64, answer: int = 256, block: int = 32,
               steps: int = 8, repeats: int = 3, progress=None) -> list[dict]:
    """Rows `int8 approx|exact`: the whole generation on `int8` (nn/quantize.py) and on the float
    `model`, alternating, -> ms of each, tokens/s and the fraction of generated tokens equal to the
    float model's (random weights have no task to score: agreement is the exact-match change)."""
    prompts = _prompts(model, batch, prompt)
    rows = []
    for cache, attention in MODES:
        if progress:
            progress(f"int8 against float, {cache} ({attention} attention), batch {batch}")
        runs = _side_by_side({"float": (model, {}), "int8": (int8, {})}, prompts, cache, attention, answer, block,
                             steps, repeats)
        ms = _median_ms(runs)
        tokens = batch * answer
        rows.append({"name": f"int8 {cache}", "cache": cache, "attention": attention, "batch": batch,
                     "ms": ms["int8"], "float_ms": ms["float"], "tokens_per_s": tokens / ms["int8"] * 1e3,
                     "float_tokens_per_s": tokens / ms["float"] * 1e3, "speedup": ms["float"] / ms["int8"],
                     "token_match": _agreement(runs["float"][0]["tokens"], runs["int8"][0]["tokens"])})
    return rows


def format_int8(rows: list[dict]) -> str:
    lines = ["| run | batch | int8 ms | float ms | int8 tokens/s | float tokens/s | speedup | tokens equal to float |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['name']} | {r['batch']} | {r['ms']:.1f} | {r['float_ms']:.1f} | {r['tokens_per_s']:.1f} | "
                     f"{r['float_tokens_per_s']:.1f} | {r['speedup']:.2f}x | {r['token_match']:.3f} |")
    return "\n".join(lines)


def bench_graphs(model, batch: int = 1, prompt: int = 64, answer: int = 256, block: int = 32, steps: int = 8,
                 repeats: int = 3, progress=None) -> list[dict]:
    """Rows `graphs approx|exact`: whole generations with `BatchEngine(..., graphs=True)` (block
    steps at bucket shapes, replayed as CUDA graphs on a GPU; sampling/graphs.py) and without,
    alternating -> ms of each, the block steps' ms (the steps whose eager forward computed one
    block: fixed steps per block, so both runs take the same steps in the same order), how many
    steps replayed a CUDA graph (none on the CPU), and the fraction of tokens equal to eager's."""
    prompts = _prompts(model, batch, prompt)
    options = {"graphs": True, "max_length": prompt + answer + block}
    rows = []
    for cache, attention in MODES:
        if progress:
            progress(f"graphs against eager, {cache} ({attention} attention), batch {batch}")
        runs = _side_by_side({"eager": (model, {}), "graphs": (model, options)}, prompts, cache, attention, answer,
                             block, steps, repeats)
        eager_steps = runs["eager"][0]["steps"]
        blocks = [i for i, (_, forwards) in enumerate(eager_steps) if _is_block_step(forwards, block)]
        ms = _median_ms(runs)
        step = {k: 1e3 * statistics.median(statistics.median(r["steps"][i][0] for i in blocks) for r in v)
                for k, v in runs.items()} if blocks else {"eager": float("nan"), "graphs": float("nan")}
        rows.append({"name": f"graphs {cache}", "cache": cache, "attention": attention, "batch": batch,
                     "ms": ms["graphs"], "eager_ms": ms["eager"], "speedup": ms["eager"] / ms["graphs"],
                     "step_ms": step["graphs"], "eager_step_ms": step["eager"], "block_steps": len(blocks),
                     "replayed_steps": runs["graphs"][0]["replays"], "steps": len(eager_steps),
                     "token_match": _agreement(runs["eager"][0]["tokens"], runs["graphs"][0]["tokens"])})
    return rows


def format_graphs(rows: list[dict]) -> str:
    lines = ["| run | batch | graphs ms | eager ms | speedup | block step ms (graphs) | block step ms (eager) | "
             "steps replayed | tokens equal to eager |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['name']} | {r['batch']} | {r['ms']:.1f} | {r['eager_ms']:.1f} | {r['speedup']:.2f}x | "
                     f"{r['step_ms']:.2f} | {r['eager_step_ms']:.2f} | {r['replayed_steps']} of {r['steps']} | "
                     f"{r['token_match']:.3f} |")
    return "\n".join(lines)
