"""Whole-call jobs (drawing, editing) in one supervised worker thread, beside the text scheduler.

    jobs = JobRunner(model, max_queue=16)
    images = await jobs.run(draw, model, tokenizer, [prompt], timeout_s=120)

A job counts against the queue limit until it has really stopped, so the limit bounds the work the
model does, not only the requests waiting for an answer. A job whose client timed out (504) or left
is cancelled: a queued one never starts, a running one stops at the model's next forward (a hook on
the model and its direct children raises `Cancelled` in the worker thread only). A job that fails
fails alone: the thread keeps serving.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import threading
from dataclasses import dataclass, field

import torch

from .scheduler import QueueFull, WorkFailed, describe


class Cancelled(Exception):
    """Raised inside a cancelled job at its next forward."""


@dataclass
class Job:
    fn: object
    args: tuple
    kwargs: dict
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)
    cancelled: bool = False


class JobRunner:
    def __init__(self, model, max_queue: int = 16):
        self.max_queue = max_queue
        self.inbox: queue.Queue = queue.Queue()
        self.lock = threading.Lock()
        self.pending = 0  # jobs accepted and not yet stopped (running or queued)
        self.current: Job | None = None
        self.failures, self.cancelled, self.last_error = 0, 0, None
        for module in (model, *model.children()):
            module.register_forward_pre_hook(self._check_cancelled)
        self.thread = threading.Thread(target=self._run, name="omnidlm-images", daemon=True)
        self.thread.start()

    def health(self) -> dict:
        return {"image_worker": "running" if self.thread.is_alive() else "stopped", "image_jobs": self.pending,
                "image_jobs_failed": self.failures, "image_jobs_cancelled": self.cancelled}

    async def run(self, fn, *args, timeout_s: float, **kwargs):
        """Run `fn(*args, **kwargs)` in the worker; QueueFull beyond the limit, TimeoutError after
        `timeout_s` (the job is cancelled), WorkFailed(500) when it raised something else than a
        ValueError (a ValueError is the sampler's own check of its input: re-raised as is)."""
        with self.lock:
            if self.pending >= self.max_queue + 1:
                raise QueueFull(f"{self.pending} image jobs in flight, the limit is {self.max_queue + 1}")
            self.pending += 1
        job = Job(fn, args, kwargs)
        self.inbox.put(job)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(job.future), timeout_s)
        except BaseException:  # timed out, or the handler was cancelled (client gone)
            job.cancelled = True
            raise

    def _check_cancelled(self, module, args) -> None:
        job = self.current
        if job is not None and job.cancelled and threading.current_thread() is self.thread:
            raise Cancelled()

    def _run(self) -> None:
        torch.set_grad_enabled(False)
        while True:
            job = self.inbox.get()
            try:
                # False when the waiting handler already gave up (its wrapper cancelled the future)
                if not job.cancelled and job.future.set_running_or_notify_cancel():
                    self.current = job
                    self._call(job)
                if job.cancelled or job.future.cancelled():
                    self.cancelled += 1
            finally:
                self.current = None
                with self.lock:
                    self.pending -= 1

    def _call(self, job: Job) -> None:
        try:
            result = job.fn(*job.args, **job.kwargs)
        except (Cancelled, ValueError) as error:  # ValueError: the sampler's own check of its input
            job.future.set_exception(error)
        except Exception as error:
            self.failures += 1
            self.last_error = describe(error)
            job.future.set_exception(WorkFailed(500, f"the image job failed: {self.last_error}"))
        else:
            job.future.set_result(result)
