"""The HTTP edge every app shares: server limits, OpenAI's error shape, and the middlewares that run
before a route (host check, cross-site check, body limit, request counting and the access log).

Errors use OpenAI's shape `{"error": {"message", "type", "param", "code"}}`: validation -> 400/422
naming the field, body too large -> 413, queue full -> 429 with Retry-After, per-request timeout ->
504, a failure inside the worker -> 500 with what failed. No handler lets a Python traceback or an
object repr reach the client.

Browsers: the server sends no CORS headers, so a page on another origin can neither read an answer
nor send a preflighted (JSON) request. Two checks cover what a browser sends without asking:
the Host header must name one of the server's host names (`allowed_hosts`; a DNS-rebinding page
sends its own name), and a POST that carries an `Origin` other than the server's own is refused
with 403 (a cross-site form posting to /v1/images/edits). Clients that are not browsers send no
Origin and are not affected.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from .metrics import Metrics

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
log = logging.getLogger("omnidlm.serve")


@dataclass
class Limits:
    """What a request may ask for (the `omnidlm serve` flags)."""

    max_body_bytes: int = 8 * 2**20
    max_tokens: int = 1024
    timeout_s: float = 120.0
    max_image_pixels: int = 4096 * 4096
    max_n: int = 8  # choices (or images) per request
    max_block_length: int | None = None  # None: the model's maximum sequence length
    max_image_steps: int = 100  # ODE / denoising steps of a drawing
    max_image_prompt_tokens: int = 256
    allowed_hosts: tuple[str, ...] | None = LOOPBACK_HOSTS  # Host header names; None: any


class APIError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.headers = status, message, param, headers or {}


def error_body(status: int, message: str, param: str | None = None) -> dict:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return {"error": {"message": message, "type": kind, "param": param, "code": status}}


def field_error(error: RequestValidationError) -> tuple[str, str | None]:
    """pydantic's first complaint -> (message naming the field, field path)."""
    first = error.errors()[0] if error.errors() else {"loc": (), "msg": "invalid request"}
    field = ".".join(str(p) for p in first["loc"] if p != "body") or None
    message = str(first["msg"]).removeprefix("Value error, ")
    return (f"{field}: {message}" if field else message), field


def install_error_handlers(app: FastAPI, metrics: Metrics, limits: Limits) -> None:
    @app.exception_handler(APIError)
    async def api_error(request: Request, error: APIError):
        return JSONResponse(error_body(error.status, error.message, error.param), error.status, headers=error.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError):
        message, field = field_error(error)
        return JSONResponse(error_body(422, message, field), 422)

    @app.exception_handler(HTTPException)  # 404, 405, a body that does not parse, ...
    async def http_error(request: Request, error: HTTPException):
        return JSONResponse(error_body(error.status_code, str(error.detail)), error.status_code,
                            headers=getattr(error, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception):  # a bug: say what, keep serving
        return JSONResponse(error_body(500, f"internal error ({type(error).__name__})"), 500)

    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)
    app.add_middleware(SameSite, allowed_hosts=limits.allowed_hosts)
    app.add_middleware(CountRequests, metrics=metrics)  # outermost: it sees every answer


class CountRequests:
    """Count every request once, by route and the status it was answered with, and log one access
    line for it (a plain ASGI middleware: it sees 403s, 413s, 429s and 504s as the client does)."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status, start = [], time.perf_counter()

        async def send_counted(message):
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_counted)
        finally:
            code = status[0] if status else 500
            self.metrics.count(self.route(scope), code)
            client = "%s:%s" % tuple(scope["client"]) if scope.get("client") else "-"
            log.info('%s "%s %s" %d %.0f ms', client, scope["method"], scope["path"], code,
                     1000 * (time.perf_counter() - start))

    def route(self, scope) -> str:
        paths = {getattr(r, "path", None) for r in scope["app"].routes} if "app" in scope else set()
        return scope["path"] if scope["path"] in paths else "other"


class SameSite:
    """403 for a Host header that is not one of the server's names (DNS rebinding) and for a POST
    whose Origin is another site than the server's own (a cross-site form)."""

    def __init__(self, app, allowed_hosts: tuple[str, ...] | None):
        self.app, self.allowed = app, None if allowed_hosts is None else {h.lower() for h in allowed_hosts}

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}
            host = headers.get("host", "")
            if self.allowed is not None and host_name(host) not in self.allowed:
                message = f"host {host_name(host) or '(none)'!r} is not served here; allowed: {sorted(self.allowed)}"
                await JSONResponse(error_body(403, message, "host"), 403)(scope, receive, send)
                return
            origin = headers.get("origin")
            if scope["method"] == "POST" and origin and urlsplit(origin).netloc.lower() != host.lower():
                message = f"cross-site request from origin {origin!r} refused"
                await JSONResponse(error_body(403, message, "origin"), 403)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def host_name(host: str) -> str:
    """'example.com:8000' -> 'example.com', '[::1]:8000' -> '::1'."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class BodyTooLarge(HTTPException):
    def __init__(self, max_bytes: int):
        super().__init__(413, f"request body exceeds the limit of {max_bytes} bytes")


class BodyLimit:
    """413 for a body above the limit: a declared Content-Length before anything is read, and a
    body without one (chunked) as soon as the bytes received pass the limit (the route's body
    reader gets `BodyTooLarge`). A plain ASGI middleware: Starlette's BaseHTTPMiddleware would hide
    client disconnects from the routes."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        size = dict(scope.get("headers", [])).get(b"content-length", b"")
        if size.isdigit() and int(size) > self.max_bytes:
            message = f"request body of {int(size)} bytes exceeds the limit of {self.max_bytes} bytes"
            await JSONResponse(error_body(413, message), 413)(scope, receive, send)
            return
        received, started = 0, []

        async def counted_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def noted_send(message):
            started.append(message["type"] == "http.response.start")
            await send(message)

        try:
            await self.app(scope, counted_receive, noted_send)
        except BodyTooLarge as error:  # raised where no handler turned it into a response
            if not any(started):
                await JSONResponse(error_body(413, error.detail), 413)(scope, receive, send)


def check_model(requested: str | None, served: str) -> None:
    """404 for a `model` this server does not serve (None: the one it serves)."""
    if requested is not None and requested != served:
        raise APIError(404, f"model {requested!r} is not served here; this server serves {served!r}", "model")


def refuse_unsupported(body, fields: tuple[str, ...], route: str) -> None:
    """400 for a parameter the request set that this route would otherwise ignore."""
    given = [f for f in fields if f in body.model_fields_set and getattr(body, f) is not None]
    if given:
        raise APIError(400, f"{given[0]} is not supported by {route} on this model", given[0])
