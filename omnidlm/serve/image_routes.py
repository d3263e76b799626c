"""/v1/images/generations and /v1/images/edits of the one app: drawings and edits are whole-call jobs
in the image worker (`jobs.JobRunner`), for every system that draws; other systems answer 400.

A drawing is bounded before it runs: `n` by `--max-n`, `steps` by `--max-image-steps`, the prompt
by `max_image_prompt_tokens` (its characters first, so a huge prompt is never tokenised), the
`size` by what the model draws.
"""

from __future__ import annotations

import time

from fastapi import FastAPI, File, Form, UploadFile

from .http import APIError, check_model
from .images import ImageError, encode_png, open_image
from .schemas import ImageRequest


def check_drawing(server, n: int, steps: int | None, prompt: str, size: str | None) -> None:
    """The server's bounds on a drawing: n, steps, prompt length, size."""
    limits, backend = server.limits, server.backend
    if "draw" not in backend.capabilities:
        raise APIError(400, f"model {server.name!r} has no image generator", "model")
    if n > limits.max_n:
        raise APIError(400, f"n ({n}) exceeds the server's limit of {limits.max_n}", "n")
    if steps is not None and steps > limits.max_image_steps:
        raise APIError(400, f"steps ({steps}) exceeds the server's limit of {limits.max_image_steps}", "steps")
    from .app import longest_token

    if len(prompt) > limits.max_image_prompt_tokens * longest_token(server.tokenizer):
        raise APIError(400, f"prompt ({len(prompt)} characters) exceeds the limit of "
                            f"{limits.max_image_prompt_tokens} tokens", "prompt")
    length = len(server.tokenizer.encode(prompt))
    if length > limits.max_image_prompt_tokens:
        raise APIError(400, f"prompt ({length} tokens) exceeds the limit of {limits.max_image_prompt_tokens} tokens",
                       "prompt")
    side = backend.draw_size()
    if size is not None and size != f"{side}x{side}":
        raise APIError(400, f"size {size!r} is not supported; this model draws {side}x{side}", "size")


def images_body(images) -> dict:
    return {"created": int(time.time()), "data": [{"b64_json": encode_png(im)} for im in images]}


def install_image_routes(app: FastAPI, server) -> None:
    backend = server.backend

    @app.post("/v1/images/generations")
    async def generations(body: ImageRequest):
        check_model(body.model, server.name)
        check_drawing(server, body.n, body.steps, body.prompt, body.size)
        return images_body(await server.run_job(backend.draw, body.prompt, body.n, body.seed or 0, body.steps,
                                                body.cfg_scale))

    @app.post("/v1/images/edits")
    async def edits(image: UploadFile = File(...), prompt: str = Form(...), n: int = Form(1),
                    size: str | None = Form(None), seed: int | None = Form(None), model: str | None = Form(None)):
        check_model(model, server.name)
        if "edit" not in backend.capabilities:
            raise APIError(400, f"model {server.name!r} has no image generator", "model")
        if n < 1:
            raise APIError(422, "n: must be at least 1", "n")
        if seed is not None and not 0 <= seed < 2**64:
            raise APIError(422, "seed: must be between 0 and 2**64 - 1", "seed")
        check_drawing(server, n, None, prompt, size)
        try:
            source = open_image(await image.read(), server.limits.max_image_pixels)
        except ImageError as error:
            raise APIError(400, f"image: {error}", "image") from None
        return images_body(await server.run_job(backend.edit, source, prompt, n, seed or 0))
