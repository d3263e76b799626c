"""The OpenAI-compatible app for LLaDA-o models: chat with images, text-to-image and image edits.

    app = create_omni_app(model, tokenizer, name="lladao-digits")

Requests run one at a time in a supervised worker thread (`jobs.JobRunner`); at most `max_queue`
wait, beyond that a 429 with Retry-After; a request that times out (504) or whose client left is
cancelled at the model's next forward. Chat answers arrive whole, so a streamed chat is one event
with the answer, then [DONE].
"""

from __future__ import annotations

import json
import time
import uuid

from fastapi import FastAPI, File, Form, UploadFile
from fastapi.responses import StreamingResponse

from .app import install_common_routes, longest_token
from .http import APIError, Limits, check_model, install_error_handlers, refuse_unsupported
from .images import ImageError, decode_image, encode_png, open_image
from .jobs import JobRunner
from .metrics import Metrics
from .scheduler import QueueFull, WorkFailed
from .schemas import ChatRequest, CompletionRequest, ImageRequest


class OmniServer:
    def __init__(self, model, tokenizer, name: str, metrics: Metrics, limits: Limits, max_queue: int):
        self.model, self.tokenizer, self.name = model, tokenizer, name
        self.metrics, self.limits = metrics, limits
        self.jobs = JobRunner(model, max_queue)
        from ..sampling.omni import model_image_size

        self.size = model_image_size(model)

    async def run(self, fn, *args, **kwargs):
        """Run a sampler call in the worker thread, with the queue limit and the timeout."""
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
        finally:
            self.metrics.queue_depth = max(0, self.jobs.pending - 1)

    def check(self, n: int, steps: int | None, prompt: str, block_length: int | None = None) -> None:
        """The server's bounds on a request: n, image steps, prompt length, block length."""
        limits = self.limits
        if n > limits.max_n:
            raise APIError(400, f"n ({n}) exceeds the server's limit of {limits.max_n}", "n")
        if steps is not None and steps > limits.max_image_steps:
            raise APIError(400, f"steps ({steps}) exceeds the server's limit of {limits.max_image_steps}", "steps")
        if len(prompt) > limits.max_image_prompt_tokens * longest_token(self.tokenizer):
            raise APIError(400, f"prompt ({len(prompt)} characters) exceeds the limit of "
                                f"{limits.max_image_prompt_tokens} tokens", "prompt")
        length = len(self.tokenizer.encode(prompt))
        if length > limits.max_image_prompt_tokens:
            raise APIError(400, f"prompt ({length} tokens) exceeds the limit of {limits.max_image_prompt_tokens} "
                                "tokens", "prompt")
        bound = limits.max_block_length or self.model.config.llm.max_seq_len
        if block_length is not None and block_length > bound:
            raise APIError(400, f"block_length ({block_length}) exceeds the limit of {bound}", "block_length")

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
        from ..sampling.image import FlowSettings, draw_lladao

        if not self.model.can_draw:
            raise APIError(400, f"model {self.name!r} has no image generator", "model")
        if size is not None and size != f"{self.size}x{self.size}":
            raise APIError(400, f"size {size!r} is not supported; this model draws {self.size}x{self.size}", "size")
        self.check(n, steps, prompt)
        images = await self.run(draw_lladao, self.model, self.tokenizer, [prompt], n=n, seed=seed or 0,
                                settings=FlowSettings.euler(steps or 30, cfg_text_scale=4.0 if cfg is None else cfg),
                                image=image)
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


UNSUPPORTED = ("max_tokens", "temperature", "top_p", "seed", "stop", "steps", "cfg_scale")


def check_text_request(server: OmniServer, body, route: str) -> None:
    """The model served, and only the settings the understanding sampler has."""
    check_model(body.model, server.name)
    refuse_unsupported(body, UNSUPPORTED, route)
    if body.n != 1:
        raise APIError(400, f"n is not supported by {route} on this model (one answer per request)", "n")


def create_omni_app(model, tokenizer, name: str = "lladao", max_queue: int = 16, limits: Limits | None = None) -> FastAPI:
    limits = limits or Limits()
    app, metrics = FastAPI(title="omnidlm", version="0.1.0"), Metrics()
    server = OmniServer(model, tokenizer, name, metrics, limits, max_queue)
    app.state.server = server
    install_error_handlers(app, metrics, limits)
    install_common_routes(app, name, metrics, health=server.jobs.health)

    @app.post("/v1/chat/completions")
    async def chat(body: ChatRequest):
        check_text_request(server, body, "/v1/chat/completions")
        text, image = server.question(body)
        server.check(1, None, text, body.block_length)
        answer = await server.answer(text, image, body.threshold, body.block_length)
        metrics.tokens_generated += len(answer.ids)
        out = completion_body(server, "chat.completion", answer, len(tokenizer.encode(text)))
        return StreamingResponse(one_event_stream(out), media_type="text/event-stream") if body.stream else out

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest):
        check_text_request(server, body, "/v1/completions")
        server.check(1, None, body.prompt, body.block_length)
        answer = await server.answer(body.prompt, None, body.threshold, body.block_length)
        return completion_body(server, "text_completion", answer, len(tokenizer.encode(body.prompt)))

    @app.post("/v1/images/generations")
    async def generations(body: ImageRequest):
        check_model(body.model, server.name)
        return await server.draw(body.prompt, body.n, body.seed, body.size, body.steps, body.cfg_scale)

    @app.post("/v1/images/edits")
    async def edits(image: UploadFile = File(...), prompt: str = Form(...), n: int = Form(1),
                    size: str | None = Form(None), seed: int | None = Form(None), model: str | None = Form(None)):
        check_model(model, server.name)
        if seed is not None and not 0 <= seed < 2**64:
            raise APIError(422, "seed: must be between 0 and 2**64 - 1", "seed")
        try:
            source = open_image(await image.read(), limits.max_image_pixels)
        except ImageError as error:
            raise APIError(400, f"image: {error}", "image") from None
        if n < 1:
            raise APIError(422, "n: must be at least 1", "n")
        return await server.draw(prompt, n, seed, size, None, None, image=source)

    return app
