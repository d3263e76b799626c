"""Fixed-shape block steps, one per bucket: the GPU path of the engine (`BatchEngine(..., graphs=True)`).

A decoding step of the exact or approximate cache computes one block of every row (the exact
cache's [finished | next] block forward: two) against the cache. At batch 1-8 on a GPU such a step
is a few milliseconds of kernels, hundreds of them, and launching each from Python is a large
share of the step (docs/benchmarks.md, "The GPU path", says what is measured and what is not).
So the engine pads each block step to a *bucket*:

- rows: the next power of two (capped at the engine's `max_batch`); the extra rows are padding,
  their queries write the cache's trash slot and their logits are dropped;
- queries: a whole number of blocks (1 or 2);
- keys: the cache width rounded up to `width_step` slots (empty slots are masked).

A bucket's step has fixed shapes, reads and writes only buffers that never move (the cache is
allocated once at `max_length`, `KVCache(static=True)`), and makes no host synchronisation. On CUDA
each bucket is captured once as a CUDA graph (`torch.cuda.CUDAGraph`, all buckets sharing one
memory pool) and replayed: the step's input tensors are copied into the graph's own, one replay,
the logits read from the graph's output. Elsewhere (the CPU), and for models whose step reads the
host (the MoE dispatch, nn/moe.py, counts tokens per expert on the host), the same fixed-shape step
runs eagerly: what the CPU tests check is that bucket steps give the tokens of the unpadded engine.

Prefills (a prompt, a prefix), the approximate cache's refreshes and steps without a cache keep
their own shapes and run eagerly: they happen once per block or per request.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F

WIDTH_STEP = 256  # key slots per width bucket: a step attends over at most this many empty slots


@dataclass
class _Graph:
    graph: object  # torch.cuda.CUDAGraph
    inputs: tuple[torch.Tensor, ...]  # the graph's own input tensors (copied into before a replay)
    output: torch.Tensor  # the graph's output (valid until the next replay of any bucket)


class StepGraphs:
    """Buckets of fixed-shape block steps; `run(key, fn, *tensors)` runs fn(*tensors) at one bucket."""

    def __init__(self, model, max_batch: int, block: int, width_step: int = WIDTH_STEP):
        self.max_batch, self.block, self.width_step = max_batch, block, width_step
        self.capture = next(model.parameters()).device.type == "cuda" and _capturable(model)
        self.graphs: dict[tuple, _Graph] = {}
        self.pool = self.stream = None  # one memory pool and one capture stream for every bucket's graph
        self.replays = 0

    def bucket(self, rows: int, queries: int, width: int, length: int) -> tuple[int, int, int] | None:
        """-> (rows, queries, width) of the bucket a step of these sizes runs at, or None when the
        step is not a block step (more than two blocks of queries: a prefill)."""
        blocks = -(-queries // self.block)
        if blocks > 2:
            return None
        padded_rows = min(1 << (rows - 1).bit_length(), self.max_batch)
        padded_width = min(-(-width // self.width_step) * self.width_step, length)
        return padded_rows, blocks * self.block, padded_width

    def fit(self, q_pos, valid, plan: dict, logits_at, length: int):
        """A step of the engine (query positions and validity (n, Lq), its plan, the head's query
        indices (n, K)) -> (its bucket, the same padded to it), or (None, unchanged) for a step
        that is not a block step. Padded rows and queries are invalid: they write the trash slot."""
        bucket = self.bucket(q_pos.shape[0], q_pos.shape[1], plan["width"], length)
        if bucket is None:
            return None, q_pos, valid, plan, logits_at
        (rows, queries, width), (n, Lq) = bucket, q_pos.shape
        grow, more = (0, queries - Lq, 0, rows - n), (0, rows - n)
        plan = {**plan, "width": width, "starts": None, "dense": False,  # a captured step always scatters, masks
                **{k: None if plan[k] is None else F.pad(plan[k], more) for k in ("shift", "rope", "length")}}
        return bucket, F.pad(q_pos, grow), F.pad(valid, grow), plan, F.pad(logits_at, (0, 0) + more)

    def run(self, key: tuple, fn, *tensors: torch.Tensor) -> torch.Tensor:
        """fn(*tensors) -> a tensor; on CUDA through the bucket's graph (captured at its first step)."""
        if not self.capture:
            return fn(*tensors)
        g = self.graphs.get(key)
        if g is None:
            g = self._capture(fn, tensors)
            if g is None:
                return fn(*tensors)
            self.graphs[key] = g
        for mine, given in zip(g.inputs, tensors):
            mine.copy_(given)
        g.graph.replay()
        self.replays += 1
        return g.output

    def _capture(self, fn, tensors) -> _Graph | None:
        """Warm up on a side stream (a step's writes into the cache are the same at every run of
        the same inputs), capture, -> the graph; None (and eager from now on) if capture fails."""
        inputs = tuple(t.clone() for t in tensors)
        if self.pool is None:  # warm-ups and captures on one stream: the per-stream library handles
            self.pool, self.stream = torch.cuda.graph_pool_handle(), torch.cuda.Stream()  # exist before a capture
        self.stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self.stream):
            for _ in range(2):
                fn(*inputs)
        torch.cuda.current_stream().wait_stream(self.stream)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph, pool=self.pool, stream=self.stream, capture_error_mode="thread_local"):
                output = fn(*inputs)
        except RuntimeError as error:  # a host read inside the step: this model's steps stay eager
            warnings.warn(f"CUDA graph capture failed, block steps run eagerly: {error}", RuntimeWarning, stacklevel=3)
            self.capture = False
            return None
        return _Graph(graph, inputs, output)


def _capturable(model) -> bool:
    """False for models whose forward reads the device from the host (MoE expert dispatch)."""
    from ..nn.moe import MoE

    return not any(isinstance(m, MoE) for m in model.modules())


def compiled(model):
    """One compiled forward (inductor, dynamic shapes) for every step: on a GPU the fast path, on
    the CPU the same graph tested against eager (tests/test_engine_compile.py). The engine always
    passes a mask and writes the cache by scatter when compiled, so the graph's structure never
    changes; sizes are symbolic and not unified by value (no duck sizing), so a step whose queries
    happen to equal its keys or its batch does not recompile."""
    fn = torch.compile(model, dynamic=True)

    def forward(*args, **kwargs):
        with torch.fx.experimental._config.patch(use_duck_shape=False):
            return fn(*args, **kwargs)
    return forward
