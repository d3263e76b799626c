"""The OpenAI-compatible app for LLaDA-o models: chat with images, text-to-image and image edits.

    app = create_omni_app(model, tokenizer, name="lladao-digits")

Requests run one at a time in a worker thread (the omni samplers are not batched yet); at most
`max_queue` wait, beyond that a 429 with Retry-After. Chat answers arrive whole, so a streamed chat
is one event with the answer, then [DONE].
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid

from fastapi import FastAPI, File, Form, UploadFile
from fastapi.responses import StreamingResponse

from .app import APIError, Limits, install_common_routes, install_error_handlers
from .images import ImageError, decode_image, encode_png, open_image
from .metrics import Metrics
from .schemas import ChatRequest, CompletionRequest, ImageRequest


class OmniServer:
    def __init__(self, model, tokenizer, name: str, metrics: Metrics, limits: Limits, max_queue: int):
        self.model, self.tokenizer, self.name = model, tokenizer, name
        self.metrics, self.limits, self.max_queue = metrics, limits, max_queue
        self.lock, self.waiting = threading.Lock(), 0
        from ..sampling.omni import model_image_size

        self.size = model_image_size(model)

    async def run(self, fn, *args, **kwargs):
        """Run a sampler call in the worker thread, with the queue limit and the timeout."""
        if self.waiting >= self.max_queue + 1:
            raise APIError(429, f"server busy: {self.waiting} requests in flight", headers={"Retry-After": "1"})
        self.waiting += 1
        self.metrics.queue_depth = self.waiting - 1
        try:
            async with asyncio.timeout(self.limits.timeout_s):
                return await asyncio.to_thread(self._locked, fn, *args, **kwargs)
        except TimeoutError:
            raise APIError(504, f"request timed out after {self.limits.timeout_s} s") from None
        except ValueError as error:  # the samplers' own checks (empty prompt, no generator, ...)
            raise APIError(400, str(error)) from None
        finally:
            self.waiting -= 1

    def _locked(self, fn, *args, **kwargs):
        with self.lock:
            return fn(*args, **kwargs)

    def question(self, body: ChatRequest):
        """The last user message's text and image (decoded, size-checked)."""
        user = [m for m in body.messages if m.role == "user"]
        if not user:
            raise APIError(400, "messages hold no user message", "messages")
        content = user[-1].content
        if isinstance(content, str):
            return content, None
        text = " ".join(p.text for p in content if p.type == "text" and p.text)
        urls = [p.image_url.url for p in content if p.type == "image_url" and p.image_url]
        if urls and not self.model.can_see:
            raise APIError(400, f"model {self.name!r} has no vision encoder", "messages")
        try:
            image = decode_image(urls[0], self.limits.max_image_pixels) if urls else None
        except ImageError as error:
            raise APIError(400, f"image_url: {error}", "messages") from None
        return text, image

    async def answer(self, text: str, image, threshold: float | None, block_length: int | None):
        from ..sampling.omni import understand

        return await self.run(understand, self.model, self.tokenizer, image, text,
                              block_length=block_length or 32, threshold=threshold or 0.95)

    async def draw(self, prompt: str, n: int, seed: int | None, size: str | None, steps, cfg, image=None):
        from ..sampling.image import draw_lladao

        if not self.model.can_draw:
            raise APIError(400, f"model {self.name!r} has no image generator", "model")
        if size is not None and size != f"{self.size}x{self.size}":
            raise APIError(400, f"size {size!r} is not supported; this model draws {self.size}x{self.size}", "size")
        images = await self.run(draw_lladao, self.model, self.tokenizer, [prompt], n=n, seed=seed or 0,
                                steps=steps or 30, cfg=4.0 if cfg is None else cfg, image=image)
        return {"created": int(time.time()), "data": [{"b64_json": encode_png(im)} for im in images]}


def completion_body(server: OmniServer, kind: str, answer, prompt_tokens: int) -> dict:
    chat = kind == "chat.completion"
    choice = {"index": 0, "finish_reason": "stop",
              **({"message": {"role": "assistant", "content": answer.text}} if chat else {"text": answer.text})}
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(answer.ids),
             "total_tokens": prompt_tokens + len(answer.ids)}
    return {"id": f"omnidlm-{uuid.uuid4().hex[:12]}", "object": kind, "created": int(time.time()),
            "model": server.name, "choices": [choice], "usage": usage}


def one_event_stream(body: dict):
    """The whole answer as one chat.completion.chunk, a final chunk, then [DONE]."""
    text = body["choices"][0]["message"]["content"]
    for delta, reason in ((text, None), ("", "stop")):
        chunk = {**body, "object": "chat.completion.chunk",
                 "choices": [{"index": 0, "delta": {"role": "assistant", "content": delta}, "finish_reason": reason}]}
        yield f"data: {json.dumps(chunk)}\n\n"
    yield "data: [DONE]\n\n"


def create_omni_app(model, tokenizer, name: str = "lladao", max_queue: int = 16, limits: Limits | None = None) -> FastAPI:
    limits = limits or Limits()
    app, metrics = FastAPI(title="omnidlm", version="0.1.0"), Metrics()
    server = OmniServer(model, tokenizer, name, metrics, limits, max_queue)
    install_error_handlers(app, metrics, limits)
    install_common_routes(app, name, metrics)

    @app.post("/v1/chat/completions")
    async def chat(body: ChatRequest):
        text, image = server.question(body)
        answer = await server.answer(text, image, body.threshold, body.block_length)
        metrics.count("/v1/chat/completions", 200)
        metrics.tokens_generated += len(answer.ids)
        out = completion_body(server, "chat.completion", answer, len(tokenizer.encode(text)))
        return StreamingResponse(one_event_stream(out), media_type="text/event-stream") if body.stream else out

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest):
        answer = await server.answer(body.prompt, None, body.threshold, body.block_length)
        metrics.count("/v1/completions", 200)
        return completion_body(server, "text_completion", answer, len(tokenizer.encode(body.prompt)))

    @app.post("/v1/images/generations")
    async def generations(body: ImageRequest):
        out = await server.draw(body.prompt, body.n, body.seed, body.size, body.steps, body.cfg_scale)
        metrics.count("/v1/images/generations", 200)
        return out

    @app.post("/v1/images/edits")
    async def edits(image: UploadFile = File(...), prompt: str = Form(...), n: int = Form(1),
                    size: str | None = Form(None), seed: int | None = Form(None)):
        try:
            source = open_image(await image.read(), limits.max_image_pixels)
        except ImageError as error:
            raise APIError(400, f"image: {error}", "image") from None
        if not 1 <= n <= 8:
            raise APIError(422, "n: must be between 1 and 8", "n")
        out = await server.draw(prompt, n, seed, size, None, None, image=source)
        metrics.count("/v1/images/edits", 200)
        return out

    return app
