"""Forwards at real shapes with random weights, against a ceiling measured in the same run.

    omnidlm bench --shape llada-60m --random-weights                  # one thread on the CPU
    omnidlm bench --shape llada-8b --random-weights --device cuda --dtype bfloat16 --batch-sizes 1,8
    omnidlm bench --shape llada-60m --random-weights --gen-lengths 256,512,1024,2048 --prompt-lengths 64,1024

A sampling run is made of four kinds of forward (docs/benchmarks.md):

| kind          | queries           | keys it attends over                   | head rows |
| ------------- | ----------------- | -------------------------------------- | --------- |
| full canvas   | prompt + answer   | the canvas (cache "none")              | all       |
| block exact   | one block         | the cached prefix + the block          | the block |
| block approx  | one block         | the whole cached canvas (dual cache)   | the block |
| refresh       | prompt + answer   | the canvas, written into the cache     | the block |

Each kind is timed through the model's own forward, and its *ceiling* is the sum of the times of
the same forward's matrix products and attention calls, each timed alone at the same shapes (the
same dtype, device and mask), alternating with the forward so both see the same machine. The
ratio ceiling / forward says how much of a forward is overhead (norms, rotary, gathers, cache
writes, Python). On a GPU the weight-streaming floor (weight bytes / measured copy bandwidth) is
printed beside it: no step of batch 1 can be faster.

Cost growth (`--gen-lengths`, `--prompt-lengths`): ms per generated token of a whole answer for
cache none / exact / approx, composed from forward times measured at the widths the answer's
blocks have (`steps` forwards per block; exact: one prefill of the prompt and the first block,
then the prefix grows block by block; approx: one refresh and `steps - 1` block forwards per
block). It is composed, not a whole generation: at 4k-token prompts a whole generation without a
cache takes hours on a CPU. The per-token cost of "exact" stays flat as the
answer grows, while "none" recomputes the whole canvas at every step.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..config import preset
from ..models.backbone import Backbone
from ..sampling.cache import KVCache

KINDS = ("full canvas", "block exact", "block approx", "refresh")


@dataclass(frozen=True)
class Shape:
    """One forward: `queries` query positions attending over `keys` keys, `head` rows through the head."""

    kind: str
    batch: int
    queries: int
    keys: int
    head: int
    cached: bool
    masked: bool  # a boolean mask (the block-causal engine passes one); else full attention


def forward_shapes(kind: str, batch: int, prompt: int, answer: int, block: int, width: int | None = None) -> Shape:
    """The shape of one forward of `kind`; `width`: the exact cache's key count (default: mid-answer)."""
    canvas = prompt + answer
    if kind == "full canvas":
        return Shape(kind, batch, canvas, canvas, canvas, cached=False, masked=False)
    if kind == "block exact":  # every query sees every key: the engine passes no mask
        keys = width or prompt + answer // 2 + block
        return Shape(kind, batch, block, keys, block, cached=True, masked=False)
    if kind == "block approx":
        return Shape(kind, batch, block, canvas, block, cached=True, masked=False)
    if kind == "refresh":
        return Shape(kind, batch, canvas, canvas, block, cached=True, masked=False)
    raise ValueError(f"unknown forward kind {kind!r}; valid kinds: {', '.join(KINDS)}")


def random_model(name: str, device: str = "cpu", dtype: torch.dtype = torch.float32, seed: int = 0) -> Backbone:
    """A randomly initialised model of the preset `name` (nothing is downloaded or read)."""
    torch.manual_seed(seed)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # built in `dtype`: an 8B model never exists in float32
    try:
        with torch.device(device):
            model = Backbone(preset(name))
    finally:
        torch.set_default_dtype(default)
    model.rotary = type(model.rotary)(model.config.rotary_dim, model.config.rope_theta).to(device)  # float32
    return model.eval()


# --- timing -----------------------------------------------------------------------------------------------


CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}
_clock = {"now": time.perf_counter}


def set_clock(name: str) -> None:
    """"wall" (the default) or "cpu": the calling thread's CPU time, which a shared machine's other
    jobs do not inflate (one torch thread on the CPU only: other threads' work is not counted)."""
    if name not in CLOCKS:
        raise ValueError(f"unknown clock {name!r}; valid clocks: {', '.join(CLOCKS)}")
    _clock["now"] = CLOCKS[name]


def now() -> float:
    return _clock["now"]()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _seconds(fn, device) -> float:
    _sync(device)
    start = now()
    fn()
    _sync(device)
    return now() - start


def alternate(fns: dict, device, repeats: int, warmup: int = 1) -> dict[str, float]:
    """Median seconds of each callable, run in turn `repeats` times after `warmup` rounds."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(_seconds(fn, device))
    return {name: statistics.median(t) for name, t in times.items()}


# --- the forward and its ceiling ------------------------------------------------------------------------------


def _mask(s: Shape, device) -> torch.Tensor | None:
    return torch.ones(s.batch, 1, s.queries, s.keys, dtype=torch.bool, device=device) if s.masked else None


def model_forward(model: Backbone, s: Shape):
    """A callable running the model's forward of shape `s` (through a KVCache when `s.cached`)."""
    cfg, dev = model.config, model.device
    tokens = torch.randint(0, cfg.vocab_size, (s.batch, s.queries), device=dev)
    positions = (s.keys - s.queries + torch.arange(s.queries, device=dev))[None].expand(s.batch, -1)
    head_at = (s.queries - s.head + torch.arange(s.head, device=dev))[None].expand(s.batch, -1)
    mask = _mask(s, dev)
    cache = KVCache.for_model(model, s.batch, s.keys) if s.cached else None

    starts = [s.keys - s.queries] * s.batch  # every row's slots are contiguous: the engine's slice copies

    @torch.no_grad()
    def run():
        if cache is not None:
            cache.begin(positions, positions, s.keys, starts=starts)
        at = None if s.head == s.queries else head_at
        return model(tokens, attention_mask=mask, position_ids=positions, kv_cache=cache, logits_at=at)

    return run


def _linear_shapes(model: Backbone, s: Shape) -> list[tuple[int, int, int, int]]:
    """(count, rows, in, out) of every matrix product of the forward: per layer qkv, o, MLP; the head."""
    cfg, rows = model.config, s.batch * s.queries
    qkv_out = (cfg.n_heads + 2 * cfg.kv_heads) * cfg.head_size
    out = [(cfg.n_layers, rows, cfg.hidden_size, qkv_out), (cfg.n_layers, rows, cfg.n_heads * cfg.head_size, cfg.hidden_size)]
    dense = cfg.n_layers if not cfg.is_moe else cfg.first_k_dense
    if dense:
        out += [(dense, rows, cfg.hidden_size, 2 * cfg.intermediate_size), (dense, rows, cfg.intermediate_size, cfg.hidden_size)]
    moe = cfg.n_layers - dense
    if moe:  # routed and shared experts as one product over every (token, expert) pair
        pairs = rows * (cfg.n_experts_per_tok + cfg.n_shared_experts)
        I = cfg.moe_intermediate_size
        out += [(moe, rows, cfg.hidden_size, cfg.n_experts), (moe, pairs, cfg.hidden_size, 2 * I), (moe, pairs, I, cfg.hidden_size)]
    return out + [(1, s.batch * s.head, cfg.hidden_size, cfg.vocab_size)]


def ceiling_parts(model: Backbone, s: Shape) -> list[tuple[int, float, object]]:
    """(count, flops, callable) of the forward's own products and attention calls, alone."""
    cfg, dev, dt = model.config, model.device, model.dtype
    parts = []
    for count, rows, d_in, d_out in _linear_shapes(model, s):
        x, w = torch.randn(rows, d_in, device=dev, dtype=dt), torch.randn(d_out, d_in, device=dev, dtype=dt)
        parts.append((count, 2.0 * rows * d_in * d_out, lambda x=x, w=w: F.linear(x, w)))
    q = torch.randn(s.batch, cfg.n_heads, s.queries, cfg.head_size, device=dev, dtype=dt)
    k, v = (torch.randn(s.batch, cfg.kv_heads, s.keys, cfg.head_size, device=dev, dtype=dt) for _ in range(2))
    mask, gqa = _mask(s, dev), cfg.kv_heads != cfg.n_heads
    flops = 4.0 * s.batch * cfg.n_heads * s.queries * s.keys * cfg.head_size
    parts.append((cfg.n_layers, flops, lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)))
    return parts


def copy_bandwidth(device, dtype, n_bytes: int = 1 << 28) -> float:
    """Bytes per second of a device-to-device copy (read + write counted once each)."""
    n = n_bytes // torch.tensor([], dtype=dtype).element_size()
    a = torch.empty(n, device=device, dtype=dtype)
    b = torch.empty_like(a)
    seconds = alternate({"copy": lambda: b.copy_(a)}, torch.device(device), repeats=5)["copy"]
    return 2 * n_bytes / seconds


def weight_bytes(model: Backbone) -> int:
    """Bytes a batch-1 step must stream: every weight but the embedding table (it is gathered)."""
    return sum(p.numel() * p.element_size() for n, p in model.named_parameters() if not n.startswith("embed."))


@torch.no_grad()
def measure_kind(model: Backbone, s: Shape, repeats: int) -> dict:
    """ms of the model's forward and of its ceiling, GFLOP/s and ceiling / forward, for one shape."""
    parts = ceiling_parts(model, s)
    fns = {"forward": model_forward(model, s), **{f"op{i}": fn for i, (_, _, fn) in enumerate(parts)}}
    times = alternate(fns, model.device, repeats)
    ceiling = sum(count * times[f"op{i}"] for i, (count, _, _) in enumerate(parts))
    flops = sum(count * f for count, f, _ in parts)
    forward = times["forward"]
    return {"kind": s.kind, "batch": s.batch, "queries": s.queries, "keys": s.keys, "ms": 1e3 * forward,
            "ceiling_ms": 1e3 * ceiling, "gflops": flops / forward / 1e9, "fraction": ceiling / forward}


def bench_shapes(model: Backbone, batches=(1,), prompt: int = 64, answer: int = 256, block: int = 32,
                 repeats: int = 5, progress=None) -> dict:
    """Every forward kind at every batch size; on a GPU also the weight-streaming floor."""
    rows = []
    for batch in batches:
        for kind in KINDS:
            if progress:
                progress(f"{kind}, batch {batch}")
            rows.append(measure_kind(model, forward_shapes(kind, batch, prompt, answer, block), repeats))
    out = {"rows": rows, "weight_bytes": weight_bytes(model)}
    if model.device.type == "cuda":
        bandwidth = copy_bandwidth(model.device, model.dtype)
        out["copy_bandwidth_gbs"] = bandwidth / 1e9
        out["weight_floor_ms"] = 1e3 * out["weight_bytes"] / bandwidth
    return out


# --- cost per generated token ---------------------------------------------------------------------------------


def _forward_ms(model, s: Shape, repeats: int) -> float:
    fn = model_forward(model, s)
    return 1e3 * alternate({"f": fn}, model.device, repeats)["f"]


def _exact_widths(prompt: int, answer: int, block: int, samples: int = 3) -> list[int]:
    """Key counts of a few of the answer's blocks, first to last (the rest are interpolated)."""
    n = answer // block
    picks = sorted({round(i * (n - 1) / max(1, samples - 1)) for i in range(samples)})
    return [prompt + (b + 1) * block for b in picks]


def _lerp(xs: list[int], ys: list[float], x: int) -> float:
    if len(xs) == 1 or x <= xs[0]:
        return ys[0]
    for (x0, y0), (x1, y1) in zip(zip(xs, ys), zip(xs[1:], ys[1:])):
        if x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return ys[-1]


@torch.no_grad()
def cost_growth(model: Backbone, gen_lengths, prompt_lengths, block: int = 32, steps: int = 8,
                repeats: int = 2, progress=None) -> list[dict]:
    """ms per generated token for cache none / exact / approx at every (prompt, answer) length."""
    rows = []
    for prompt in prompt_lengths:
        for answer in gen_lengths:
            if answer % block:
                raise ValueError(f"--gen-lengths: {answer} is not a multiple of the block length {block}")
            if progress:
                progress(f"prompt {prompt}, answer {answer}")
            n_blocks = answer // block
            full = _forward_ms(model, forward_shapes("full canvas", 1, prompt, answer, block), repeats)
            refresh = _forward_ms(model, forward_shapes("refresh", 1, prompt, answer, block), repeats)
            approx = _forward_ms(model, forward_shapes("block approx", 1, prompt, answer, block), repeats)
            widths = _exact_widths(prompt, answer, block)
            exact_ms = [_forward_ms(model, forward_shapes("block exact", 1, prompt, answer, block, w), repeats)
                        for w in widths]
            exact_total = steps * sum(_lerp(widths, exact_ms, prompt + (b + 1) * block) for b in range(n_blocks))
            prefill = _forward_ms(model, Shape("prefill", 1, prompt + block, prompt + block, block, True, True), repeats)
            rows.append({"prompt": prompt, "answer": answer,
                         "none": n_blocks * steps * full / answer,
                         "exact": (prefill + exact_total) / answer,  # the prompt's prefill, then the blocks
                         "approx": n_blocks * (refresh + (steps - 1) * approx) / answer})
    return rows


# --- tables ----------------------------------------------------------------------------------------------------


def format_kinds(result: dict) -> str:
    lines = ["| forward | batch | queries | keys | ms | ceiling ms | GFLOP/s | ceiling / forward |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in result["rows"]:
        lines.append(f"| {r['kind']} | {r['batch']} | {r['queries']} | {r['keys']} | {r['ms']:.2f} | "
                     f"{r['ceiling_ms']:.2f} | {r['gflops']:.1f} | {r['fraction']:.2f} |")
    if "weight_floor_ms" in result:
        lines.append(f"\nweight-streaming floor: {result['weight_bytes'] / 1e9:.2f} GB at "
                     f"{result['copy_bandwidth_gbs']:.0f} GB/s = {result['weight_floor_ms']:.2f} ms per step")
    return "\n".join(lines)


def format_growth(rows: list[dict]) -> str:
    lines = ["| prompt | answer | none ms/token | exact ms/token | approx ms/token |",
             "| ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['prompt']} | {r['answer']} | {r['none']:.2f} | {r['exact']:.2f} | {r['approx']:.2f} |")
    return "\n".join(lines)
