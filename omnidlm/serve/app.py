"""The OpenAI-compatible app: routes, limits and errors, over the continuous-batching scheduler.

    app = create_app(model, tokenizer, name="text-tiny")
    uvicorn.run(app, host="127.0.0.1", port=8000)

Errors use OpenAI's shape `{"error": {"message", "type", "param", "code"}}`: validation -> 400/422
naming the field, body too large -> 413, queue full -> 429 with Retry-After, per-request timeout ->
504, a model without an image generator asked for images -> 400. A bad request never stops the
server.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, StreamingResponse

from .metrics import Metrics
from .scheduler import QueueFull, Scheduler, Settings
from .schemas import ChatRequest, CompletionRequest, ImageRequest, stop_strings

WEB_PAGE = Path(__file__).parent / "web" / "index.html"


@dataclass
class Limits:
    max_body_bytes: int = 8 * 2**20
    max_tokens: int = 1024
    timeout_s: float = 120.0
    max_image_pixels: int = 4096 * 4096


class APIError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.headers = status, message, param, headers or {}


def error_body(status: int, message: str, param: str | None = None) -> dict:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return {"error": {"message": message, "type": kind, "param": param, "code": status}}


def create_app(model, tokenizer, name: str = "omnidlm", max_batch: int = 8, max_queue: int = 64,
               limits: Limits | None = None) -> FastAPI:
    limits = limits or Limits()
    app = FastAPI(title="omnidlm", version="0.1.0")
    app.state.scheduler = Scheduler(model, max_batch=max_batch, max_queue=max_queue)
    app.state.metrics = Metrics()
    server = Server(model, tokenizer, name, app.state.scheduler, app.state.metrics, limits)
    install_error_handlers(app, app.state.metrics, limits)
    install_common_routes(app, name, app.state.metrics, server.refresh_metrics)
    install_text_routes(app, server)
    return app


def install_error_handlers(app: FastAPI, metrics: Metrics, limits: Limits) -> None:
    @app.exception_handler(APIError)
    async def api_error(request: Request, error: APIError):
        metrics.count(request.url.path, error.status)
        return JSONResponse(error_body(error.status, error.message, error.param), error.status, headers=error.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError):
        first = error.errors()[0] if error.errors() else {"loc": (), "msg": "invalid request"}
        field = ".".join(str(p) for p in first["loc"] if p != "body") or None
        metrics.count(request.url.path, 422)
        return JSONResponse(error_body(422, f"{field}: {first['msg']}" if field else first["msg"], field), 422)

    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)


class BodyLimit:
    """413 for a declared body above the limit, before it is read. A plain ASGI middleware:
    Starlette's BaseHTTPMiddleware would hide client disconnects from the routes."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        size = dict(scope.get("headers", [])).get(b"content-length", b"") if scope["type"] == "http" else b""
        if size.isdigit() and int(size) > self.max_bytes:
            message = f"request body of {int(size)} bytes exceeds the limit of {self.max_bytes}"
            await JSONResponse(error_body(413, message), 413)(scope, receive, send)
            return
        await self.app(scope, receive, send)


class Server:
    """What the routes do, apart from HTTP: prompts in, choices out."""

    def __init__(self, model, tokenizer, name, scheduler, metrics, limits):
        self.model, self.tokenizer, self.name = model, tokenizer, name
        self.scheduler, self.metrics, self.limits = scheduler, metrics, limits

    def settings(self, body, prompt_len: int) -> Settings:
        """Sampling settings of a request; without max_tokens, all the room the model has left."""
        room = self.model.config.max_seq_len - prompt_len
        max_tokens = body.max_tokens or min(self.limits.max_tokens, room)
        if max_tokens > self.limits.max_tokens:
            raise APIError(400, f"max_tokens ({max_tokens}) exceeds the server's limit of {self.limits.max_tokens}",
                           "max_tokens")
        return Settings(max_new_tokens=max_tokens, temperature=body.temperature,
                        top_p=body.top_p if body.top_p < 1.0 else None, threshold=body.threshold or 0.9,
                        steps=body.steps, block_length=body.block_length)

    def refresh_metrics(self) -> None:
        self.metrics.queue_depth = self.scheduler.queue_depth
        self.metrics.tokens_generated = self.scheduler.tokens_generated
        self.metrics.requests_cancelled = self.scheduler.cancelled

    def chat_prompt(self, body: ChatRequest) -> list[int]:
        messages = []
        for i, message in enumerate(body.messages):
            if isinstance(message.content, str):
                messages.append({"role": message.role, "content": message.content})
                continue
            if any(part.type == "image_url" for part in message.content):
                raise APIError(400, f"messages.{i}: this model has no vision encoder; send text only",
                               f"messages.{i}.content")
            text = "".join(part.text or "" for part in message.content)
            messages.append({"role": message.role, "content": text})
        return self.tokenizer.encode_chat(messages)

    def check_prompt(self, ids: list[int], settings: Settings) -> None:
        if len(ids) + settings.max_new_tokens > self.model.config.max_seq_len:
            raise APIError(400, f"prompt ({len(ids)} tokens) + max_tokens ({settings.max_new_tokens}) exceeds the "
                                f"model's maximum length {self.model.config.max_seq_len}", "max_tokens")

    def submit(self, ids, settings):
        try:
            return self.scheduler.submit(ids, settings)
        except QueueFull as error:
            raise APIError(429, f"server busy: {error}", headers={"Retry-After": "1"}) from None

    def text(self, tokens: list[int], stops: list[str]) -> tuple[str, bool]:
        """Decoded answer (EOS dropped), cut at the first stop string; -> (text, whether it stopped)."""
        eos = self.model.config.eos_id
        text = self.tokenizer.decode([t for t in tokens if t != eos])
        cuts = [text.find(s) for s in stops if s and s in text]
        return (text[: min(cuts)], True) if cuts else (text, False)

    async def complete(self, ids, settings, stops) -> tuple[str, str, int]:
        """Run one request to the end; -> (text, finish reason, completion tokens)."""
        ticket = self.submit(ids, settings)
        try:
            async with asyncio.timeout(self.limits.timeout_s):
                async for tokens, result in ticket.events():
                    text, stopped = self.text(tokens, stops)
                    if stopped:
                        return text, "stop", len(tokens)
                    if result is not None:
                        return text, "stop" if result.finish_reason == "eos" else "length", len(tokens)
        except TimeoutError:
            raise APIError(504, f"request timed out after {self.limits.timeout_s} s") from None
        finally:
            self.scheduler.cancel(ticket)  # stopped, timed out or abandoned: free the row
        raise APIError(500, "the engine ended the request without a result")

    async def stream(self, ids, settings, stops, make_chunk):
        """Server-sent events: one chunk per committed block, then [DONE]."""
        ticket = self.submit(ids, settings)
        sent = ""
        try:
            async with asyncio.timeout(self.limits.timeout_s):
                async for tokens, result in ticket.events():
                    text, stopped = self.text(tokens, stops)
                    if len(text) > len(sent):
                        yield f"data: {json.dumps(make_chunk(text[len(sent):], None))}\n\n"
                        sent = text
                    if stopped or result is not None:
                        reason = "stop" if stopped or result.finish_reason == "eos" else "length"
                        yield f"data: {json.dumps(make_chunk('', reason))}\n\n"
                        break
        except TimeoutError:
            yield f"data: {json.dumps(error_body(504, 'request timed out'))}\n\n"
        finally:
            self.scheduler.cancel(ticket)
        yield "data: [DONE]\n\n"


def install_common_routes(app: FastAPI, name: str, metrics: Metrics, refresh=lambda: None) -> None:
    """The page, health, metrics and model list: the same for every kind of model."""

    @app.get("/", response_class=HTMLResponse)
    async def page():
        return WEB_PAGE.read_text()

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": name}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def render_metrics():
        refresh()
        return metrics.render()

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": name, "object": "model", "owned_by": "omnidlm"}]}


def install_text_routes(app: FastAPI, server: Server) -> None:
    @app.post("/v1/chat/completions")
    async def chat(body: ChatRequest, request: Request):
        ids = server.chat_prompt(body)
        settings = server.settings(body, len(ids))
        return await respond(server, "chat.completion", ids, settings, body, request)

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        ids = server.tokenizer.encode(body.prompt)
        settings = server.settings(body, len(ids))
        return await respond(server, "text_completion", ids, settings, body, request)

    @app.post("/v1/images/generations")
    async def images(body: ImageRequest):
        raise APIError(400, f"model {server.name!r} has no image generator", "model")

    @app.post("/v1/images/edits")
    async def edits():
        raise APIError(400, f"model {server.name!r} has no image generator", "model")


async def cancel_on_disconnect(request: Request, work: asyncio.Future, every_s: float = 0.25) -> None:
    """Cancel `work` when the client goes away (its rows are then freed by `Server.complete`)."""
    while not work.done():
        if await request.is_disconnected():
            work.cancel()
            return
        await asyncio.sleep(every_s)


async def respond(server: Server, kind: str, ids, settings, body, request: Request):
    route = request.url.path
    server.check_prompt(ids, settings)
    stops = stop_strings(body.stop)
    rid, created = f"omnidlm-{uuid.uuid4().hex[:12]}", int(time.time())
    chat = kind == "chat.completion"
    server.metrics.count(route, 200)
    if body.stream:
        def chunk(text, reason):
            delta = {"role": "assistant", "content": text} if chat else None
            choice = {"index": 0, "finish_reason": reason, **({"delta": delta} if chat else {"text": text})}
            return {"id": rid, "object": f"{kind}.chunk" if chat else kind, "created": created,
                    "model": server.name, "choices": [choice]}
        return StreamingResponse(server.stream(ids, settings, stops, chunk), media_type="text/event-stream")
    work = asyncio.ensure_future(asyncio.gather(*[server.complete(ids, settings, stops) for _ in range(body.n)]))
    watcher = asyncio.create_task(cancel_on_disconnect(request, work))
    try:
        outputs = await work
    except asyncio.CancelledError:
        if asyncio.current_task().cancelling():  # this handler itself is being cancelled
            raise
        return JSONResponse(error_body(499, "client closed the request"), 499)  # nobody is listening
    finally:
        watcher.cancel()
    choices = [{"index": i, "finish_reason": reason,
                **({"message": {"role": "assistant", "content": text}} if chat else {"text": text})}
               for i, (text, reason, _) in enumerate(outputs)]
    completion_tokens = sum(n for _, _, n in outputs)
    usage = {"prompt_tokens": len(ids), "completion_tokens": completion_tokens,
             "total_tokens": len(ids) + completion_tokens}
    return {"id": rid, "object": kind, "created": created, "model": server.name, "choices": choices, "usage": usage}
