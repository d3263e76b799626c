"""The OpenAI-compatible app, ONE for every system: routes appear per capability (chat with image
parts for systems that see, /v1/images/* for systems that draw), text answers run on ONE scheduler
over one engine with per-row settings, drawings and edits in the image worker.

    app = create_app(model, tokenizer, name="uni-digits")
    uvicorn.run(app, host="127.0.0.1", port=8000)

What a system answers with is its backend (`backends.py`). Errors use OpenAI's shape (see
`http.py`). A bad request never stops the server: what the model and the flags cannot run (a
prompt that fills the context, `steps` or `block_length` beyond their bounds, `n` above `--max-n`)
is refused before it reaches the worker, and what fails inside a worker fails only that request.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
import uuid
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, StreamingResponse

from .backends import Prompt, backend_for
from .http import APIError, Limits, check_model, error_body, install_error_handlers, refuse_unsupported
from .images import ImageError, decode_image, encode_png
from .jobs import JobRunner
from .metrics import Metrics
from .scheduler import QueueFull, Scheduler, Settings, WorkFailed
from .schemas import ChatRequest, CompletionRequest, stop_strings

__all__ = ["APIError", "Limits", "Server", "create_app"]

WEB_PAGE = Path(__file__).parent / "web" / "index.html"


def create_app(model, tokenizer, name: str = "omnidlm", max_batch: int = 8, max_queue: int = 64,
               limits: Limits | None = None, graphs: bool = False) -> FastAPI:
    """`graphs`: the engines run block steps at bucket shapes, CUDA graphs on a GPU (sampling/graphs.py)."""
    from .image_routes import install_image_routes

    limits = limits or Limits()
    backend = backend_for(model, tokenizer)
    if graphs and backend.engine_config(backend.engine_model.config.block_size).cache == "none":
        raise ValueError(f"--graphs runs cached block steps; {name}'s server samples without a cache")
    app = FastAPI(title="omnidlm", version="0.1.0")
    app.state.scheduler = Scheduler(backend.engine_model, max_batch=max_batch, max_queue=max_queue,
                                    engine_config=backend.engine_config, engine_options={"graphs": graphs})
    app.state.metrics = Metrics()
    server = Server(backend, name, app.state.scheduler, app.state.metrics, limits)
    app.state.server = server
    install_error_handlers(app, app.state.metrics, limits)
    install_common_routes(app, name, app.state.metrics, server.refresh_metrics, server.health)
    install_text_routes(app, server)
    install_image_routes(app, server)
    return app


class Server:
    """What the routes do, apart from HTTP: prompts in, choices out."""

    def __init__(self, backend, name, scheduler, metrics, limits):
        self.backend, self.name = backend, name
        self.model, self.tokenizer, self.config = backend.model, backend.tokenizer, backend.config
        self.scheduler, self.metrics, self.limits = scheduler, metrics, limits
        drawn = "draw" in backend.capabilities
        self.jobs = JobRunner(backend.model, max_queue=scheduler.max_queue) if drawn else None

    def health(self) -> dict:
        return {**self.scheduler.health(), **(self.jobs.health() if self.jobs else {}),
                "capabilities": list(self.backend.capabilities)}

    async def run_job(self, fn, *args, **kwargs):
        """A whole-call job in the image worker, with the queue limit and the timeout."""
        try:
            return await self.jobs.run(fn, *args, timeout_s=self.limits.timeout_s, **kwargs)
        except QueueFull as error:
            raise APIError(429, f"server busy: {error}", headers={"Retry-After": "1"}) from None
        except TimeoutError:
            raise APIError(504, f"request timed out after {self.limits.timeout_s} s") from None
        except WorkFailed as failure:
            raise APIError(failure.status, failure.message) from None
        except ValueError as error:  # the samplers' own checks (empty prompt, no generator, ...)
            raise APIError(400, str(error)) from None

    def settings(self, body, prompt: Prompt, prompt_field: str) -> Settings:
        """Sampling settings of a request, checked against the model and the server's limits;
        without max_tokens, all the room the model has left (up to the server's limit)."""
        n_max, prompt_len = self.config.max_seq_len, prompt.length
        room = n_max - prompt_len
        if room <= 0:
            raise APIError(400, f"the prompt ({prompt_len} tokens) fills the model's maximum length ({n_max} "
                                "tokens): nothing is left for an answer", prompt_field)
        max_tokens = body.max_tokens or min(self.backend.default_max_tokens or self.limits.max_tokens, room)
        if max_tokens > self.limits.max_tokens:
            raise APIError(400, f"max_tokens ({max_tokens}) exceeds the server's limit of {self.limits.max_tokens}",
                           "max_tokens")
        if prompt_len + max_tokens > n_max:
            raise APIError(400, f"prompt ({prompt_len} tokens) + max_tokens ({max_tokens}) exceeds the "
                                f"model's maximum length {n_max}", "max_tokens")
        self.check_block(body)
        threshold = self.backend.default_threshold if body.threshold is None else body.threshold
        return Settings(max_new_tokens=max_tokens, temperature=body.temperature,
                        top_p=body.top_p if body.top_p < 1.0 else None, threshold=threshold,
                        steps=body.steps, block_length=body.block_length, seed=body.seed, ban_ids=prompt.ban_ids)

    def check_block(self, body) -> int:
        """block_length within the model's length (or --max-block-length), steps within the block;
        -> the block length the request decodes with."""
        bound = self.limits.max_block_length or self.config.max_seq_len
        block = body.block_length or self.config.block_size
        if block > bound:
            raise APIError(400, f"block_length ({block}) exceeds the limit of {bound}", "block_length")
        if body.steps is not None and body.steps > block:
            raise APIError(400, f"steps ({body.steps}) exceeds block_length ({block}): a block commits at least "
                                "one token per step", "steps")
        if body.n > self.limits.max_n:
            raise APIError(400, f"n ({body.n}) exceeds the server's limit of {self.limits.max_n}", "n")
        return block

    def refresh_metrics(self) -> None:
        self.metrics.queue_depth = self.scheduler.queue_depth
        self.metrics.active_rows = self.scheduler.active_rows
        self.metrics.tokens_generated = self.scheduler.tokens_generated
        self.metrics.requests_cancelled = self.scheduler.cancelled
        s, m = self.scheduler, self.metrics
        m.engine_steps, m.engine_row_steps, m.engine_batch_max = s.steps, s.row_steps, s.largest_batch
        m.prefix_batches, m.prefixes_built = s.prefix_batches, s.prefixes_built
        if self.jobs is not None:
            self.metrics.queue_depth += max(0, self.jobs.pending - 1)

    def chat_messages(self, body: ChatRequest) -> tuple[list[dict], list]:
        """The messages as text, and the images of their image parts (decoded, size-checked), in order."""
        messages, urls = [], []
        for i, message in enumerate(body.messages):
            if isinstance(message.content, str):
                messages.append({"role": message.role, "content": message.content})
                continue
            parts = [p.image_url.url for p in message.content if p.type == "image_url" and p.image_url]
            if parts and "see" not in self.backend.capabilities:
                raise APIError(400, f"messages.{i}: model {self.name!r} has no vision encoder; send text only",
                               f"messages.{i}.content")
            urls += [(i, url) for url in parts]
            text = " ".join(p.text for p in message.content if p.type == "text" and p.text)
            messages.append({"role": message.role, "content": text})
        if not any(m["role"] == "user" for m in messages):
            raise APIError(400, "messages hold no user message", "messages")
        return messages, [self.image(url, f"messages.{i}.content") for i, url in urls]

    def image(self, url: str, field: str):
        try:
            return decode_image(url, self.limits.max_image_pixels, self.backend.image_mode)
        except ImageError as error:
            raise APIError(400, f"image_url: {error}", field) from None

    async def prompt(self, build, text_chars: int, field: str) -> Prompt:
        """Prompt ids, off the event loop; a text that cannot fit is refused before tokenising
        (a token covers at most `longest_token` characters). The mask id is never a prompt id."""
        bound = 2 * self.config.max_seq_len * longest_token(self.tokenizer)
        if text_chars > bound:
            raise APIError(400, f"the prompt ({text_chars} characters) cannot fit in the model's maximum length "
                                f"({self.config.max_seq_len} tokens)", field)
        try:
            prompt = await asyncio.to_thread(build)
        except ValueError as error:  # the backend's own checks (an empty question, ...)
            raise APIError(400, str(error), field) from None
        if self.config.mask_id in prompt.ids:
            raise APIError(400, "the prompt holds the mask token: it is not text a prompt may contain", field)
        return prompt

    def submit(self, prompt: Prompt, settings, n: int = 1):
        """n tickets for one request, all or none (429 when the queue cannot take them all)."""
        tickets = []
        try:
            for i in range(n):  # choice i of a seeded request draws with seed + i
                seed = None if settings.seed is None else (settings.seed + i) % 2**64
                tickets.append(self.scheduler.submit(prompt.ids, dataclasses.replace(settings, seed=seed),
                                                     prefix=prompt.prefix))
        except QueueFull as error:
            for ticket in tickets:
                self.scheduler.cancel(ticket)
            raise APIError(429, f"server busy: {error}", headers={"Retry-After": "1"}) from None
        return tickets

    def text(self, tokens: list[int], stops: list[str]) -> tuple[str, bool]:
        """Decoded answer (EOS dropped), cut at the first stop string; -> (text, whether it stopped)."""
        text = self.backend.decode(tokens)
        cuts = [text.find(s) for s in stops if s and s in text]
        return (text[: min(cuts)], True) if cuts else (text, False)

    async def complete(self, ticket, stops) -> tuple[str, str, list[int]]:
        """Run one request to the end; -> (text, finish reason, completion tokens)."""
        try:
            async with asyncio.timeout(self.limits.timeout_s):
                async for tokens, result in ticket.events():
                    text, stopped = self.text(tokens, stops)
                    if stopped:
                        return text, "stop", tokens
                    if result is not None:
                        return text, "stop" if result.finish_reason == "eos" else "length", tokens
        except TimeoutError:
            raise APIError(504, f"request timed out after {self.limits.timeout_s} s") from None
        except WorkFailed as failure:
            raise APIError(failure.status, failure.message) from None
        finally:
            self.scheduler.cancel(ticket)  # stopped, timed out or abandoned: free the row
        raise APIError(500, "the engine ended the request without a result")

    async def stream(self, tickets, stops, make_chunk):
        """Server-sent events: one chunk per committed block of each choice, then [DONE]; a failure
        or a timeout after the headers went out is an error event in OpenAI's shape."""
        events: asyncio.Queue = asyncio.Queue()
        feeds = [asyncio.create_task(self._feed(i, t, stops, make_chunk, events)) for i, t in enumerate(tickets)]
        try:
            async with asyncio.timeout(self.limits.timeout_s):
                for _ in tickets:  # until every choice has ended
                    while (event := await events.get()) is not None:
                        yield event
        except TimeoutError:
            yield f"data: {json.dumps(error_body(504, f'request timed out after {self.limits.timeout_s} s'))}\n\n"
        finally:
            for feed in feeds:
                feed.cancel()
            for ticket in tickets:
                self.scheduler.cancel(ticket)
        yield "data: [DONE]\n\n"

    async def _feed(self, index, ticket, stops, make_chunk, events: asyncio.Queue) -> None:
        """One choice's chunks into `events`, then None."""
        sent = ""
        try:
            async for tokens, result in ticket.events():
                text, stopped = self.text(tokens, stops)
                if len(text) > len(sent):
                    events.put_nowait(f"data: {json.dumps(make_chunk(index, text[len(sent):], None))}\n\n")
                    sent = text
                if stopped or result is not None:
                    reason = "stop" if stopped or result.finish_reason == "eos" else "length"
                    events.put_nowait(f"data: {json.dumps(make_chunk(index, '', reason))}\n\n")
                    break
        except WorkFailed as failure:
            events.put_nowait(f"data: {json.dumps(error_body(failure.status, failure.message))}\n\n")
        finally:
            self.scheduler.cancel(ticket)
            events.put_nowait(None)


def chat_chars(body: ChatRequest) -> int:
    """The characters of the messages' text (a text part joins the next with one space)."""
    total = 0
    for message in body.messages:
        if isinstance(message.content, str):
            total += len(message.content)
        else:
            texts = [p.text for p in message.content if p.type == "text" and p.text]
            total += sum(map(len, texts)) + max(0, len(texts) - 1)
    return total


def longest_token(tokenizer) -> int:
    """The most characters one token of the vocabulary stands for (cached on the tokenizer)."""
    if not hasattr(tokenizer, "_longest_token"):
        vocab = tokenizer.hf.get_vocab(with_added_tokens=True) if hasattr(tokenizer, "hf") else {"x" * 64: 0}
        tokenizer._longest_token = max(len(t) for t in vocab)
    return tokenizer._longest_token


def install_common_routes(app: FastAPI, name: str, metrics: Metrics, refresh=lambda: None,
                          health=lambda: {}) -> None:
    """The page, health, metrics and model list: the same for every kind of model. `health()`
    reports the worker; a stopped worker makes /health answer 503."""

    @app.get("/", response_class=HTMLResponse)
    async def page():
        return WEB_PAGE.read_text()

    @app.get("/health")
    async def health_route():
        state = health()
        ok = all(v != "stopped" for k, v in state.items() if k == "worker" or k.endswith("_worker"))
        return JSONResponse({"status": "ok" if ok else "error", "model": name, **state}, 200 if ok else 503)

    @app.get("/metrics", response_class=PlainTextResponse)
    async def render_metrics():
        refresh()
        return metrics.render()

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": name, "object": "model", "owned_by": "omnidlm"}]}


def install_text_routes(app: FastAPI, server: Server) -> None:
    backend = server.backend

    @app.post("/v1/chat/completions")
    async def chat(body: ChatRequest, request: Request):
        check_model(body.model, server.name)
        refuse_unsupported(body, ("cfg_scale",), "/v1/chat/completions")
        interleave = "image" in (body.modalities or ())
        if interleave and "interleave" not in backend.capabilities:
            raise APIError(400, f"model {server.name!r} does not answer with images", "modalities")
        if interleave and body.stream:
            raise APIError(400, "an answer with images is not streamed: drop stream or modalities", "stream")

        def build() -> Prompt:  # images decoded and the prompt built in ONE trip off the event loop
            messages, images = server.chat_messages(body)
            return backend.chat_prompt(messages, images, interleave)

        prompt = await server.prompt(build, chat_chars(body), "messages")
        settings = server.settings(body, prompt, "messages")
        return await respond(server, "chat.completion", prompt, settings, body, request)

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        check_model(body.model, server.name)
        refuse_unsupported(body, ("cfg_scale",), "/v1/completions")
        prompt = await server.prompt(lambda: backend.completion_prompt(body.prompt), len(body.prompt), "prompt")
        settings = server.settings(body, prompt, "prompt")
        return await respond(server, "text_completion", prompt, settings, body, request)


def completion_body(server: Server, kind: str, outputs, prompt_tokens: int, images=None) -> dict:
    """The OpenAI body of finished choices [(text, finish reason, tokens)]; `images[i]`: the
    base64 PNGs of choice i (an interleaved answer), as `message.images`."""
    chat = kind == "chat.completion"
    choices = []
    for i, (text, reason, _) in enumerate(outputs):
        message = {"role": "assistant", "content": text}
        if images is not None:
            message["images"] = [{"b64_json": b} for b in images[i]]
        choices.append({"index": i, "finish_reason": reason, **({"message": message} if chat else {"text": text})})
    completion_tokens = sum(len(tokens) for _, _, tokens in outputs)
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
             "total_tokens": prompt_tokens + completion_tokens}
    return {"id": f"omnidlm-{uuid.uuid4().hex[:12]}", "object": kind, "created": int(time.time()),
            "model": server.name, "choices": choices, "usage": usage}


async def cancel_on_disconnect(request: Request, work: asyncio.Future, every_s: float = 0.25) -> None:
    """Cancel `work` when the client goes away (its rows are then freed by `Server.complete`)."""
    while not work.done():
        if await request.is_disconnected():
            work.cancel()
            return
        await asyncio.sleep(every_s)


async def respond(server: Server, kind: str, prompt: Prompt, settings, body, request: Request):
    stops = stop_strings(body.stop)
    rid, created = f"omnidlm-{uuid.uuid4().hex[:12]}", int(time.time())
    chat = kind == "chat.completion"
    tickets = server.submit(prompt, settings, body.n)  # a full queue is a 429 here, streamed or not
    if body.stream:
        def chunk(index, text, reason):
            delta = {"role": "assistant", "content": text} if chat else None
            choice = {"index": index, "finish_reason": reason, **({"delta": delta} if chat else {"text": text})}
            return {"id": rid, "object": f"{kind}.chunk" if chat else kind, "created": created,
                    "model": server.name, "choices": [choice]}
        return StreamingResponse(server.stream(tickets, stops, chunk), media_type="text/event-stream")
    work = asyncio.ensure_future(asyncio.gather(*[server.complete(t, stops) for t in tickets]))
    watcher = asyncio.create_task(cancel_on_disconnect(request, work))
    try:
        outputs = await work
    except asyncio.CancelledError:
        if asyncio.current_task().cancelling():  # this handler itself is being cancelled
            raise
        return JSONResponse(error_body(499, "client closed the request"), 499)  # nobody is listening
    finally:
        watcher.cancel()
        for ticket in tickets:
            server.scheduler.cancel(ticket)
    images = None
    if prompt.interleave:  # decode the images the answers hold (in the image worker)
        parts = [await server.run_job(server.backend.answer_parts, tokens) for _, _, tokens in outputs]
        outputs = [(text, reason, tokens) for (text, _), (_, reason, tokens) in zip(parts, outputs)]
        images = [[encode_png(im) for im in ims] for _, ims in parts]
    out = completion_body(server, kind, outputs, prompt.length, images)
    return {**out, "id": rid, "created": created}
