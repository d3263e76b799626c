"""Continuous batching for the server: one worker thread drives the batched engines, async request
handlers submit work and await its events.

Requests with the same sampling settings share one `BatchEngine`, so they share forwards; each
engine step is one denoising step of every active row, a finished row's slot is refilled from the
queue, and a cancelled request (client gone, stop string, timeout) frees its slot at once.

    scheduler = Scheduler(model, max_batch=8, max_queue=64)
    ticket = scheduler.submit(prompt_ids, Settings(max_new_tokens=64))
    async for tokens, result in ticket.events(): ...   # committed tokens so far; the Result at the end
"""

from __future__ import annotations

import asyncio
import itertools
import queue
import threading
from dataclasses import dataclass

import torch

from ..sampling.engine import BatchEngine, Request, Result, SamplingConfig
from ..sampling.policies import FixedSteps, Threshold


class QueueFull(Exception):
    """More requests are waiting than the server accepts; the client should retry later."""


@dataclass(frozen=True)
class Settings:
    """The sampling settings a request may choose; requests with equal settings batch together."""

    max_new_tokens: int = 128
    temperature: float = 0.0
    top_p: float | None = None
    threshold: float | None = 0.9  # None: fixed steps (the reference schedule)
    steps: int | None = None  # per block; None: the block length
    block_length: int | None = None

    def sampling_config(self, model_cfg) -> SamplingConfig:
        block = self.block_length or model_cfg.block_size
        steps = self.steps or block
        policy = FixedSteps(steps) if self.threshold is None else Threshold(self.threshold, steps)
        cache = "exact" if model_cfg.attention == "block" else "approx"
        return SamplingConfig(max_new_tokens=self.max_new_tokens, block_length=block, cache=cache, policy=policy,
                              temperature=self.temperature, top_p=self.top_p)


class Ticket:
    """One request's channel from the worker thread to its async handler."""

    def __init__(self, request_id: int, loop: asyncio.AbstractEventLoop):
        self.id, self.loop = request_id, loop
        self._events: asyncio.Queue = asyncio.Queue()
        self.sent = 0  # committed tokens already announced

    def push(self, tokens: list[int], result: Result | None) -> None:
        """Called from the worker thread."""
        self.loop.call_soon_threadsafe(self._events.put_nowait, (tokens, result))

    async def events(self):
        """Yield (committed tokens so far, None) as the answer grows, then (tokens, Result)."""
        while True:
            tokens, result = await self._events.get()
            yield tokens, result
            if result is not None:
                return


class Scheduler:
    def __init__(self, model, max_batch: int = 8, max_queue: int = 64):
        self.model, self.max_batch, self.max_queue = model, max_batch, max_queue
        self.engines: dict[Settings, BatchEngine] = {}
        self.owner: dict[int, Settings] = {}  # request id -> the engine that runs it
        self.tickets: dict[int, Ticket] = {}
        self.inbox: queue.Queue = queue.Queue()
        self.ids = itertools.count()
        self.tokens_generated = 0
        self.cancelled = 0  # requests dropped while queued or decoding (client gone, stop, timeout)
        self.worker = threading.Thread(target=self._run, name="omnidlm-engine", daemon=True)
        self.worker.start()

    @property
    def outstanding(self) -> int:
        return len(self.tickets)

    @property
    def queue_depth(self) -> int:
        return max(0, self.outstanding - self.max_batch)

    def submit(self, prompt_ids: list[int], settings: Settings) -> Ticket:
        """Queue a request; QueueFull when max_batch + max_queue requests are already in."""
        if self.outstanding >= self.max_batch + self.max_queue:
            raise QueueFull(f"{self.outstanding} requests in flight, the limit is {self.max_batch + self.max_queue}")
        ticket = Ticket(next(self.ids), asyncio.get_running_loop())
        self.tickets[ticket.id] = ticket
        self.inbox.put(("add", ticket.id, prompt_ids, settings))
        return ticket

    def cancel(self, ticket: Ticket) -> None:
        if ticket.id in self.tickets:
            self.inbox.put(("cancel", ticket.id, None, None))

    # -- the worker thread -------------------------------------------------------------------
    def _run(self) -> None:
        torch.set_grad_enabled(False)
        while True:
            busy = [s for s, e in self.engines.items() if e.busy]
            self._take_messages(block=not busy)
            for settings in busy:
                self._step(settings)

    def _take_messages(self, block: bool) -> None:
        try:
            message = self.inbox.get(timeout=0.5) if block else self.inbox.get_nowait()
        except queue.Empty:
            return
        while True:
            self._handle(*message)
            try:
                message = self.inbox.get_nowait()
            except queue.Empty:
                return

    def _handle(self, kind, request_id, prompt_ids, settings) -> None:
        if kind == "cancel":
            owner = self.owner.pop(request_id, None)
            if owner is not None and self.engines[owner].cancel(request_id):
                self.cancelled += 1
            self._finish(request_id, [], Result(request_id, [], 0, "cancelled"))
            return
        if settings not in self.engines:
            config = settings.sampling_config(self.model.config)
            self.engines[settings] = BatchEngine(self.model, config, max_batch=self.max_batch)
        try:
            self.engines[settings].add(Request(prompt_ids, settings.max_new_tokens, id=request_id))
            self.owner[request_id] = settings
        except ValueError as error:  # validated before submit; a failure here still must answer
            self._finish(request_id, [], Result(request_id, [], 0, f"error: {error}"))

    def _step(self, settings: Settings) -> None:
        engine = self.engines[settings]
        finished = engine.step()
        for request_id, tokens in engine.progress().items():
            ticket = self.tickets.get(request_id)
            if ticket is not None and len(tokens) > ticket.sent:
                ticket.sent = len(tokens)
                ticket.push(tokens, None)
        for result in finished:
            self.owner.pop(result.id, None)
            self.tokens_generated += len(result.tokens)
            self._finish(result.id, result.tokens, result)

    def _finish(self, request_id: int, tokens: list[int], result: Result) -> None:
        ticket = self.tickets.pop(request_id, None)
        if ticket is not None:
            ticket.push(tokens, result)
