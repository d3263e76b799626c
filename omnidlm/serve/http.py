"""The HTTP edge every app shares: server limits, OpenAI's error shape, and the middlewares that run
before a route (body limit, request counting).

Errors use OpenAI's shape `{"error": {"message", "type", "param", "code"}}`: validation -> 400/422
naming the field, body too large -> 413, queue full -> 429 with Retry-After, per-request timeout ->
504, a failure inside the worker -> 500 with what failed. No handler lets a Python traceback or an
object repr reach the client.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from .metrics import Metrics


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

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception):  # a bug: say what, keep serving
        return JSONResponse(error_body(500, f"internal error ({type(error).__name__})"), 500)

    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)
    app.add_middleware(CountRequests, metrics=metrics)


class CountRequests:
    """Count every request once, by route and the status it was answered with (a plain ASGI
    middleware: it sees 413s, 429s and 504s exactly as the client does)."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = []

        async def send_counted(message):
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_counted)
        finally:
            self.metrics.count(self.route(scope), status[0] if status else 500)

    def route(self, scope) -> str:
        paths = {getattr(r, "path", None) for r in scope["app"].routes} if "app" in scope else set()
        return scope["path"] if scope["path"] in paths else "other"


class BodyLimit:
    """413 for a body above the limit: a declared Content-Length before anything is read, and a
    body without one (chunked) as soon as the bytes received pass the limit. A plain ASGI
    middleware: Starlette's BaseHTTPMiddleware would hide client disconnects from the routes."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        size = dict(scope.get("headers", [])).get(b"content-length", b"")
        if size.isdigit() and int(size) > self.max_bytes:
            await self.refuse(scope, receive, send, f"request body of {int(size)} bytes")
            return
        await self.app(scope, receive, send)

    async def refuse(self, scope, receive, send, what: str) -> None:
        message = f"{what} exceeds the limit of {self.max_bytes} bytes"
        await JSONResponse(error_body(413, message), 413)(scope, receive, send)
