"""Continuous batching for the server: one worker thread drives the batched engine, async request
handlers submit work and await its events.

ONE engine serves every request: each row carries its own sampling settings (temperature, top-p,
threshold, steps per block, seed; `sampling/rows.py`), so requests with different settings share
forwards and no engine is built per settings tuple. Only the block length is the engine's: a
request with another block length gets an engine of its own, dropped as soon as it is idle (at most
`MAX_ENGINES` at once; more wait their turn). Each engine step is one denoising step of every
active row, a finished row's slot is refilled from the queue, and a cancelled request (client
gone, stop string, timeout) frees its slot at once.

    scheduler = Scheduler(model, max_batch=8, max_queue=64)
    ticket = scheduler.submit(prompt_ids, Settings(max_new_tokens=64))
    async for tokens, result in ticket.events(): ...   # committed tokens so far; the Result at the end

A request's prefix may be `Deferred` (LLaDA-o's image questions, sampling/prefix.py): the worker
takes every message waiting at once and builds the deferred prefixes of those requests in one
batch (one ViT forward) before admitting them, so their features are computed together, on the
worker, and not one forward per request on the HTTP threads (which on a small CPU fight the worker
for the interpreter).

The worker is supervised: an error while admitting a request fails that request (`WorkFailed`,
raised from `ticket.events()`), an error while stepping an engine fails the rows of that engine
and drops it; the worker itself keeps running, and `health()` says what state it is in.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import queue
import threading
import time
from dataclasses import dataclass

import torch

from ..sampling.engine import BatchEngine, Request, Result, SamplingConfig
from ..sampling.prefix import Deferred, resolve
from ..sampling.policies import FixedSteps, Threshold
from ..sampling.rows import RowSettings

MAX_ENGINES = 4  # distinct block lengths decoded at once


class QueueFull(Exception):
    """More requests are waiting than the server accepts; the client should retry later."""


class WorkFailed(Exception):
    """The worker could not run a request: `status` is the HTTP status the client gets."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


@dataclass(frozen=True)
class Settings:
    """The sampling settings a request may choose."""

    max_new_tokens: int = 128
    temperature: float = 0.0
    top_p: float | None = None
    threshold: float | None = 0.9  # None: fixed steps (the reference schedule)
    steps: int | None = None  # per block; None: the block length
    block_length: int | None = None  # None: the model's block size
    seed: int | None = None  # None: the engine's shared generator
    ban_ids: tuple[int, ...] = ()  # ids this answer never holds (the system's, e.g. Uni's image ids)

    def row(self, block_length: int) -> RowSettings:
        """This request's row of the engine's batch."""
        steps = self.steps or block_length
        policy = FixedSteps(steps) if self.threshold is None else Threshold(self.threshold, steps)
        return RowSettings(temperature=self.temperature, top_p=self.top_p, policy=policy, ban_ids=self.ban_ids)


def default_engine_config(model_cfg, block_length: int) -> SamplingConfig:
    """What stays per engine by default: the block length and the cache of the model's attention."""
    cache = "exact" if model_cfg.attention == "block" else "approx"
    return SamplingConfig(block_length=block_length, cache=cache)


class Ticket:
    """One request's channel from the worker thread to its async handler."""

    def __init__(self, request_id: int, loop: asyncio.AbstractEventLoop):
        self.id, self.loop = request_id, loop
        self._events: asyncio.Queue = asyncio.Queue()
        self.sent = 0  # committed tokens already announced

    def push(self, tokens: list[int], result: Result | WorkFailed | None) -> None:
        """Called from the worker thread."""
        self.loop.call_soon_threadsafe(self._events.put_nowait, (tokens, result))

    async def events(self):
        """Yield (committed tokens so far, None) as the answer grows, then (tokens, Result);
        raise WorkFailed when the worker could not run the request."""
        while True:
            tokens, result = await self._events.get()
            if isinstance(result, WorkFailed):
                raise result
            yield tokens, result
            if result is not None:
                return


class Scheduler:
    def __init__(self, model, max_batch: int = 8, max_queue: int = 64, engine_config=None,
                 engine_options: dict | None = None):
        """`engine_config(block_length) -> SamplingConfig`: what stays per engine (default: the
        cache of the model's attention); `engine_options`: more BatchEngine arguments (graphs)."""
        self.model, self.max_batch, self.max_queue = model, max_batch, max_queue
        self.engine_options = engine_options or {}
        self.engine_config = engine_config or functools.partial(default_engine_config, model.config)
        self.block_size = model.config.block_size
        self.engines: dict[int, BatchEngine] = {}  # by block length; the model's own is kept
        self.owner: dict[int, int] = {}  # request id -> the block length of the engine that runs it
        self.waiting: list[tuple] = []  # requests whose block length has no engine yet (MAX_ENGINES busy)
        self.tickets: dict[int, Ticket] = {}
        self.inbox: queue.Queue = queue.Queue()
        self.ids = itertools.count()
        self.tokens_generated = 0
        self.steps = 0  # engine steps run
        self.row_steps = 0  # rows those steps ran (row_steps / steps: the mean batch)
        self.largest_batch = 0  # the most rows one step ran
        self.prefix_batches = 0  # calls of deferred-prefix builders
        self.prefixes_built = 0  # deferred prefixes they built
        self.cancelled = 0  # requests dropped while queued or decoding (client gone, stop, timeout)
        self.failures = 0  # requests the worker failed (an error while admitting or stepping them)
        self.last_error: str | None = None
        self.worker = threading.Thread(target=self._run, name="omnidlm-engine", daemon=True)
        self.worker.start()

    @property
    def outstanding(self) -> int:
        return len(self.tickets)

    @property
    def queue_depth(self) -> int:
        return max(0, self.outstanding - self.max_batch)

    @property
    def active_rows(self) -> int:
        return sum(len(engine.rows) for engine in list(self.engines.values()))

    def health(self) -> dict:
        """The worker's real state: whether it runs, what it holds, the requests it failed."""
        return {"worker": "running" if self.worker.is_alive() else "stopped", "active_rows": self.active_rows,
                "queue_depth": self.queue_depth, "failed_requests": self.failures, "last_error": self.last_error}

    def submit(self, prompt_ids: list[int], settings: Settings, prefix=None) -> Ticket:
        """Queue a request (`prefix`: embeddings before its canvas, sampling/prefix.py); QueueFull
        when max_batch + max_queue requests are already in."""
        if self.outstanding >= self.max_batch + self.max_queue:
            raise QueueFull(f"{self.outstanding} requests in flight, the limit is {self.max_batch + self.max_queue}")
        ticket = Ticket(next(self.ids), asyncio.get_running_loop())
        self.tickets[ticket.id] = ticket
        self.inbox.put(("add", ticket.id, (prompt_ids, prefix), settings))
        return ticket

    def cancel(self, ticket: Ticket) -> None:
        if ticket.id in self.tickets:
            self.inbox.put(("cancel", ticket.id, None, None))

    # -- the worker thread -------------------------------------------------------------------
    def _run(self) -> None:
        torch.set_grad_enabled(False)
        while True:
            try:
                busy = [b for b, e in self.engines.items() if e.busy]
                self._take_messages(block=not busy and not self.waiting)
                for block in busy:
                    self._step(block)
                self._drop_idle_engines()
            except Exception as error:  # a bug outside any one request: note it and keep serving
                self.last_error = describe(error)
                time.sleep(0.01)

    def _take_messages(self, block: bool) -> None:
        """Every message waiting (when idle, waiting for the first); the deferred prefixes of the
        requests taken together are built first, in one batch."""
        try:
            messages = [self.inbox.get(timeout=0.5) if block else self.inbox.get_nowait()]
        except queue.Empty:
            return
        while True:
            try:
                messages.append(self.inbox.get_nowait())
            except queue.Empty:
                break
        for message in self._build_prefixes(messages):
            self._handle(*message)

    def _build_prefixes(self, messages: list[tuple]) -> list[tuple]:
        """The messages with their deferred prefixes built, all in one batch; if the batch fails,
        one by one, so only a request whose own prefix fails is failed (and left out)."""
        todo = [i for i, m in enumerate(messages) if m[0] == "add" and isinstance(m[2][1], Deferred)]
        if not todo:
            return messages
        try:
            built = resolve([messages[i][2][1] for i in todo])
            self.prefix_batches += 1
        except Exception:
            built = [self._build_one(messages[i]) for i in todo]
        self.prefixes_built += sum(p is not None for p in built)
        out = list(messages)
        for i, prefix in zip(todo, built):
            kind, request_id, (prompt_ids, _), settings = messages[i]
            out[i] = None if prefix is None else (kind, request_id, (prompt_ids, prefix), settings)
        return [m for m in out if m is not None]

    def _build_one(self, message: tuple):
        try:
            prefix = resolve([message[2][1]])[0]
            self.prefix_batches += 1
            return prefix
        except Exception as error:
            self._fail_admission(message[1], error)
            return None

    def _fail_admission(self, request_id, error: Exception) -> None:
        if isinstance(error, ValueError):  # validated before submit; a failure here still must answer
            self._fail([request_id], WorkFailed(400, str(error)))
        else:
            self._fail([request_id], WorkFailed(500, f"the engine could not admit the request: {describe(error)}"))

    def _handle(self, kind, request_id, prompt, settings) -> None:
        if kind == "cancel":
            self._cancel(request_id)
            return
        try:
            block = settings.block_length or self.block_size
            if block not in self.engines and len(self.engines) >= MAX_ENGINES:
                self.waiting.append((kind, request_id, prompt, settings))
                return
            if block not in self.engines:
                self.engines[block] = BatchEngine(self.model, self.engine_config(block), max_batch=self.max_batch,
                                                  **self.engine_options)
            prompt_ids, prefix = prompt
            request = Request(prompt_ids, settings.max_new_tokens, id=request_id, settings=settings.row(block),
                              seed=settings.seed, prefix=prefix)
            self.engines[block].add(request)
            self.owner[request_id] = block
        except Exception as error:
            self._fail_admission(request_id, error)

    def _cancel(self, request_id) -> None:
        owner = self.owner.pop(request_id, None)
        if owner is not None and self.engines[owner].cancel(request_id):
            self.cancelled += 1
        kept = [w for w in self.waiting if w[1] != request_id]
        self.cancelled += len(self.waiting) - len(kept)
        self.waiting = kept
        self._finish(request_id, [], Result(request_id, [], 0, "cancelled"))

    def _drop_idle_engines(self) -> None:
        """Free the engines of other block lengths once idle, then admit what waited for one."""
        for block in [b for b, e in self.engines.items() if not e.busy and b != self.block_size]:
            del self.engines[block]
        waiting, self.waiting = self.waiting, []
        for message in waiting:
            self._handle(*message)

    def _step(self, block: int) -> None:
        engine = self.engines[block]
        try:
            finished = engine.step()
        except Exception as error:  # its rows' state is unknown now: fail them, start afresh
            del self.engines[block]
            rows = [rid for rid, owner in self.owner.items() if owner == block]
            self._fail(rows, WorkFailed(500, f"the engine failed while decoding: {describe(error)}"))
            return
        ran = len(engine.rows) + len(finished)
        self.steps, self.row_steps = self.steps + 1, self.row_steps + ran
        self.largest_batch = max(self.largest_batch, ran)
        for request_id, tokens in engine.progress().items():
            ticket = self.tickets.get(request_id)
            if ticket is not None and len(tokens) > ticket.sent:
                ticket.sent = len(tokens)
                ticket.push(tokens, None)
        for result in finished:
            self.owner.pop(result.id, None)
            self.tokens_generated += len(result.tokens)
            self._finish(result.id, result.tokens, result)

    def _fail(self, request_ids: list[int], failure: WorkFailed) -> None:
        self.failures += len(request_ids)
        self.last_error = failure.message
        for request_id in request_ids:
            self.owner.pop(request_id, None)
            self._finish(request_id, [], failure)

    def _finish(self, request_id: int, tokens: list[int], result: Result | WorkFailed) -> None:
        ticket = self.tickets.pop(request_id, None)
        if ticket is not None:
            ticket.push(tokens, result)


def describe(error: BaseException) -> str:
    """An error for a client or a log line: its kind and message, never a repr of objects."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text[:300]}" if text else type(error).__name__
